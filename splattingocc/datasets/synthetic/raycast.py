"""Analytic primitives and exact, vectorised ray-primitive intersection (numpy, float64).

A primitive is a unit shape scaled by its half extents ``half`` and placed by a rotation ``rot``
(local -> world) and a centre:

* BOX:       |q_x|, |q_y|, |q_z| <= 1
* CYLINDER:  q_x^2 + q_y^2 <= 1 and |q_z| <= 1 (axis = local z; elliptic when half_x != half_y)
* ELLIPSOID: |q|^2 <= 1

with q = (R^T (p - centre)) / half. Scaling the ray by the same affine map keeps the ray parameter
t unchanged, so every shape reduces to one interval [t_near, t_far] on the unit shape. Only entering
hits count (t_near > t_min): a ray that starts inside a primitive does not see it (back faces are
culled), which is what a camera or LiDAR outside every solid needs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
T_MIN = 1e-6


@dataclass
class Primitives:
    """P primitives with their semantics and appearance (arrays indexed by primitive).

    Attributes:
        kind:     [P] int8, BOX / CYLINDER / ELLIPSOID.
        center:   [P, 3] centre in the frame of the set (global, or an ego frame), metres.
        rot:      [P, 3, 3] local -> frame rotation.
        half:     [P, 3] half extents (box) / radii and half height (cylinder) / semi-axes.
        fine:     [P] int64 nuScenes-lidarseg fine class index (category.json ``index``).
        material: [P] int64 material id (see shading.py).
        color:    [P, 3] float base albedo in 0..1.
        color2:   [P, 3] float second colour of the material (stripes, windows, ...).
        instance: [P] int64 annotated object index, -1 for stuff (buildings, trees, ...).
        texseed:  [P] int64 per-primitive texture seed.
    """

    kind: np.ndarray
    center: np.ndarray
    rot: np.ndarray
    half: np.ndarray
    fine: np.ndarray
    material: np.ndarray
    color: np.ndarray
    color2: np.ndarray
    instance: np.ndarray
    texseed: np.ndarray

    def __post_init__(self):
        P = len(self.kind)
        assert self.center.shape == (P, 3), self.center.shape
        assert self.rot.shape == (P, 3, 3), self.rot.shape
        assert self.half.shape == (P, 3), self.half.shape
        for name in ('fine', 'material', 'instance', 'texseed'):
            assert getattr(self, name).shape == (P,), (name, getattr(self, name).shape)
        assert self.color.shape == (P, 3) and self.color2.shape == (P, 3)

    def __len__(self) -> int:
        return len(self.kind)

    def subset(self, idx) -> 'Primitives':
        return Primitives(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def transformed(self, T: np.ndarray) -> 'Primitives':
        """The primitives in another frame: T [4, 4] maps this frame to the new one."""
        assert T.shape == (4, 4), T.shape
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out['center'] = self.center @ T[:3, :3].T + T[:3, 3]
        out['rot'] = np.einsum('ij,pjk->pik', T[:3, :3], self.rot)
        return Primitives(**out)

    def corners(self) -> np.ndarray:
        """[P, 8, 3] corners of each primitive's oriented bounding box (exact for boxes)."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
                         float)
        local = signs[None] * self.half[:, None, :]  # [P, 8, 3]
        return np.einsum('pij,pkj->pki', self.rot, local) + self.center[:, None, :]

    @staticmethod
    def concatenate(parts) -> 'Primitives':
        parts = [p for p in parts if p is not None and len(p) > 0]
        if not parts:
            return empty_primitives()
        return Primitives(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                             for f in fields(Primitives)})


def empty_primitives() -> Primitives:
    z = np.zeros((0,), np.int64)
    return Primitives(kind=np.zeros((0,), np.int8), center=np.zeros((0, 3)),
                      rot=np.zeros((0, 3, 3)),
                      half=np.zeros((0, 3)), fine=z, material=z, color=np.zeros((0, 3)),
                      color2=np.zeros((0, 3)), instance=z, texseed=z)


def unit_interval(kind: int,
                  o: np.ndarray,  # [N, 3] or [3]
                  d: np.ndarray):  # [N, 3]
    """Entry/exit parameters of rays against one unit shape.

    Args:
        kind: BOX, CYLINDER or ELLIPSOID.
        o: [N, 3] or [3] ray origins in the shape's scaled local frame.
        d: [N, 3] ray directions in the same frame (not unit length).

    Returns:
        (t_near, t_far): [N] each; the ray misses where t_near > t_far (both may be +-inf).
    """
    assert d.ndim == 2 and d.shape[1] == 3 and o.shape in ((3,), d.shape), (o.shape, d.shape)
    o = np.broadcast_to(o, d.shape)
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        if kind == BOX:
            inv = 1.0 / d
            t1 = (-1.0 - o) * inv
            t2 = (1.0 - o) * inv
            # fmin/fmax ignore the NaN of 0 * inf (a ray in a face plane, parallel to it)
            t_near = np.fmax.reduce(np.fmin(t1, t2), axis=-1)
            t_far = np.fmin.reduce(np.fmax(t1, t2), axis=-1)
            return t_near, t_far
        if kind == ELLIPSOID:
            a = np.einsum('ij,ij->i', d, d)
            b = np.einsum('ij,ij->i', o, d)
            c = np.einsum('ij,ij->i', o, o) - 1.0
            disc = b * b - a * c
            s = np.sqrt(np.maximum(disc, 0.0))
            t_near = np.where(disc >= 0, (-b - s) / a, np.inf)
            t_far = np.where(disc >= 0, (-b + s) / a, -np.inf)
            return t_near, t_far
        if kind == CYLINDER:
            a = d[:, 0] ** 2 + d[:, 1] ** 2
            b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
            c = o[:, 0] ** 2 + o[:, 1] ** 2 - 1.0
            disc = b * b - a * c
            s = np.sqrt(np.maximum(disc, 0.0))
            parallel = a < 1e-300
            side_in = np.where(parallel, np.where(c <= 0, -np.inf, np.inf), (-b - s) / a)
            side_out = np.where(parallel, np.where(c <= 0, np.inf, -np.inf), (-b + s) / a)
            side_in = np.where(parallel | (disc >= 0), side_in, np.inf)
            side_out = np.where(parallel | (disc >= 0), side_out, -np.inf)
            inv = 1.0 / d[:, 2]
            z1 = (-1.0 - o[:, 2]) * inv
            z2 = (1.0 - o[:, 2]) * inv
            z_in = np.fmin(z1, z2)
            z_out = np.fmax(z1, z2)
            return np.fmax(side_in, z_in), np.fmin(side_out, z_out)
    raise ValueError(f'unknown primitive kind {kind}')


def to_local(prims: Primitives, i: int, origins: np.ndarray, dirs: np.ndarray):
    """Rays into primitive i's scaled local frame. origins [N, 3] or [3], dirs [N, 3]."""
    R = prims.rot[i]
    inv_half = 1.0 / prims.half[i]
    o = ((origins - prims.center[i]) @ R) * inv_half
    d = (dirs @ R) * inv_half
    return o, d


def intersect_one(prims: Primitives, i: int,
                  origins: np.ndarray,  # [N, 3] or [3]
                  dirs: np.ndarray,  # [N, 3]
                  t_min: float = T_MIN) -> np.ndarray:  # [N]
    """Distance along each ray to primitive i (entering hits only); +inf where it misses.

    Args:
        prims: the primitive set.
        i: index of the primitive.
        origins: [N, 3] or [3] ray origins in the frame of ``prims``.
        dirs: [N, 3] ray directions (unit length: then t is a distance in metres).

    Returns:
        t: [N] float64.
    """
    assert dirs.ndim == 2 and dirs.shape[1] == 3, dirs.shape
    o, d = to_local(prims, i, origins, dirs)
    t_near, t_far = unit_interval(int(prims.kind[i]), o, d)
    hit = (t_near <= t_far) & (t_near > t_min)
    return np.where(hit, t_near, np.inf)


def intersect_all(prims: Primitives,
                  origins: np.ndarray,  # [N, 3] or [3]
                  dirs: np.ndarray,  # [N, 3]
                  t_min: float = T_MIN):
    """Nearest hit of every ray against every primitive, brute force (no culling).

    Args:
        prims: P primitives.
        origins: [N, 3] or [3] ray origins.
        dirs: [N, 3] unit ray directions.

    Returns:
        (t, idx): [N] nearest distance (+inf: no hit) and primitive index (-1: no hit).
    """
    N = dirs.shape[0]
    best = np.full(N, np.inf)
    idx = np.full(N, -1, np.int64)
    for i in range(len(prims)):
        t = intersect_one(prims, i, origins, dirs, t_min)
        closer = t < best
        best = np.where(closer, t, best)
        idx = np.where(closer, i, idx)
    return best, idx


def ground_intersect(origins: np.ndarray,  # [N, 3] or [3]
                     dirs: np.ndarray,  # [N, 3]
                     height: float = 0.0, t_min: float = T_MIN) -> np.ndarray:  # [N]
    """Distance to the ground plane z = height from above (+inf where the ray does not reach it).

    origins [N, 3] or [3], dirs [N, 3] -> [N].
    """
    assert dirs.ndim == 2 and dirs.shape[1] == 3, dirs.shape
    o = np.broadcast_to(origins, dirs.shape)
    with np.errstate(divide='ignore', invalid='ignore'):
        t = (height - o[:, 2]) / dirs[:, 2]
    ok = (dirs[:, 2] < 0) & (o[:, 2] > height) & (t > t_min)
    return np.where(ok, t, np.inf)


def local_hit(prims: Primitives,
              idx: np.ndarray,  # [N]
              points: np.ndarray,  # [N, 3]
              return_local_normal: bool = False):
    """Local coordinates and normals of hit points on their primitives.

    Args:
        prims: the primitive set.
        idx: [N] primitive index of each point (all >= 0).
        points: [N, 3] hit points on the primitives' surfaces.
        return_local_normal: also return the unit normal in the primitive's frame.

    Returns:
        q_metric [N, 3]: point in the primitive's local frame (metres, unscaled);
        (n_local [N, 3]: unit outward normal in the primitive's frame, if asked);
        normal [N, 3]: unit outward normal in the frame of ``prims``.
    """
    assert points.shape == (len(idx), 3), (points.shape, len(idx))
    R = prims.rot[idx]  # [N, 3, 3]
    half = prims.half[idx]
    q_metric = np.einsum('nji,nj->ni', R, points - prims.center[idx])
    q = q_metric / half
    kind = prims.kind[idx]
    n_local = np.zeros_like(q)
    # box: the face whose coordinate is closest to +-1
    is_box = kind == BOX
    if is_box.any():
        qb = q[is_box]
        ax = np.argmax(np.abs(qb), axis=1)
        nb = np.zeros_like(qb)
        nb[np.arange(len(qb)), ax] = np.sign(qb[np.arange(len(qb)), ax])
        n_local[is_box] = nb
    is_cyl = kind == CYLINDER
    if is_cyl.any():
        qc = q[is_cyl]
        radial = np.sqrt(qc[:, 0] ** 2 + qc[:, 1] ** 2)
        cap = np.abs(np.abs(qc[:, 2]) - 1.0) < np.abs(radial - 1.0)
        nc = np.where(cap[:, None], np.stack([0 * qc[:, 2], 0 * qc[:, 2], np.sign(qc[:, 2])], 1),
                      np.stack([qc[:, 0], qc[:, 1], 0 * qc[:, 2]], 1))
        n_local[is_cyl] = nc
    is_ell = kind == ELLIPSOID
    if is_ell.any():
        n_local[is_ell] = q[is_ell]
    # normals transform with the inverse transpose of R diag(half): R diag(1 / half)
    n_loc = n_local / half
    n_loc /= np.maximum(np.linalg.norm(n_loc, axis=1, keepdims=True), 1e-12)
    n = np.einsum('nij,nj->ni', R, n_loc)
    if return_local_normal:
        return q_metric, n_loc, n
    return q_metric, n


def inside_unit(kind: int, q: np.ndarray) -> np.ndarray:  # q: [..., 3] -> [...]
    """Whether points q [..., 3] (scaled local frame) lie inside the unit shape -> [...] bool."""
    if kind == BOX:
        return np.all(np.abs(q) <= 1.0, axis=-1)
    if kind == CYLINDER:
        return (q[..., 0] ** 2 + q[..., 1] ** 2 <= 1.0) & (np.abs(q[..., 2]) <= 1.0)
    if kind == ELLIPSOID:
        return np.einsum('...i,...i->...', q, q) <= 1.0
    raise ValueError(f'unknown primitive kind {kind}')


def surface_distance(prims: Primitives,
                     idx: np.ndarray,  # [N]
                     points: np.ndarray) -> np.ndarray:  # [N, 3] -> [N]
    """How far points [N, 3] are from the surface of primitive idx [N], in unit-shape coordinates.

    0 on the surface; used by tests to check LiDAR points. Returns [N].
    """
    assert points.shape == (len(idx), 3), (points.shape, len(idx))
    R = prims.rot[idx]
    q = np.einsum('nji,nj->ni', R, points - prims.center[idx]) / prims.half[idx]
    kind = prims.kind[idx]
    out = np.empty(len(idx))
    b = kind == BOX
    out[b] = np.abs(np.max(np.abs(q[b]), axis=1) - 1.0)
    e = kind == ELLIPSOID
    out[e] = np.abs(np.linalg.norm(q[e], axis=1) - 1.0)
    c = kind == CYLINDER
    if c.any():
        qc = q[c]
        r = np.sqrt(qc[:, 0] ** 2 + qc[:, 1] ** 2)
        # on the side (r = 1, |z| <= 1) or on a cap (|z| = 1, r <= 1)
        side = np.abs(r - 1.0) + np.maximum(np.abs(qc[:, 2]) - 1.0, 0.0)
        cap = np.abs(np.abs(qc[:, 2]) - 1.0) + np.maximum(r - 1.0, 0.0)
        out[c] = np.minimum(side, cap)
    return out
