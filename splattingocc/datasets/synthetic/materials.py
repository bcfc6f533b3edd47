"""Material ids of the synthetic world and their LiDAR reflectivity.

A material picks the procedural texture of a surface in shading.py; the colours themselves are
per primitive (``Primitives.color`` / ``color2``), drawn per instance from overlapping palettes so
that a class cannot be read off a colour.
"""
import numpy as np

ASPHALT, SIDEWALK, GRASS, PARKING, PAVERS, FACADE, CONCRETE, FOLIAGE, BARK, PAINT, CABIN, RUBBER, \
    CONTAINER, STRIPES_Z, STRIPES_Y, CLOTH, SKIN, METAL, PLASTIC, BUS, SIGN = range(21)
NUM_MATERIALS = 21

# diffuse LiDAR reflectivity in 0..1 (intensity = 255 * reflectivity * incidence term)
REFLECTIVITY = np.array([
    0.06,  # ASPHALT (lane paint is raised in shading.lidar_reflectivity)
    0.18,  # SIDEWALK
    0.10,  # GRASS
    0.09,  # PARKING
    0.14,  # PAVERS
    0.16,  # FACADE
    0.20,  # CONCRETE
    0.12,  # FOLIAGE
    0.08,  # BARK
    0.30,  # PAINT
    0.10,  # CABIN
    0.03,  # RUBBER
    0.25,  # CONTAINER
    0.70,  # STRIPES_Z (retro-reflective cone bands)
    0.55,  # STRIPES_Y (barrier stripes)
    0.12,  # CLOTH
    0.15,  # SKIN
    0.35,  # METAL
    0.20,  # PLASTIC
    0.28,  # BUS
    0.90,  # SIGN (retro-reflective)
])
assert len(REFLECTIVITY) == NUM_MATERIALS
