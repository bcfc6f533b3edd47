# The tiny network supervised by the 2D labels AND the Occ3D ground truth (the base's 3D loss:
# the Gaussians voxelized onto the 50 x 50 x 8 prediction grid against block-majority labels, all
# voxels; mask_camera not used).
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.supervision = model.supervision + [volume_supervision]  # noqa: F405
train_dataloader.dataset.update(pipeline=train_pipeline_3d)  # noqa: F405
