# The seed code's variant of the tiny 2D-only config ("density as opacity"): one Gaussian at each
# prediction voxel's centre with a fixed isotropic scale and the identity rotation; only opacity
# and classes are learned (the base's seed_head). Supervision and training as the demo.
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.head = seed_head  # noqa: F405
