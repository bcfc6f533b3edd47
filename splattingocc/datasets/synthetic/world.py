"""The procedural world of one synthetic scene: road layout, static stuff, moving objects, ego path.

Every scene has a local frame S (x along the main road, y to its left, z up, ground at z = 0) placed
in the global frame by a random yaw and offset. Layout in S:

* main road along x: two driving lanes (3.5 m; right-hand traffic, the ego drives +x in the lane
  y = -1.75) and two parking lanes (2.5 m), raised sidewalks (0.15 m) on both sides, a grass verge
  with trees and bushes, then rows of buildings, a parking lot (flat.other) with parked cars;
* a crossing road along y at x = 0 with sidewalks, a raised median (flat.other) on its north arm and
  stopped traffic at its approaches;
* annotated objects of every class near the ego path: parked and moving cars, trucks, a trailer, a
  bus, a construction zone (construction vehicle, barriers, traffic cones), motorcycles, a bicycle
  rack (static_object.bicycle_rack -> Occ3D 'others') with bicycles, bins, pedestrians;
* the ego drives straight through the crossing or turns right into it at 4..10 m/s.

Geometry is analytic (raycast.py). Objects move at constant velocity along their heading; all
positions are functions of time, so every sensor samples the world at its own timestamp.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from . import materials as M
from .categories import FINE_INDEX
from .geometry import make_transform, yaw_matrix
from .raycast import BOX, CYLINDER, ELLIPSOID, Primitives, empty_primitives

LANE_W = 3.5
PARK_W = 2.5
ROAD_HW = LANE_W + PARK_W  # main road half width
CROSS_LANE = 2.4  # crossing road: lane centre offset from its axis (median half width 0.6)
CROSS_HW = 5.5  # crossing road half width
EGO_LANE_Y = -LANE_W / 2
CURB = 0.15  # sidewalk height
STATIC_EXTENT = 170.0  # static scenery along each road, metres from the crossing
ROAD_EXTENT = 1000.0  # roads run this far (beyond it: terrain)
MAP_SIZE = 400.0  # metres covered by each log's map png (0.1 m / px)

# (r, g, b) palettes in 0..1; classes share colours on purpose
PAINT = [(0.85, 0.85, 0.84), (0.06, 0.06, 0.07), (0.62, 0.63, 0.65), (0.35, 0.36, 0.38),
         (0.55, 0.07, 0.06), (0.10, 0.17, 0.42), (0.06, 0.10, 0.22), (0.16, 0.30, 0.20),
         (0.70, 0.64, 0.50), (0.85, 0.68, 0.10), (0.45, 0.25, 0.12)]
FACADES = [(0.55, 0.30, 0.22), (0.75, 0.68, 0.55), (0.50, 0.50, 0.52), (0.82, 0.80, 0.77),
           (0.30, 0.30, 0.32), (0.32, 0.40, 0.48), (0.62, 0.52, 0.40), (0.70, 0.72, 0.70)]
CLOTHES = [(0.08, 0.08, 0.10), (0.20, 0.22, 0.35), (0.45, 0.10, 0.10), (0.75, 0.75, 0.72),
           (0.30, 0.28, 0.22), (0.15, 0.30, 0.50), (0.60, 0.50, 0.35), (0.12, 0.35, 0.15),
           (0.85, 0.55, 0.15)]
SKIN = [(0.85, 0.66, 0.52), (0.62, 0.45, 0.32), (0.40, 0.28, 0.20), (0.92, 0.76, 0.64)]
PLASTICS = [(0.12, 0.35, 0.16), (0.35, 0.36, 0.38), (0.12, 0.20, 0.45), (0.06, 0.06, 0.07),
            (0.60, 0.45, 0.15)]
FOLIAGE = [(0.16, 0.36, 0.12), (0.22, 0.42, 0.16), (0.12, 0.28, 0.10), (0.30, 0.40, 0.14),
           (0.42, 0.38, 0.12)]


@dataclass
class SceneObject:
    """An annotated object: a box of size (w, l, h) moving at constant speed along its heading.

    ``parts`` are in the object frame: origin at the box centre, x forward, y left, z up.
    """

    category: str
    size: tuple  # (w, l, h) as nuScenes stores it
    xy0: np.ndarray  # [2] box centre in the scene frame at t = 0
    yaw: float  # heading in the scene frame
    speed: float  # m/s along the heading
    attribute: Optional[str]
    parts: Primitives


@dataclass
class Appearance:
    """Lighting and colour parameters of one scene (see shading.py)."""

    sun_dir: np.ndarray  # [3] unit, global frame, pointing to the sun
    sun_color: np.ndarray  # [3]
    ambient: np.ndarray  # [3] sky light
    sky_zenith: np.ndarray  # [3]
    sky_horizon: np.ndarray  # [3]
    cloudiness: float
    exposure: float
    fog_distance: float
    asphalt: np.ndarray  # [3]
    grass: np.ndarray  # [3]
    sidewalk: np.ndarray  # [3]
    parking: np.ndarray  # [3]
    pavers: np.ndarray  # [3]
    line_paint: np.ndarray  # [3]
    noise_seed: int


@dataclass
class GroundMap:
    """Ground classes of the plane z = 0: axis-aligned rectangles in the scene frame, last wins."""

    scene2global: np.ndarray  # [4, 4]
    rects: np.ndarray  # [R, 4] (x_min, y_min, x_max, y_max) in the scene frame
    fine: np.ndarray  # [R] fine class index
    material: np.ndarray  # [R]
    default_fine: int
    default_material: int

    def to_scene(self, xy_global: np.ndarray) -> np.ndarray:
        """Global xy [N, 2] -> scene xy [N, 2]."""
        R = self.scene2global[:2, :2]
        return (xy_global - self.scene2global[:2, 3]) @ R

    def classify(self, xy_global: np.ndarray):
        """(fine [N], material [N], scene xy [N, 2]) of ground points at global xy [N, 2]."""
        assert xy_global.ndim == 2 and xy_global.shape[1] == 2, xy_global.shape
        xy = self.to_scene(xy_global)
        fine = np.full(len(xy), self.default_fine, np.int64)
        mat = np.full(len(xy), self.default_material, np.int64)
        for r in range(len(self.rects)):
            x0, y0, x1, y1 = self.rects[r]
            m = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
            fine[m] = self.fine[r]
            mat[m] = self.material[r]
        return fine, mat, xy


@dataclass
class Scene:
    """One scene: static primitives (global frame), objects, ego path and appearance."""

    index: int
    name: str
    scene2global: np.ndarray  # [4, 4]
    static: Primitives  # global frame
    ground: GroundMap
    objects: List[SceneObject]
    appearance: Appearance
    ego_speed: float
    ego_mode: str  # 'straight' or 'turn'
    ego_s0: float  # path parameter at t = 0
    turn_radius: float
    turn_x0: float
    duration: float
    _parts: Primitives = field(default=None, repr=False)  # all object parts, object frames
    _part_obj: np.ndarray = field(default=None, repr=False)  # [P] object index of each part

    def __post_init__(self):
        parts, owner = [], []
        for i, obj in enumerate(self.objects):
            p = obj.parts
            p.instance[:] = i
            parts.append(p)
            owner.append(np.full(len(p), i, np.int64))
        self._parts = Primitives.concatenate(parts)
        self._part_obj = np.concatenate(owner) if owner else np.zeros((0,), np.int64)

    # ----- ego -----
    def ego_pose(self, t: float):
        """Ego pose at time t (s since the scene start): (translation [3], yaw), global frame."""
        x, y, yaw = ego_path(self.ego_mode, self.ego_s0 + self.ego_speed * t, self.turn_radius,
                             self.turn_x0)
        p = self.scene2global[:3, :3] @ np.array([x, y, 0.0]) + self.scene2global[:3, 3]
        scene_yaw = np.arctan2(self.scene2global[1, 0], self.scene2global[0, 0])
        g_yaw = float(np.arctan2(np.sin(yaw + scene_yaw), np.cos(yaw + scene_yaw)))
        return p, g_yaw

    # ----- objects -----
    def object_poses(self, t: float):
        """Global box centres [O, 3] and yaws [O] of all objects at time t."""
        if not self.objects:
            return np.zeros((0, 3)), np.zeros((0,))
        xy0 = np.array([o.xy0 for o in self.objects])
        yaw = np.array([o.yaw for o in self.objects])
        speed = np.array([o.speed for o in self.objects])
        h = np.array([o.size[2] for o in self.objects])
        xy = xy0 + (speed * t)[:, None] * np.stack([np.cos(yaw), np.sin(yaw)], 1)
        local = np.concatenate([xy, 0.5 * h[:, None]], 1)
        centres = local @ self.scene2global[:3, :3].T + self.scene2global[:3, 3]
        scene_yaw = np.arctan2(self.scene2global[1, 0], self.scene2global[0, 0])
        g_yaw = np.arctan2(np.sin(yaw + scene_yaw), np.cos(yaw + scene_yaw))
        return centres, g_yaw

    def primitives_at(self, t: float) -> Primitives:
        """All primitives (static + objects at time t) in the global frame."""
        if len(self._parts) == 0:
            return self.static
        centres, yaws = self.object_poses(t)
        Ro = yaw_matrix(yaws)[self._part_obj]  # [P, 3, 3]
        parts = self._parts
        moved = Primitives(
            kind=parts.kind,
            center=np.einsum('pij,pj->pi', Ro, parts.center) + centres[self._part_obj],
            rot=np.einsum('pij,pjk->pik', Ro, parts.rot), half=parts.half, fine=parts.fine,
            material=parts.material, color=parts.color, color2=parts.color2,
            instance=parts.instance, texseed=parts.texseed)
        return Primitives.concatenate([self.static, moved])


def ego_path(mode: str, s: float, turn_radius: float, turn_x0: float):
    """(x, y, yaw) of the ego in the scene frame at path length s.

    'straight': along the lane y = EGO_LANE_Y, x = turn_x0 + s. 'turn': the same lane up to
    x = turn_x0 (s = 0), a right-hand quarter circle of ``turn_radius``, then south (-y) in the
    crossing road's lane.
    """
    if mode == 'straight' or s < 0:
        return turn_x0 + s, EGO_LANE_Y, 0.0
    R = turn_radius
    arc = 0.5 * np.pi * R
    if s <= arc:
        phi = s / R
        return turn_x0 + R * np.sin(phi), EGO_LANE_Y - R + R * np.cos(phi), -phi
    return turn_x0 + R, EGO_LANE_Y - R - (s - arc), -0.5 * np.pi


class _Builder:
    """Collects primitives (yaw-only rotations) and packs them into a Primitives set."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows = []

    def add(self, kind, center, half, yaw, category, material, color, color2=None):
        color = np.clip(np.asarray(color, float), 0, 1)
        color2 = color if color2 is None else np.clip(np.asarray(color2, float), 0, 1)
        self.rows.append((kind, np.asarray(center, float), np.asarray(half, float), float(yaw),
                          FINE_INDEX[category], material, color, color2,
                          int(self.rng.integers(0, 2 ** 31 - 1))))

    def box(self, center, size, yaw, category, material, color, color2=None):
        """A box given its full size (length x, width y, height z)."""
        self.add(BOX, center, 0.5 * np.asarray(size, float), yaw, category, material, color, color2)

    def build(self) -> Primitives:
        if not self.rows:
            return empty_primitives()
        cols = list(zip(*self.rows))
        yaw = np.array(cols[3])
        return Primitives(kind=np.array(cols[0], np.int8), center=np.stack(cols[1]),
                          rot=yaw_matrix(yaw), half=np.stack(cols[2]),
                          fine=np.array(cols[4], np.int64), material=np.array(cols[5], np.int64),
                          color=np.stack(cols[6]), color2=np.stack(cols[7]),
                          instance=np.full(len(yaw), -1, np.int64),
                          texseed=np.array(cols[8], np.int64))


def _subtract(ranges, cut):
    """Intervals ``ranges`` minus the interval ``cut``; pieces shorter than 6 m are dropped."""
    out = []
    for a, b in ranges:
        for lo, hi in ((a, min(b, cut[0])), (max(a, cut[1]), b)):
            if hi - lo > 6.0:
                out.append((lo, hi))
    return out


def _jitter(rng, color, amount=0.05):
    return np.clip(np.asarray(color) + rng.uniform(-amount, amount, 3), 0, 1)


def _pick(rng, palette):
    return np.asarray(palette[int(rng.integers(len(palette)))], float)


# ------------------------------------------------------------------ object models (object frame)
def make_car(rng) -> tuple:
    kind = rng.uniform()
    if kind < 0.7:  # sedan / hatchback
        l, w, h = rng.uniform(3.9, 4.9), rng.uniform(1.75, 1.95), rng.uniform(1.42, 1.62)
    else:  # SUV / van
        l, w, h = rng.uniform(4.4, 5.1), rng.uniform(1.85, 2.05), rng.uniform(1.7, 2.05)
    color = _jitter(rng, _pick(rng, PAINT), 0.04)
    b = _Builder(rng)
    clear = 0.18
    body_h = 0.48 * (h - clear)
    zb = -0.5 * h + clear + 0.5 * body_h
    b.box((0, 0, zb), (l, w, body_h), 0, 'vehicle.car', M.PAINT, color)
    cab_l = l * rng.uniform(0.5, 0.62)
    cab_h = h - clear - body_h
    b.box((-l * rng.uniform(0.02, 0.1), 0, zb + 0.5 * body_h + 0.5 * cab_h),
          (cab_l, 0.9 * w, cab_h), 0, 'vehicle.car', M.CABIN, (0.08, 0.10, 0.13), color)
    r = 0.31 + 0.02 * (h - 1.4)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.add(ELLIPSOID, (sx * (0.5 * l - 0.85), sy * (0.5 * w - 0.11), -0.5 * h + r),
                  (r, 0.11, r), 0, 'vehicle.car', M.RUBBER, (0.05, 0.05, 0.05))
    return (w, l, h), b.build()


def make_truck(rng) -> tuple:
    l, w, h = rng.uniform(6.5, 9.0), rng.uniform(2.3, 2.55), rng.uniform(2.9, 3.6)
    b = _Builder(rng)
    cab_l = 2.2
    cab = _jitter(rng, _pick(rng, PAINT + [(0.75, 0.15, 0.1), (0.9, 0.9, 0.9)]))
    cargo = _jitter(rng, _pick(rng, [(0.85, 0.85, 0.84), (0.62, 0.63, 0.65), (0.7, 0.64, 0.5),
                                     (0.2, 0.3, 0.5)]))
    b.box((0.5 * l - 0.5 * cab_l, 0, -0.5 * h + 0.35 + 0.5 * (h * 0.8 - 0.35)),
          (cab_l, w, h * 0.8 - 0.35), 0, 'vehicle.truck', M.CABIN, (0.1, 0.12, 0.15), cab)
    b.box((-0.5 * cab_l - 0.1 + 0.0, 0, -0.5 * h + 0.9 + 0.5 * (h - 0.9)),
          (l - cab_l - 0.2, w, h - 0.9), 0, 'vehicle.truck', M.CONTAINER, cargo, cargo * 0.8)
    b.box((0, 0, -0.5 * h + 0.6), (l * 0.95, w * 0.8, 0.35), 0, 'vehicle.truck', M.METAL,
          (0.15, 0.15, 0.15))
    for x in (0.5 * l - 1.2, -0.5 * l + 1.5):
        for sy in (-1, 1):
            b.add(ELLIPSOID, (x, sy * (0.5 * w - 0.2), -0.5 * h + 0.5), (0.5, 0.2, 0.5), 0,
                  'vehicle.truck', M.RUBBER, (0.05, 0.05, 0.05))
    return (w, l, h), b.build()


def make_bus(rng) -> tuple:
    l, w, h = rng.uniform(10.5, 12.5), rng.uniform(2.5, 2.6), rng.uniform(3.0, 3.4)
    b = _Builder(rng)
    livery = _jitter(rng, _pick(rng, [(0.75, 0.12, 0.1), (0.1, 0.25, 0.6), (0.15, 0.45, 0.2),
                                      (0.85, 0.85, 0.84), (0.9, 0.7, 0.1)]))
    b.box((0, 0, 0.15), (l, w, h - 0.3), 0, 'vehicle.bus.rigid', M.BUS, livery,
          (0.08, 0.1, 0.13))
    for x in (0.5 * l - 2.3, -0.5 * l + 2.8):
        for sy in (-1, 1):
            b.add(ELLIPSOID, (x, sy * (0.5 * w - 0.2), -0.5 * h + 0.5), (0.5, 0.18, 0.5), 0,
                  'vehicle.bus.rigid', M.RUBBER, (0.05, 0.05, 0.05))
    return (w, l, h), b.build()


def make_trailer(rng) -> tuple:
    l, w, h = rng.uniform(9.0, 12.0), rng.uniform(2.45, 2.6), rng.uniform(3.6, 4.0)
    b = _Builder(rng)
    col = _jitter(rng, _pick(rng, [(0.85, 0.85, 0.84), (0.62, 0.63, 0.65), (0.2, 0.3, 0.5),
                                   (0.55, 0.1, 0.08), (0.35, 0.36, 0.38)]))
    box_h = h - 1.25
    b.box((0, 0, 0.5 * h - 0.5 * box_h), (l, w, box_h), 0, 'vehicle.trailer', M.CONTAINER, col,
          col * 0.75)
    b.box((-0.1 * l, 0, -0.5 * h + 0.9), (0.8 * l, 0.9 * w, 0.25), 0, 'vehicle.trailer', M.METAL,
          (0.12, 0.12, 0.12))
    b.box((0.35 * l, 0, -0.5 * h + 0.55), (0.2, 0.3, 1.1), 0, 'vehicle.trailer', M.METAL,
          (0.2, 0.2, 0.2))  # landing gear
    for x in (-0.5 * l + 1.0, -0.5 * l + 2.3):
        for sy in (-1, 1):
            b.add(ELLIPSOID, (x, sy * (0.5 * w - 0.25), -0.5 * h + 0.5), (0.5, 0.22, 0.5), 0,
                  'vehicle.trailer', M.RUBBER, (0.05, 0.05, 0.05))
    return (w, l, h), b.build()


def make_construction(rng) -> tuple:
    l, w, h = rng.uniform(5.5, 7.0), rng.uniform(2.3, 2.8), rng.uniform(3.0, 3.6)
    b = _Builder(rng)
    col = _jitter(rng, _pick(rng, [(0.85, 0.65, 0.1), (0.9, 0.45, 0.1), (0.85, 0.8, 0.2)]))
    cat = 'vehicle.construction'
    b.box((-0.1 * l, 0, -0.5 * h + 0.45), (0.7 * l, w, 0.9), 0, cat, M.RUBBER,
          (0.08, 0.08, 0.08))  # tracks
    b.box((-0.15 * l, 0, -0.5 * h + 0.9 + 0.6), (0.5 * l, 0.95 * w, 1.2), 0, cat, M.PAINT, col)
    b.box((-0.05 * l, 0.25 * w, -0.5 * h + 2.1 + 0.5 * (h - 2.1)), (1.3, 0.45 * w, h - 2.1), 0,
          cat, M.CABIN, (0.08, 0.1, 0.12), col)
    b.box((0.3 * l, -0.15 * w, -0.5 * h + 1.9), (0.4 * l, 0.35, 0.35), 0, cat, M.PAINT, col)  # boom
    b.box((0.5 * l - 0.3, -0.15 * w, -0.5 * h + 1.1), (0.35, 0.3, 1.6), 0, cat, M.PAINT, col)  # arm
    b.box((0.5 * l - 0.35, -0.15 * w, -0.5 * h + 0.3), (0.6, 0.9, 0.5), 0, cat, M.METAL,
          (0.2, 0.2, 0.2))  # bucket
    return (w, l, h), b.build()


def make_motorcycle(rng) -> tuple:
    l, w, h = rng.uniform(1.9, 2.3), rng.uniform(0.7, 0.9), rng.uniform(1.1, 1.35)
    b = _Builder(rng)
    col = _jitter(rng, _pick(rng, PAINT))
    cat = 'vehicle.motorcycle'
    r = 0.31
    for sx in (-1, 1):
        b.add(ELLIPSOID, (sx * (0.5 * l - r), 0, -0.5 * h + r), (r, 0.07, r), 0, cat, M.RUBBER,
              (0.05, 0.05, 0.05))
    b.box((0, 0, -0.5 * h + 0.62), (0.9 * l - 2 * r + 0.5, 0.32, 0.42), 0, cat, M.PAINT, col)
    b.box((-0.12 * l, 0, -0.5 * h + 0.88), (0.6, 0.28, 0.12), 0, cat, M.RUBBER, (0.07, 0.07, 0.07))
    b.box((0.5 * l - r - 0.15, 0, 0.5 * h - 0.18), (0.08, w, 0.06), 0, cat, M.METAL,
          (0.3, 0.3, 0.3))
    b.box((0.5 * l - r - 0.05, 0, -0.5 * h + 0.95 + 0.5 * (h - 1.15)), (0.08, 0.08, h - 0.95), 0,
          cat, M.METAL, (0.3, 0.3, 0.3))
    return (w, l, h), b.build()


def make_bicycle(rng) -> tuple:
    l, w, h = rng.uniform(1.6, 1.85), rng.uniform(0.5, 0.65), rng.uniform(1.0, 1.15)
    b = _Builder(rng)
    col = _jitter(rng, _pick(rng, PAINT + [(0.9, 0.2, 0.3), (0.1, 0.5, 0.6)]))
    cat = 'vehicle.bicycle'
    r = 0.34
    for sx in (-1, 1):
        b.add(ELLIPSOID, (sx * (0.5 * l - r), 0, -0.5 * h + r), (r, 0.03, r), 0, cat, M.RUBBER,
              (0.05, 0.05, 0.05))
    b.box((0, 0, -0.5 * h + 0.6), (l - 2 * r + 0.2, 0.05, 0.06), 0, cat, M.PAINT, col)
    b.box((-0.15, 0, -0.5 * h + 0.62), (0.06, 0.05, 0.45), 0, cat, M.PAINT, col)
    b.box((-0.12, 0, -0.5 * h + 0.88), (0.24, 0.1, 0.05), 0, cat, M.RUBBER, (0.07, 0.07, 0.07))
    b.box((0.5 * l - r - 0.05, 0, 0.5 * h - 0.05), (0.05, w, 0.04), 0, cat, M.METAL,
          (0.25, 0.25, 0.25))
    b.box((0.5 * l - r - 0.05, 0, -0.5 * h + r + 0.5 * (h - r - 0.05)), (0.04, 0.04, h - r), 0,
          cat, M.PAINT, col)
    return (w, l, h), b.build()


def make_pedestrian(rng) -> tuple:
    h = rng.uniform(1.55, 1.9)
    w, l = rng.uniform(0.55, 0.7), rng.uniform(0.5, 0.65)
    b = _Builder(rng)
    cat = 'human.pedestrian.adult'
    legs_h = 0.47 * h
    top = _pick(rng, CLOTHES)
    b.add(CYLINDER, (0, 0, -0.5 * h + 0.5 * legs_h), (0.13, 0.2, 0.5 * legs_h), 0, cat, M.CLOTH,
          _jitter(rng, _pick(rng, CLOTHES)))
    torso_h = 0.35 * h
    b.add(CYLINDER, (0, 0, -0.5 * h + legs_h + 0.5 * torso_h), (0.15, 0.24, 0.5 * torso_h), 0, cat,
          M.CLOTH, _jitter(rng, top))
    head_r = 0.11
    b.add(ELLIPSOID, (0, 0, 0.5 * h - head_r * 1.1), (head_r, head_r * 0.9, head_r * 1.15), 0, cat,
          M.SKIN, _jitter(rng, _pick(rng, SKIN), 0.03))
    if rng.uniform() < 0.3:  # backpack
        b.box((-0.17, 0, -0.5 * h + legs_h + 0.55 * torso_h), (0.14, 0.3, 0.4), 0, cat, M.CLOTH,
              _jitter(rng, _pick(rng, CLOTHES)))
    return (w, l, h), b.build()


def make_barrier(rng, striped: bool) -> tuple:
    w, l, h = rng.uniform(1.8, 2.4), rng.uniform(0.45, 0.6), rng.uniform(0.9, 1.1)
    b = _Builder(rng)
    cat = 'movable_object.barrier'
    if striped:
        b.box((0, 0, 0.1 * h), (0.1, w, 0.6 * h), 0, cat, M.STRIPES_Y, (0.75, 0.1, 0.08),
              (0.9, 0.9, 0.88))
        for sy in (-1, 1):
            b.box((0, sy * (0.5 * w - 0.1), -0.2 * h), (l, 0.15, 0.6 * h), 0, cat, M.PLASTIC,
                  (0.85, 0.4, 0.1))
    else:  # concrete jersey barrier: wide base, narrow top
        col = _jitter(rng, (0.62, 0.61, 0.58))
        b.box((0, 0, -0.5 * h + 0.2), (l, w, 0.4), 0, cat, M.CONCRETE, col)
        b.box((0, 0, -0.5 * h + 0.4 + 0.5 * (h - 0.4)), (0.45 * l, w, h - 0.4), 0, cat, M.CONCRETE,
              col)
    return (w, l, h), b.build()


def make_cone(rng) -> tuple:
    h = rng.uniform(0.65, 0.8)
    b = _Builder(rng)
    cat = 'movable_object.trafficcone'
    orange, white = _jitter(rng, (0.95, 0.35, 0.05), 0.04), (0.92, 0.92, 0.9)
    b.box((0, 0, -0.5 * h + 0.02), (0.4, 0.4, 0.04), 0, cat, M.PLASTIC, orange)
    b.add(CYLINDER, (0, 0, -0.5 * h + 0.04 + 0.2 * h), (0.13, 0.13, 0.2 * h), 0, cat, M.STRIPES_Z,
          orange, white)
    b.add(CYLINDER, (0, 0, -0.5 * h + 0.04 + 0.4 * h + 0.5 * (0.6 * h - 0.04)),
          (0.075, 0.075, 0.5 * (0.6 * h - 0.04)), 0, cat, M.STRIPES_Z, orange, white)
    return (0.4, 0.4, h), b.build()


def make_bin(rng) -> tuple:
    w, l, h = rng.uniform(0.55, 0.75), rng.uniform(0.6, 0.8), rng.uniform(0.95, 1.15)
    b = _Builder(rng)
    col = _jitter(rng, _pick(rng, PLASTICS))
    b.box((0, 0, -0.05), (l, w, h - 0.1), 0, 'movable_object.pushable_pullable', M.PLASTIC, col)
    b.box((0, 0, 0.5 * h - 0.05), (l + 0.04, w + 0.04, 0.1), 0, 'movable_object.pushable_pullable',
          M.PLASTIC, col * 0.8)
    return (w, l, h), b.build()


def make_bike_rack(rng, length: float) -> tuple:
    w, h = 0.5, 0.85
    b = _Builder(rng)
    cat = 'static_object.bicycle_rack'
    col = _jitter(rng, (0.55, 0.56, 0.58))
    n = max(2, int(length / 0.8))
    for i in range(n):
        x = -0.5 * length + (i + 0.5) * length / n
        b.box((x, 0, 0), (0.06, w, h), 0, cat, M.METAL, col)
    b.box((0, 0, 0.5 * h - 0.04), (length, 0.06, 0.08), 0, cat, M.METAL, col)
    return (w, length, h), b.build()


MODELS = {
    'vehicle.car': make_car, 'vehicle.truck': make_truck, 'vehicle.bus.rigid': make_bus,
    'vehicle.trailer': make_trailer, 'vehicle.construction': make_construction,
    'vehicle.motorcycle': make_motorcycle, 'vehicle.bicycle': make_bicycle,
    'human.pedestrian.adult': make_pedestrian, 'movable_object.trafficcone': make_cone,
    'movable_object.pushable_pullable': make_bin,
}


# ------------------------------------------------------------------ layout helpers
class _Strip:
    """A 1D allocator of intervals along a lane or sidewalk (scene x or y coordinate)."""

    def __init__(self, lo: float, hi: float, blocked=()):
        self.lo, self.hi = lo, hi
        self.used = [tuple(b) for b in blocked]

    def is_free(self, a: float, b: float) -> bool:
        return a >= self.lo and b <= self.hi and all(b <= u0 or a >= u1 for u0, u1 in self.used)

    def take(self, rng, length: float, pref: float, spread: float, gap: float = 0.6):
        """Centre of a free interval of ``length`` near ``pref`` (and mark it used), or None."""
        for k in range(40):
            c = pref + (rng.uniform(-spread, spread) if k else 0.0)
            a, b = c - 0.5 * length, c + 0.5 * length
            if self.is_free(a - gap, b + gap):
                self.used.append((a - gap, b + gap))
                return c
        return None


class _SceneLayout:
    """Builds one scene (see the module docstring)."""

    def __init__(self, rng: np.random.Generator, n_samples: int):
        self.rng = rng
        self.static = _Builder(rng)
        self.objects: List[SceneObject] = []
        self.duration = 0.5 * max(n_samples - 1, 0)
        self.sw = rng.uniform(2.6, 4.0)  # sidewalk width
        self.verge = [rng.uniform(2.0, 7.0), rng.uniform(2.0, 7.0)]  # right (y<0), left (y>0)
        self.ground_rects = []

    # ----- objects
    def add_object(self, category, xy, yaw, speed=0.0, attribute=None, model=None):
        size, parts = (model if model is not None else MODELS[category](self.rng))
        self.objects.append(SceneObject(category, tuple(float(v) for v in size),
                                        np.asarray(xy, float), float(yaw), float(speed), attribute,
                                        parts))
        return size

    # ----- ego path
    def plan_ego(self):
        rng = self.rng
        self.mode = 'turn' if rng.uniform() < 0.35 else 'straight'
        if self.mode == 'straight':
            self.speed = rng.uniform(5.0, 10.0)
            L = self.speed * self.duration
            self.turn_radius = 0.0
            self.turn_x0 = 0.0
            self.s0 = rng.uniform(-35.0 - L, 10.0)  # x of the ego at t = 0
        else:
            self.speed = rng.uniform(4.0, 6.0)
            L = self.speed * self.duration
            self.turn_radius = rng.uniform(7.0, 9.0)
            self.turn_x0 = -CROSS_LANE - self.turn_radius
            arc = 0.5 * np.pi * self.turn_radius
            self.s0 = 0.5 * arc - 0.5 * L + rng.uniform(-3.0, 3.0)

    def ego_xy(self, t):
        x, y, _ = ego_path(self.mode, self.s0 + self.speed * t, self.turn_radius, self.turn_x0)
        return np.array([x, y])

    # ----- static scenery
    def build_ground(self, parking_lot):
        E = ROAD_EXTENT
        drive, other = FINE_INDEX['flat.driveable_surface'], FINE_INDEX['flat.other']
        self.ground_rects = [
            ((-E, -ROAD_HW, E, ROAD_HW), drive, M.ASPHALT),
            ((-CROSS_HW, -E, CROSS_HW, E), drive, M.ASPHALT),
        ]
        if parking_lot is not None:
            self.ground_rects.append((parking_lot, other, M.PARKING))

    def sidewalk_boxes(self):
        rng, sw = self.rng, self.sw
        cat = 'flat.sidewalk'
        col = None
        # main road: both sides, cut at the crossing road
        for side in (-1, 1):
            for a, b in ((-STATIC_EXTENT, -CROSS_HW), (CROSS_HW, STATIC_EXTENT)):
                n = max(1, int(np.ceil((b - a) / 20.0)))
                edges = np.linspace(a, b, n + 1)
                for x0, x1 in zip(edges[:-1], edges[1:]):
                    yc = side * (ROAD_HW + 0.5 * sw)
                    self.static.box((0.5 * (x0 + x1), yc, 0.5 * (CURB - 0.15)),
                                    (x1 - x0, sw, CURB + 0.15), 0, cat, M.SIDEWALK, (1, 1, 1), col)
        # crossing road: both sides, beyond the main road's sidewalks
        for side in (-1, 1):
            for a, b in ((-STATIC_EXTENT, -(ROAD_HW + sw)), (ROAD_HW + sw, STATIC_EXTENT)):
                n = max(1, int(np.ceil((b - a) / 20.0)))
                edges = np.linspace(a, b, n + 1)
                for y0, y1 in zip(edges[:-1], edges[1:]):
                    xc = side * (CROSS_HW + 0.5 * sw)
                    self.static.box((xc, 0.5 * (y0 + y1), 0.5 * (CURB - 0.15)),
                                    (sw, y1 - y0, CURB + 0.15), 0, cat, M.SIDEWALK, (1, 1, 1), col)
        # median of the crossing road's north arm (flat.other, raised)
        y0 = ROAD_HW + sw + 2.0
        for a, b in ((y0, y0 + 30.0), (y0 + 36.0, y0 + 80.0)):
            self.static.box((0.0, 0.5 * (a + b), 0.5 * (0.12 - 0.15)), (1.2, b - a, 0.27), 0,
                            'flat.other', M.PAVERS, (1, 1, 1))

    def tree(self, x, y):
        rng, b = self.rng, self.static
        trunk_h = rng.uniform(1.8, 3.5)
        r = rng.uniform(0.12, 0.25)
        b.add(CYLINDER, (x, y, 0.5 * trunk_h), (r, r, 0.5 * trunk_h), 0, 'static.vegetation',
              M.BARK, _jitter(rng, (0.30, 0.22, 0.15)))
        cr = rng.uniform(1.4, 3.2)
        cz = rng.uniform(1.0, 1.6) * cr
        b.add(ELLIPSOID, (x, y, trunk_h + 0.6 * cz), (cr, cr * rng.uniform(0.85, 1.15), cz),
              rng.uniform(0, np.pi), 'static.vegetation', M.FOLIAGE,
              _jitter(rng, _pick(rng, FOLIAGE)), _jitter(rng, _pick(rng, FOLIAGE)))

    def bush(self, x, y):
        rng = self.rng
        rx, ry, rz = rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.2), rng.uniform(0.35, 0.9)
        self.static.add(ELLIPSOID, (x, y, 0.8 * rz), (rx, ry, rz), rng.uniform(0, np.pi),
                        'static.vegetation', M.FOLIAGE, _jitter(rng, _pick(rng, FOLIAGE)),
                        _jitter(rng, _pick(rng, FOLIAGE)))

    def street_light(self, x, y, side, along_x=True):
        rng, b = self.rng, self.static
        h = rng.uniform(6.0, 8.0)
        col = _jitter(rng, _pick(rng, [(0.45, 0.46, 0.48), (0.15, 0.25, 0.18), (0.2, 0.2, 0.22)]))
        b.add(CYLINDER, (x, y, CURB + 0.5 * h), (0.1, 0.1, 0.5 * h), 0, 'static.manmade', M.METAL,
              col)
        arm = 1.6
        if along_x:
            b.box((x, y - side * 0.5 * arm, CURB + h - 0.1), (0.12, arm, 0.12), 0, 'static.manmade',
                  M.METAL, col)
        else:
            b.box((x - side * 0.5 * arm, y, CURB + h - 0.1), (arm, 0.12, 0.12), 0, 'static.manmade',
                  M.METAL, col)

    def sign(self, x, y, yaw):
        rng, b = self.rng, self.static
        h = rng.uniform(2.2, 2.8)
        b.add(CYLINDER, (x, y, CURB + 0.5 * h), (0.05, 0.05, 0.5 * h), 0, 'static.manmade', M.METAL,
              (0.5, 0.5, 0.52))
        col = _pick(rng, [(0.1, 0.25, 0.6), (0.75, 0.1, 0.08), (0.9, 0.9, 0.88), (0.9, 0.7, 0.1)])
        b.box((x, y, CURB + h + 0.3), (0.05, 0.7, 0.6), yaw, 'static.manmade', M.SIGN, col,
              (0.95, 0.95, 0.95))

    def building_row_x(self, side, y_front, x_ranges):
        """Buildings along the main road on one side, fronts at |y| = y_front."""
        rng = self.rng
        for a, b in x_ranges:
            x = a + rng.uniform(0.0, 4.0)
            while x < b - 6.0:
                L = min(rng.uniform(8.0, 30.0), b - x)
                D = rng.uniform(8.0, 20.0)
                H = rng.uniform(4.0, 12.0) if rng.uniform() < 0.6 else rng.uniform(12.0, 28.0)
                setback = rng.uniform(0.0, 3.0)
                yc = side * (y_front + setback + 0.5 * D)
                self._building((x + 0.5 * L, yc), (L, D, H))
                x += L + rng.uniform(1.0, 8.0)

    def building_row_y(self, side, x_front, y_ranges):
        rng = self.rng
        for a, b in y_ranges:
            y = a + rng.uniform(0.0, 4.0)
            while y < b - 6.0:
                L = min(rng.uniform(8.0, 30.0), b - y)
                D = rng.uniform(8.0, 20.0)
                H = rng.uniform(4.0, 12.0) if rng.uniform() < 0.6 else rng.uniform(12.0, 28.0)
                xc = side * (x_front + rng.uniform(0.0, 3.0) + 0.5 * D)
                self._building((xc, y + 0.5 * L), (D, L, H))
                y += L + rng.uniform(1.0, 8.0)

    def _building(self, xy, size):
        rng = self.rng
        facade = _jitter(rng, _pick(rng, FACADES), 0.04)
        window = _jitter(rng, _pick(rng, [(0.08, 0.1, 0.14), (0.15, 0.2, 0.28), (0.25, 0.28, 0.3)]),
                         0.03)
        L, D, H = size
        self.static.box((xy[0], xy[1], 0.5 * H), (L, D, H), 0, 'static.manmade', M.FACADE, facade,
                        window)
        if rng.uniform() < 0.3 and H > 8:  # a rooftop structure
            self.static.box((xy[0] + rng.uniform(-0.2, 0.2) * L, xy[1], H + 1.25),
                            (0.3 * L, 0.3 * D, 2.5), 0, 'static.manmade', M.CONCRETE,
                            _jitter(rng, (0.5, 0.5, 0.5)))

    def verge_vegetation(self, side, x_ranges):
        rng = self.rng
        g = self.verge[0 if side < 0 else 1]
        y_in, y_out = ROAD_HW + self.sw, ROAD_HW + self.sw + g
        for a, b in x_ranges:
            x = a + rng.uniform(0, 6)
            while x < b:
                if g >= 2.5 and rng.uniform() < 0.75:
                    self.tree(x, side * 0.5 * (y_in + y_out))
                else:
                    self.bush(x, side * rng.uniform(y_in + 0.6, max(y_out - 0.4, y_in + 0.7)))
                x += rng.uniform(6.0, 14.0)

    def fence(self, x0, x1, y, h=None):
        rng = self.rng
        h = rng.uniform(1.0, 2.0) if h is None else h
        self.static.box((0.5 * (x0 + x1), y, 0.5 * h), (x1 - x0, 0.08, h), 0, 'static.manmade',
                        M.CONCRETE, _jitter(rng, _pick(rng, [(0.6, 0.6, 0.58), (0.35, 0.3, 0.25),
                                                             (0.2, 0.22, 0.2)])))


def _appearance(rng, scene_yaw: float) -> Appearance:
    el = np.radians(rng.uniform(18.0, 65.0))
    az = rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    warm = rng.uniform(0.0, 1.0) * (1.0 - np.sin(el))  # low sun: warmer light
    overcast = rng.uniform(0.0, 0.8)
    sun_color = np.array([1.0, 0.96 - 0.06 * warm, 0.9 - 0.22 * warm]) * (1.15 - 0.7 * overcast)
    ambient = np.array([0.6, 0.63, 0.68]) * (0.45 + 0.35 * overcast)
    zenith = np.array([0.22, 0.38, 0.7]) * (1 - overcast) + np.array([0.62, 0.64, 0.66]) * overcast
    horizon = np.array([0.7, 0.78, 0.88]) * (1 - overcast) + np.array([0.78, 0.78, 0.78]) * overcast
    horizon = horizon + np.array([0.1, 0.04, -0.05]) * warm
    dry = rng.uniform()
    grass = np.array([0.28, 0.42, 0.16]) * (1 - dry) + np.array([0.5, 0.46, 0.28]) * dry
    return Appearance(
        sun_dir=sun, sun_color=sun_color, ambient=ambient, sky_zenith=zenith,
        sky_horizon=np.clip(horizon, 0, 1), cloudiness=float(rng.uniform(0.0, 1.0)),
        exposure=float(rng.uniform(0.85, 1.15)), fog_distance=float(rng.uniform(180.0, 500.0)),
        asphalt=_jitter(rng, (0.27, 0.27, 0.28), 0.05), grass=_jitter(rng, grass, 0.03),
        sidewalk=_jitter(rng, (0.6, 0.58, 0.55), 0.06),
        parking=_jitter(rng, (0.38, 0.38, 0.4), 0.04),
        pavers=_jitter(rng, (0.55, 0.45, 0.4), 0.05),
        line_paint=(np.array([0.9, 0.9, 0.88]) if rng.uniform() < 0.7
                    else np.array([0.9, 0.75, 0.2])),
        noise_seed=int(rng.integers(0, 2 ** 31 - 1)))


def build_scene(seed: int, index: int, name: str, n_samples: int) -> Scene:
    """The world of scene ``index`` (deterministic in ``seed`` and ``index``)."""
    rng = np.random.default_rng([int(seed), int(index), 7])
    lay = _SceneLayout(rng, n_samples)
    lay.plan_ego()
    sw = lay.sw
    # where the ego is, in the middle of the scene: objects go around it
    mid = lay.ego_xy(0.5 * lay.duration)
    start, end = lay.ego_xy(0.0), lay.ego_xy(lay.duration)
    xc = float(np.clip(mid[0], -45.0, 45.0))

    # ---- parking lot (flat.other) on one side, away from the crossing
    lot_side = -1 if rng.uniform() < 0.5 else 1
    lot_x0 = float(np.clip(xc + rng.uniform(-25.0, 10.0), -60.0, 40.0))
    if lot_x0 < 16.0 and lot_x0 + 30.0 > -16.0:  # keep it off the crossing corridor
        lot_x0 = 16.0 if lot_x0 + 15.0 >= 0 else -46.0
    y_in = ROAD_HW + sw + lay.verge[0 if lot_side < 0 else 1]
    lot = (lot_x0, min(lot_side * y_in, lot_side * (y_in + 24.0)), lot_x0 + 30.0,
           max(lot_side * y_in, lot_side * (y_in + 24.0)))
    lay.build_ground(lot)
    lay.sidewalk_boxes()

    # ---- buildings (main road rows skip the crossing corridor and the parking lot)
    corridor = CROSS_HW + sw + 3.0
    for side in (-1, 1):
        g = lay.verge[0 if side < 0 else 1]
        ranges = [(-STATIC_EXTENT, -corridor), (corridor, STATIC_EXTENT)]
        if side == lot_side:
            ranges = _subtract(ranges, (lot_x0 - 1.0, lot_x0 + 31.0))
        lay.building_row_x(side, ROAD_HW + sw + g, ranges)
        lay.verge_vegetation(side, [(-STATIC_EXTENT, -CROSS_HW - sw - 1.0),
                                    (CROSS_HW + sw + 1.0, STATIC_EXTENT)])
        y_back = ROAD_HW + sw + 30.0
        lay.building_row_y(side, CROSS_HW + sw + rng.uniform(2.0, 6.0),
                           [(-STATIC_EXTENT, -y_back), (y_back, STATIC_EXTENT)])
        # trees along the crossing road
        for y in np.arange(ROAD_HW + sw + 4.0, 60.0, rng.uniform(8.0, 14.0)):
            for sy in (-1, 1):
                if rng.uniform() < 0.6:
                    lay.tree(side * (CROSS_HW + sw + 1.2), sy * y)
    # fence and hedge around the parking lot
    lot_y_out = lot_side * (y_in + 24.0)
    lay.fence(lot_x0, lot_x0 + 30.0, lot_y_out)
    for x in np.arange(lot_x0 + 1.0, lot_x0 + 30.0, 2.2):
        lay.static.box((x, lot_side * (y_in - 0.5), 0.45), (2.0, 0.8, 0.9), 0, 'static.vegetation',
                       M.FOLIAGE, _jitter(rng, _pick(rng, FOLIAGE)),
                       _jitter(rng, _pick(rng, FOLIAGE)))

    # ---- street furniture: lights near the curb, signs
    for side in (-1, 1):
        x = -STATIC_EXTENT + rng.uniform(0, 10)
        while x < STATIC_EXTENT:
            if abs(x) > CROSS_HW + 1.0:
                lay.street_light(x, side * (ROAD_HW + 0.35), side)
            x += rng.uniform(22.0, 34.0)
        lay.sign(side * (CROSS_HW + 0.5), side * (ROAD_HW + 0.3), 0.0)
        for y in (ROAD_HW + sw + 12.0, -(ROAD_HW + sw + 12.0)):
            lay.street_light(side * (CROSS_HW + 0.35), y, side, along_x=False)

    # ---- annotated objects
    near = (min(start[0], end[0]) - 35.0, max(start[0], end[0]) + 35.0)
    # the ego's side keeps the corner clear for a right turn; the far side only the crossing
    park = {-1: _Strip(-120.0, 120.0, [(-CROSS_HW - 12.0, CROSS_HW + 12.0)]),
            1: _Strip(-120.0, 120.0, [(-CROSS_HW - 3.0, CROSS_HW + 3.0)])}
    py = {s: s * (LANE_W + 0.5 * PARK_W) for s in (-1, 1)}

    def parked(category, side, pref, spread=20.0, yaw_extra=0.0, speed=0.0, attr='vehicle.parked'):
        model = MODELS[category](rng)
        (w, l, h), _ = model
        c = park[side].take(rng, l, pref, spread)
        if c is None:
            return False
        yaw = (0.0 if side < 0 else np.pi) + yaw_extra
        lay.add_object(category, (c, py[side] + rng.uniform(-0.15, 0.15)), yaw, speed, attr, model)
        return True

    def rnd(spread=15.0):  # a position along the road near the middle of the ego path
        return xc + rng.uniform(-spread, spread)

    # required classes near the path. A construction zone in the far parking lane first:
    # barriers along the lane edge, cones at both ends, the machine inside
    cz = park[1].take(rng, 22.0, rnd(), 28.0, gap=1.0)
    if cz is not None:
        striped = rng.uniform() < 0.5
        for k in range(-4, 5):
            size, model = make_barrier(rng, striped)
            if abs(k) == 4:
                continue
            lay.add_object('movable_object.barrier', (cz + 2.5 * k, LANE_W + 0.1), 0.5 * np.pi,
                           0.0, None, (size, model))
        for k in (-1, 1):
            for j in range(3):
                lay.add_object('movable_object.trafficcone',
                               (cz + k * (9.5 + 0.9 * j), LANE_W + 0.1 + 0.7 * j), 0.0)
        lay.add_object('vehicle.construction', (cz + rng.uniform(-2, 2), py[1] + 0.35),
                       np.pi + rng.uniform(-0.05, 0.05), 0.0, 'vehicle.parked')
    side_bus = 1 if rng.uniform() < 0.5 else -1
    parked('vehicle.bus.rigid', side_bus, rnd(), 28.0, attr='vehicle.stopped') or \
        parked('vehicle.bus.rigid', -side_bus, rnd(), 28.0, attr='vehicle.stopped')
    side_tt = 1 if rng.uniform() < 0.5 else -1
    parked('vehicle.truck', side_tt, rnd(), 28.0) or parked('vehicle.truck', -side_tt, rnd(), 28.0)
    parked('vehicle.trailer', -side_tt, rnd(), 28.0) or \
        parked('vehicle.trailer', side_tt, rnd(), 28.0)
    # motorcycles parked together in one slot
    for side in (-1, 1):
        c = park[side].take(rng, 3.4, rnd(), 25.0)
        if c is not None:
            for k in range(int(rng.integers(2, 4))):
                lay.add_object('vehicle.motorcycle', (c - 1.1 + 1.1 * k, py[side]),
                               (0.5 * np.pi if side < 0 else -0.5 * np.pi) + rng.uniform(-0.3, 0.3),
                               0.0, 'cycle.without_rider')
    # sidewalk furniture on the outer band: a bicycle rack with bicycles, bins
    walk = {s: _Strip(-120.0, 120.0, [(-CROSS_HW - 1.0, CROSS_HW + 1.0)]) for s in (-1, 1)}
    outer = {s: s * (ROAD_HW + sw - 0.45) for s in (-1, 1)}
    rack_side = -1 if rng.uniform() < 0.6 else 1
    for side in (rack_side, -rack_side):
        rack_len = rng.uniform(4.0, 6.0)
        c = walk[side].take(rng, rack_len, rnd(), 20.0)
        if c is not None:
            rack = make_bike_rack(rng, rack_len)
            lay.add_object('static_object.bicycle_rack', (c, side * (ROAD_HW + sw - 0.35)), 0.0,
                           0.0, None, rack)
            n_bikes = int(rng.integers(1, int(rack_len / 1.95) + 1))
            for k in range(n_bikes):
                bx = c - 0.5 * rack_len + 1.0 + 1.95 * k
                lay.add_object('vehicle.bicycle', (bx, side * (ROAD_HW + sw - 0.95)),
                               (0.0 if rng.uniform() < 0.5 else np.pi), 0.0,
                               'cycle.without_rider')
        for _ in range(int(rng.integers(2, 5))):
            c = walk[side].take(rng, 0.8, rnd(25.0), 25.0)
            if c is not None:
                lay.add_object('movable_object.pushable_pullable', (c, outer[side]),
                               rng.uniform(-0.2, 0.2))
    # more parked vehicles
    for side in (-1, 1):
        x = -110.0
        while x < 110.0:
            u = rng.uniform()
            cat = ('vehicle.car' if u < 0.8 else 'vehicle.truck' if u < 0.88 else
                   'vehicle.motorcycle' if u < 0.95 else 'vehicle.trailer')
            if rng.uniform() < 0.75:
                parked(cat, side, x, 2.0)
            x += rng.uniform(5.5, 9.0)
    # cars in the parking lot: two rows of stalls
    for row in (0, 1):
        yr = lot_side * (y_in + 5.5 + 13.0 * row)
        for k in range(11):
            if rng.uniform() < 0.6:
                lay.add_object('vehicle.car', (lot_x0 + 1.5 + 2.7 * k + rng.uniform(-0.2, 0.2),
                                               yr + rng.uniform(-0.3, 0.3)),
                               0.5 * np.pi * (1 if row == 0 else -1) * lot_side
                               + rng.uniform(-0.1, 0.1), 0.0, 'vehicle.parked')

    # moving traffic on the main road
    v_opp = rng.uniform(6.0, 12.0)
    x = near[1] + 30.0 + rng.uniform(0, 10)
    while x > near[0] - 60.0:
        cat = 'vehicle.car' if rng.uniform() < 0.85 else (
            'vehicle.truck' if rng.uniform() < 0.6 else 'vehicle.bus.rigid')
        lay.add_object(cat, (x, LANE_W / 2 + rng.uniform(-0.1, 0.1)), np.pi, v_opp,
                       'vehicle.moving')
        x -= rng.uniform(20.0, 40.0)
    v_ahead = lay.speed + rng.uniform(1.0, 3.0)
    x = start[0] + rng.uniform(14.0, 22.0) if lay.mode == 'straight' else lay.turn_x0 + 16.0
    for _ in range(int(rng.integers(1, 3))):
        lay.add_object('vehicle.car', (x, EGO_LANE_Y + rng.uniform(-0.2, 0.2)), 0.0, v_ahead,
                       'vehicle.moving')
        x += rng.uniform(20.0, 35.0)
    if rng.uniform() < 0.7:
        lay.add_object('vehicle.car', (start[0] - rng.uniform(14.0, 20.0), EGO_LANE_Y), 0.0,
                       max(lay.speed - rng.uniform(0.5, 2.0), 0.0), 'vehicle.moving')
    # crossing road: stopped queues at the approaches (north only when the ego goes straight)
    for k in range(int(rng.integers(1, 4))):
        lay.add_object('vehicle.car', (CROSS_LANE, -(ROAD_HW + 3.5 + 7.0 * k)), 0.5 * np.pi, 0.0,
                       'vehicle.stopped')
    if lay.mode == 'straight':
        for k in range(int(rng.integers(0, 3))):
            lay.add_object('vehicle.car', (-CROSS_LANE, ROAD_HW + 3.5 + 7.0 * k), -0.5 * np.pi, 0.0,
                           'vehicle.stopped')
    else:  # traffic leaving south ahead of the turning ego
        lay.add_object('vehicle.car', (-CROSS_LANE, -(ROAD_HW + 30.0 + rng.uniform(0, 10))),
                       -0.5 * np.pi, lay.speed + 2.0, 'vehicle.moving')
    # pedestrians on the sidewalks' middle band
    n_ped = int(rng.integers(8, 15))
    walkers = []  # (xy0 [2], velocity [2]) of the people placed so far
    times = np.linspace(-0.1, lay.duration + 0.1, 9)

    def clear_path(xy0, vel):
        """Whether a person starting at xy0 with velocity vel keeps 0.8 m from everybody."""
        for xy1, vel1 in walkers:
            rel = (xy0 - xy1)[None] + times[:, None] * (vel - vel1)[None]
            if np.min(np.hypot(rel[:, 0], rel[:, 1])) < 0.8:
                return False
        return True

    def add_person(xy, heading, speed):
        xy = np.asarray(xy, float)
        vel = speed * np.array([np.cos(heading), np.sin(heading)])
        if not clear_path(xy, vel):
            return False
        walkers.append((xy, vel))
        lay.add_object('human.pedestrian.adult', xy, heading, speed,
                       'pedestrian.moving' if speed > 0 else 'pedestrian.standing')
        return True

    for i in range(n_ped):
        side = -1 if i % 2 == 0 else 1
        for _ in range(20):  # retry until the person's path is clear of the others
            y = side * (ROAD_HW + rng.uniform(0.75, sw - 1.6))
            x = rng.uniform(near[0], near[1])
            if abs(x) < CROSS_HW + 1.5:
                x += np.sign(x + 1e-9) * (CROSS_HW + 2.0)
            moving = rng.uniform() < 0.7
            heading = ((0.0 if rng.uniform() < 0.5 else np.pi) if moving
                       else rng.uniform(-np.pi, np.pi))
            speed = rng.uniform(0.9, 1.6) if moving else 0.0
            x_end = x + np.cos(heading) * speed * lay.duration
            if moving and (np.sign(x_end) != np.sign(x) or abs(x_end) < CROSS_HW + 1.5):
                heading = np.pi - heading  # walk away from the crossing (and the turning ego)
            if add_person((x, y), heading, speed):
                break
    if lay.mode == 'turn':  # people on the crossing road's sidewalks ahead
        for k in range(4):
            side = -1 if k % 2 == 0 else 1
            for _ in range(20):
                xy = (side * (CROSS_HW + 0.5 * sw), -(ROAD_HW + sw + rng.uniform(3.0, 30.0)))
                if add_person(xy, 0.5 * np.pi, rng.uniform(0.9, 1.5)):
                    break

    # ---- place the scene in the global frame (inside its log's map)
    scene_yaw = rng.uniform(-np.pi, np.pi)
    origin = np.array([0.5 * MAP_SIZE + rng.uniform(-20, 20), 0.5 * MAP_SIZE + rng.uniform(-20, 20),
                       0.0])
    scene2global = make_transform(yaw_matrix(scene_yaw), origin)
    static = lay.static.build().transformed(scene2global)
    rects = lay.ground_rects
    ground = GroundMap(scene2global, np.array([r[0] for r in rects], float),
                       np.array([r[1] for r in rects], np.int64),
                       np.array([r[2] for r in rects], np.int64),
                       FINE_INDEX['flat.terrain'], M.GRASS)
    return Scene(index=index, name=name, scene2global=scene2global, static=static, ground=ground,
                 objects=lay.objects, appearance=_appearance(rng, scene_yaw), ego_speed=lay.speed,
                 ego_mode=lay.mode, ego_s0=lay.s0, turn_radius=lay.turn_radius,
                 turn_x0=lay.turn_x0, duration=lay.duration)
