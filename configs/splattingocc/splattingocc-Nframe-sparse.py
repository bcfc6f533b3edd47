# The sparse variant of the real-data config (issue 26): ResNet-50, adjacent-frame rays, gsplat,
# with the per-voxel head (640,000 Gaussians) replaced by the base's sparse_head, a budget of
# 25,000 Gaussians with free means (splattingocc/models/sparse_head.py). Not run on real data.
#   bash tools/dist_train.sh configs/splattingocc/splattingocc-Nframe-sparse.py 8
#   bash tools/dist_test.sh configs/splattingocc/splattingocc-Nframe-sparse.py CKPT 8 \
#       --eval segm ray
from mmengine.config import read_base

with read_base():
    from ._nframe import *  # noqa: F401,F403

model.head = sparse_head  # noqa: F405
