# Upper bound: the tiny network supervised by the Occ3D ground truth only (no 2D labels, no LiDAR
# depth): occupancy BCE + semantic CE of the Gaussians voxelized onto the Occ3D grid itself
# (loss_3d_grid='occ'), on the voxels inside mask_camera (where Occ3D scores; a bound may use it,
# the 2D-only default never does). ~1.5 s/iteration on 2 CPU cores, about 2.3x the 2D config.
# The former setting, the loss on the 50 x 50 x 8 prediction grid against block-majority labels
# on all voxels, reached 3.96 mIoU: thin ground layers and small objects lose the block vote
# (log.txt, session 6).
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.update(use_2d_supervision=False, use_3d_supervision=True, loss_lss_depth=None,  # noqa: F405
             loss_3d_grid='occ', use_mask_camera=True)
train_dataloader.dataset.update(pipeline=train_pipeline_3d)  # noqa: F405
