# The sparse variant of the tiny 2D-only config (issue 26): the per-voxel Gaussian head replaced
# by the base's sparse_head, a budget of 4,000 Gaussians with free means, initialised at the
# top cells of a predicted occupancy prior and refined by the volume features at their means
# (splattingocc/models/sparse_head.py). Rendered, voxelized and supervised as the demo.
#   python tools/train.py configs/splattingocc/splattingocc-tiny-synthetic-sparse.py
#   python tools/test.py configs/splattingocc/splattingocc-tiny-synthetic-sparse.py CKPT --eval segm
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.head = sparse_head  # noqa: F405
