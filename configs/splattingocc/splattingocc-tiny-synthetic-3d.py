# Upper bound: the tiny network supervised by the Occ3D ground truth only (no 2D labels, no LiDAR
# depth): occupancy BCE + semantic CE of the Gaussians voxelized onto the Occ3D grid.
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.update(use_2d_supervision=False, use_3d_supervision=True, loss_lss_depth=None)  # noqa: F405
train_dataloader.dataset.update(pipeline=train_pipeline_3d)  # noqa: F405
