# The tiny network supervised by the 2D labels AND the Occ3D ground truth (3D loss on the Gaussians
# voxelized onto the Occ3D grid, all voxels; mask_camera not used).
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.update(use_2d_supervision=True, use_3d_supervision=True)  # noqa: F405
train_dataloader.dataset.update(pipeline=train_pipeline_3d)  # noqa: F405
