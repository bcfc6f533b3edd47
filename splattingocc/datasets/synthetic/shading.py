"""Appearance of the synthetic world: procedural textures, Lambert + Blinn-Phong shading, sky, haze,
camera exposure, vignetting and sensor noise; LiDAR intensities.

Colours come from per-instance albedos (world.py palettes overlap between classes) modulated by
material textures evaluated in each primitive's own frame (so textures move with objects), lit by
a per-scene sun. A network has to learn semantics from shape, texture and context.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import materials as M
from .raycast import Primitives, local_hit
from .sensors import GROUND, NOTHING, CastResult
from .world import CROSS_HW, LANE_W, ROAD_HW, Appearance, GroundMap


# ------------------------------------------------------------------ noise
# Tabulation hashing of lattice points: h(i, j, k) = T0[i] ^ T1[j] ^ T2[k] (3-independent), xor-ed
# with a per-surface seed. The tables are fixed constants of the generator (seeded once).
_TABLE_BITS = 10
_TABLES = np.random.default_rng(20240611).integers(0, 2 ** 24, (3, 2 ** _TABLE_BITS),
                                                   dtype=np.int64)


def _seed_bits(seed) -> np.ndarray:
    """Spread a seed (int or [N] ints) over 24 bits."""
    s = np.asarray(seed, np.int64)
    return (s * 0x9E3779B1 + (s >> 7) * 0x85EBCA77) & 0xFFFFFF


def value_noise(p: np.ndarray, seed) -> np.ndarray:  # p: [N, 3] -> [N]
    """Smooth 3D value noise in [0, 1] at points p [N, 3]; seed: int or [N] ints."""
    assert p.ndim == 2 and p.shape[1] == 3, p.shape
    i = np.floor(p)
    f = p - i
    f = f * f * (3.0 - 2.0 * f)  # smoothstep
    i = i.astype(np.int64)
    mask = 2 ** _TABLE_BITS - 1
    sb = _seed_bits(seed)
    # the seed shifts the lattice in the tables: different seeds read unrelated entries
    offs = [sb & mask, (sb >> 7) & mask, (sb >> 14) & mask]
    # per axis: table values of the lower and upper lattice coordinate
    h = [(_TABLES[a][(i[:, a] + offs[a]) & mask], _TABLES[a][(i[:, a] + offs[a] + 1) & mask])
         for a in range(3)]
    w = [(1.0 - f[:, a], f[:, a]) for a in range(3)]
    out = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            hxy = h[0][dx] ^ h[1][dy]
            wxy = w[0][dx] * w[1][dy]
            for dz in (0, 1):
                out += wxy * w[2][dz] * (hxy ^ h[2][dz])
    return out / float(2 ** 24)


def fbm(p: np.ndarray, seed, octaves: int = 2) -> np.ndarray:
    """Fractal sum of value noise, in [0, 1]."""
    total, amp, norm = np.zeros(len(p)), 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(p * (2.0 ** o), np.asarray(seed) + 1013 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def _frac(x):
    return x - np.floor(x)


# ------------------------------------------------------------------ ground markings
def road_paint(xy: np.ndarray,  # [N, 2]
               white_only: bool = False) -> np.ndarray:  # [N]
    """Whether ground points (scene frame xy [N, 2]) carry road paint -> [N] bool.

    With ``white_only``: only the markings that are always white (lane edges, stop lines, zebra
    crossings); the centre lines take the scene's line colour.
    """
    assert xy.ndim == 2 and xy.shape[1] == 2, xy.shape
    x, y = xy[:, 0], xy[:, 1]
    ax, ay = np.abs(x), np.abs(y)
    on_main = (ay < ROAD_HW) & (ax > CROSS_HW)
    centre = on_main & (ay < 0.08) & (_frac(x / 9.0) < 0.5)
    edge = on_main & (np.abs(ay - LANE_W) < 0.07)
    stop = (ax > CROSS_HW + 1.0) & (ax < CROSS_HW + 1.4) & (ay < LANE_W) & (x * y < 0)
    zebra = (ax > CROSS_HW + 1.8) & (ax < CROSS_HW + 4.6) & (ay < ROAD_HW) & (_frac(y / 1.1) < 0.5)
    on_cross = (ax < CROSS_HW) & (ay > ROAD_HW + 1.0)
    cross_centre = on_cross & (ax < 0.08) & (_frac(y / 9.0) < 0.5) & (y < 0)
    if white_only:
        return edge | stop | zebra
    return centre | edge | stop | zebra | cross_centre


# ------------------------------------------------------------------ surfaces
def _surface_albedo(mat, q, n_loc, half, color, color2, seed, app: Appearance, view_up):
    """Albedo [N, 3] and specular strength [N] of primitive hits (all arrays per hit)."""
    N = len(mat)
    alb = color.copy()
    spec = np.zeros(N)
    sel = lambda m: np.nonzero(mat == m)[0]  # noqa: E731

    i = sel(M.SIDEWALK)
    if len(i):
        top = n_loc[i, 2] > 0.5
        base = app.sidewalk * color[i]
        nz = 0.85 + 0.3 * fbm(q[i] * 2.5, seed[i])
        joint = (np.minimum(_frac(q[i, 0] / 1.5), _frac(q[i, 1] / 1.5)) < 0.04) & top
        a = base * nz[:, None]
        a[joint] *= 0.6
        a[~top] = app.sidewalk * 0.9  # curb face
        alb[i] = a
    i = sel(M.PAVERS)
    if len(i):
        row = np.floor(q[i, 0] / 0.25)
        brick = (_frac(q[i, 0] / 0.25) < 0.1) | (_frac(q[i, 1] / 0.5 + 0.5 * (row % 2)) < 0.06)
        a = app.pavers * (0.8 + 0.4 * value_noise(q[i] * 4.0, seed[i]))[:, None]
        a[brick] *= 0.65
        alb[i] = a
    i = sel(M.FACADE)
    if len(i):
        s = seed[i]
        spacing = 2.4 + (s % 97) / 97.0 * 1.6
        floor_h = 3.0 + ((s // 97) % 89) / 89.0 * 0.9
        side_x = np.abs(n_loc[i, 0]) > np.abs(n_loc[i, 1])
        u = np.where(side_x, q[i, 1], q[i, 0])
        v = q[i, 2] + half[i, 2]
        roof = n_loc[i, 2] > 0.5
        win = (_frac(u / spacing) > 0.22) & (_frac(u / spacing) < 0.78) & \
              (_frac(v / floor_h) > 0.3) & (_frac(v / floor_h) < 0.85) & (v > 1.0)
        shop = (v > 0.4) & (v < 2.6) & (_frac(u / (2 * spacing)) > 0.08) & \
               (_frac(u / (2 * spacing)) < 0.92) & ((s % 3) == 0)
        win = (win | shop) & ~roof
        wall = color[i] * (0.85 + 0.3 * fbm(q[i] * 1.3, s))[:, None]
        glass = color2[i] + 0.25 * app.sky_horizon * view_up[i, None]
        a = np.where(win[:, None], glass, wall)
        roof_tex = 0.8 + 0.4 * value_noise(q[i][roof] * 0.7, s[roof])
        a[roof] = np.array([0.28, 0.28, 0.3]) * roof_tex[:, None]
        alb[i] = a
        spec[i] = np.where(win, 0.6, 0.02)
    i = sel(M.CONCRETE)
    if len(i):
        alb[i] = color[i] * (0.8 + 0.35 * fbm(q[i] * 3.0, seed[i]))[:, None]
    i = sel(M.FOLIAGE)
    if len(i):
        m = fbm(q[i] * 1.1, seed[i])[:, None]
        clump = fbm(q[i] * 5.0, seed[i] + 7, octaves=2)[:, None]
        alb[i] = (color[i] * m + color2[i] * (1 - m)) * (0.45 + 0.9 * clump)
    i = sel(M.BARK)
    if len(i):
        ang = np.arctan2(q[i, 1], q[i, 0])
        streak = value_noise(np.stack([ang * 3.0, q[i, 2] * 1.5, 0 * ang], 1), seed[i])
        alb[i] = color[i] * (0.6 + 0.6 * streak)[:, None]
    i = sel(M.PAINT)
    if len(i):
        low = q[i, 2] < -half[i, 2] + 0.12
        dirt = 0.93 + 0.1 * value_noise(q[i] * 2.0, seed[i])
        a = color[i] * dirt[:, None]
        a[low] = a[low] * 0.45 + 0.03
        alb[i] = a
        spec[i] = 0.45
    i = sel(M.CABIN)
    if len(i):
        roof = n_loc[i, 2] > 0.7
        pillar = (np.abs(q[i, 0]) > 0.82 * half[i, 0]) & (np.abs(n_loc[i, 1]) > 0.5)
        low = q[i, 2] < -half[i, 2] + 0.08
        glass = color[i] + 0.3 * app.sky_horizon * view_up[i, None]
        paint = color2[i]
        a = np.where((roof | pillar | low)[:, None], paint, glass)
        alb[i] = a
        spec[i] = np.where(roof | pillar | low, 0.45, 0.9)
    i = sel(M.RUBBER)
    if len(i):
        alb[i] = color[i] * (0.7 + 0.6 * value_noise(q[i] * 6.0, seed[i]))[:, None]
    i = sel(M.CONTAINER)
    if len(i):
        long_side = np.abs(n_loc[i, 1]) > 0.5
        rib = _frac(q[i, 0] / 0.35) < 0.25
        a = color[i] * (0.88 + 0.15 * fbm(q[i] * 1.5, seed[i]))[:, None]
        a[long_side & rib] = color2[i][long_side & rib]
        alb[i] = a
        spec[i] = 0.15
    i = sel(M.STRIPES_Z)
    if len(i):
        band = np.abs(q[i, 2] / half[i, 2]) < 0.3
        alb[i] = np.where(band[:, None], color2[i], color[i])
        spec[i] = 0.2
    i = sel(M.STRIPES_Y)
    if len(i):
        band = _frac((q[i, 1] + q[i, 2]) / 0.45) < 0.5
        alb[i] = np.where(band[:, None], color2[i], color[i])
        spec[i] = 0.2
    i = sel(M.CLOTH)
    if len(i):
        alb[i] = color[i] * (0.8 + 0.35 * value_noise(q[i] * 9.0, seed[i]))[:, None]
    i = sel(M.SKIN)
    if len(i):
        hair = (q[i, 2] > 0.35 * half[i, 2]) | (q[i, 0] < -0.4 * half[i, 0])
        hair_col = np.array([0.08, 0.06, 0.05]) + 0.25 * (seed[i] % 3 == 0)[:, None] * np.array(
            [0.5, 0.35, 0.15])
        alb[i] = np.where(hair[:, None], hair_col, color[i])
    i = sel(M.METAL)
    if len(i):
        alb[i] = color[i] * (0.9 + 0.15 * value_noise(q[i] * 3.0, seed[i]))[:, None]
        spec[i] = 0.5
    i = sel(M.PLASTIC)
    if len(i):
        alb[i] = color[i] * (0.88 + 0.2 * value_noise(q[i] * 4.0, seed[i]))[:, None]
        spec[i] = 0.25
    i = sel(M.BUS)
    if len(i):
        side = n_loc[i, 2] < 0.5
        zr = q[i, 2] / half[i, 2]
        band = side & (zr > -0.1) & (zr < 0.75) & (np.abs(q[i, 0]) < half[i, 0] - 0.15)
        front = np.abs(n_loc[i, 0]) > 0.5
        band |= front & (zr > 0.0) & (zr < 0.85)
        glass = color2[i] + 0.3 * app.sky_horizon * view_up[i, None]
        paint = color[i] * (0.92 + 0.1 * value_noise(q[i], seed[i]))[:, None]
        a = np.where(band[:, None], glass, paint)
        roof = n_loc[i, 2] > 0.5
        a[roof] = np.array([0.8, 0.8, 0.78])
        alb[i] = a
        spec[i] = np.where(band, 0.8, 0.35)
    i = sel(M.SIGN)
    if len(i):
        face = np.abs(n_loc[i, 0]) > 0.5
        border = (np.abs(q[i, 1]) > 0.8 * half[i, 1]) | (np.abs(q[i, 2]) > 0.8 * half[i, 2])
        a = np.where(border[:, None], color2[i], color[i])
        a[~face] = np.array([0.5, 0.5, 0.52])
        alb[i] = a
        spec[i] = 0.3
    return alb, spec


def _ground_albedo(mat, xy, app: Appearance):
    """Albedo [N, 3] of ground hits from their material and scene-frame position xy [N, 2]."""
    N = len(mat)
    p3 = np.concatenate([xy, np.zeros((N, 1))], 1)
    alb = np.zeros((N, 3))
    seed = app.noise_seed
    i = np.nonzero(mat == M.ASPHALT)[0]
    if len(i):
        fine = 0.85 + 0.3 * value_noise(p3[i] * 3.0, seed)
        patch = 0.85 + 0.3 * value_noise(p3[i] * 0.12, seed + 1)
        a = app.asphalt * (fine * patch)[:, None]
        paint = road_paint(xy[i])
        white = road_paint(xy[i], white_only=True)
        a[paint] = app.line_paint * (0.85 + 0.15 * fine[paint])[:, None]
        a[white] = np.array([0.9, 0.9, 0.88]) * (0.85 + 0.15 * fine[white])[:, None]
        alb[i] = a
    i = np.nonzero(mat == M.GRASS)[0]
    if len(i):
        g = fbm(p3[i] * 1.5, seed + 2)
        soil = value_noise(p3[i] * 0.15, seed + 3)
        a = app.grass * (0.65 + 0.7 * g)[:, None]
        dirt = np.array([0.45, 0.38, 0.28]) * (0.8 + 0.4 * g)[:, None]
        w = np.clip((soil - 0.62) * 4.0, 0, 1)[:, None]
        alb[i] = a * (1 - w) + dirt * w
    i = np.nonzero(mat == M.PARKING)[0]
    if len(i):
        a = app.parking * (0.85 + 0.3 * value_noise(p3[i] * 2.5, seed + 4))[:, None]
        line = _frac(xy[i, 0] / 2.7) < 0.04
        a[line] = np.array([0.85, 0.85, 0.82])
        alb[i] = a
    return alb


def sky_color(dirs: np.ndarray,  # [N, 3]
              app: Appearance) -> np.ndarray:  # [N, 3]
    """Sky radiance [N, 3] for global unit directions [N, 3]."""
    up = np.clip(dirs[:, 2], 0.0, 1.0)
    col = app.sky_horizon + (app.sky_zenith - app.sky_horizon) * (up ** 0.6)[:, None]
    cosang = np.clip(dirs @ app.sun_dir, 0.0, 1.0)
    col = col + app.sun_color * (0.35 * cosang ** 32 + 3.0 * (cosang > 0.9996))[:, None]
    if app.cloudiness > 0.05:
        proj = dirs[:, :2] / (up[:, None] + 0.12)
        c = fbm(np.concatenate([proj * 1.5, np.zeros((len(dirs), 1))], 1), app.noise_seed + 9, 3)
        cover = np.clip((c - (1.0 - 0.6 * app.cloudiness)) * 3.0, 0, 1)[:, None]
        col = col * (1 - cover) + np.array([0.9, 0.9, 0.92]) * cover
    return col


def shade_camera(res: CastResult,
                 dirs: np.ndarray,  # [H, W, 3]
                 origin: np.ndarray,  # [3]
                 prims: Primitives,
                 ground: GroundMap, app: Appearance, rng: np.random.Generator) -> np.ndarray:
    """The camera image: uint8 [H, W, 3] RGB.

    Args:
        res: the camera's CastResult ([H, W] buffers).
        dirs: [H, W, 3] global unit ray directions.
        origin: [3] camera centre (global).
        prims: the primitives the cast used (global frame).
        ground: the scene's ground map.
        app: the scene's appearance.
        rng: generator for this image's exposure jitter and noise.
    """
    H, W = res.t.shape
    assert dirs.shape == (H, W, 3), dirs.shape
    d = dirs.reshape(-1, 3)
    t = res.t.ravel()
    idx = res.idx.ravel()
    out = np.zeros((H * W, 3))
    normal = np.zeros((H * W, 3))
    alb = np.zeros((H * W, 3))
    spec = np.zeros(H * W)

    hit = np.nonzero(idx >= 0)[0]
    if len(hit):
        p_idx = idx[hit]
        pts = origin + t[hit, None] * d[hit]
        q, n_loc, n = local_hit(prims, p_idx, pts, return_local_normal=True)
        reflected = d[hit] - 2 * np.einsum('ij,ij->i', d[hit], n)[:, None] * n
        view_up = np.clip(reflected[:, 2], 0, 1)  # mirror direction towards the sky
        a, s = _surface_albedo(prims.material[p_idx], q, n_loc, prims.half[p_idx],
                               prims.color[p_idx], prims.color2[p_idx], prims.texseed[p_idx], app,
                               view_up)
        alb[hit], spec[hit], normal[hit] = a, s, n
    gi = np.nonzero(idx == GROUND)[0]
    if len(gi):
        pts = origin + t[gi, None] * d[gi]
        _, mat, xy = ground.classify(pts[:, :2])
        alb[gi] = _ground_albedo(mat, xy, app)
        normal[gi] = (0.0, 0.0, 1.0)
        spec[gi] = 0.05
    lit = np.nonzero(idx != NOTHING)[0]
    if len(lit):
        n = normal[lit]
        ndl = np.clip(n @ app.sun_dir, 0.0, 1.0)
        hemi = 0.55 + 0.45 * n[:, 2]
        light = ndl[:, None] * app.sun_color + hemi[:, None] * app.ambient
        h = app.sun_dir - d[lit]
        h /= np.sqrt(np.einsum('ij,ij->i', h, h))[:, None]
        c = np.clip(np.einsum('ij,ij->i', n, h), 0, 1)
        c8 = c * c
        c8 *= c8
        c8 *= c8
        c32 = c8 * c8
        c32 *= c32
        sp = spec[lit] * (c32 * c8) * (ndl > 0)  # Blinn-Phong, exponent 40
        col = alb[lit] * light + sp[:, None] * app.sun_color
        haze = 1.0 - np.exp(-t[lit] / app.fog_distance)
        horizon = app.sky_horizon
        out[lit] = col * (1 - haze[:, None]) + horizon * haze[:, None]
    sky = np.nonzero(idx == NOTHING)[0]
    if len(sky):
        out[sky] = sky_color(d[sky], app)
    img = out.reshape(H, W, 3)
    # camera: exposure and white balance jitter, vignetting, sensor noise
    gain = app.exposure * rng.uniform(0.92, 1.08) * (1 + rng.uniform(-0.03, 0.03, 3))
    img = (img * (gain * _vignette(H, W))).astype(np.float32)
    img = img / (1.0 + 0.25 * img)  # soft shoulder
    img = img * np.float32(1.25 * 255.0) + rng.standard_normal(img.shape, np.float32) * np.float32(
        0.012 * 255.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _vignette(H: int, W: int) -> np.ndarray:
    """[H, W, 1] brightness fall-off towards the image corners."""
    yy, xx = np.mgrid[0:H, 0:W]
    r2 = ((xx + 0.5 - 0.5 * W) / (0.5 * W)) ** 2 + ((yy + 0.5 - 0.5 * H) / (0.5 * W)) ** 2
    return (1.0 - 0.18 * r2)[..., None]


def lidar_intensity(res: CastResult,
                    dirs: np.ndarray,  # [B, A, 3]
                    origin: np.ndarray,  # [3]
                    prims: Primitives,
                    ground: GroundMap, rng: np.random.Generator) -> np.ndarray:
    """Intensity 0..255 [B, A] of the LiDAR returns (0 where there is none)."""
    B, A = res.t.shape
    assert dirs.shape == (B, A, 3) and origin.shape == (3,), (dirs.shape, origin.shape)
    d = dirs.reshape(-1, 3)
    t = res.t.ravel()
    idx = res.idx.ravel()
    refl = np.zeros(B * A)
    cosi = np.zeros(B * A)
    hit = np.nonzero(idx >= 0)[0]
    if len(hit):
        pts = origin + t[hit, None] * d[hit]
        _, n = local_hit(prims, idx[hit], pts)
        refl[hit] = M.REFLECTIVITY[prims.material[idx[hit]]]
        cosi[hit] = np.abs(np.einsum('ij,ij->i', n, d[hit]))
    gi = np.nonzero(idx == GROUND)[0]
    if len(gi):
        pts = origin + t[gi, None] * d[gi]
        _, mat, xy = ground.classify(pts[:, :2])
        r = M.REFLECTIVITY[mat]
        r[(mat == M.ASPHALT) & road_paint(xy)] = 0.6
        refl[gi] = r
        cosi[gi] = np.abs(d[gi, 2])
    val = 255.0 * refl * (0.3 + 0.7 * cosi) * rng.uniform(0.85, 1.15, B * A)
    val[idx == NOTHING] = 0.0
    return np.clip(np.round(val), 0, 255).reshape(B, A)
