# The 3D-supervised bound of the tiny network, as the 3D baselines of BEVStereo-occ and RenderOcc:
# the Occ3D labels through the base's volume_supervision (cross entropy over all 18 labels, free
# included, of the Gaussians voxelized onto the Occ3D grid, inside mask_camera), the LiDAR depth
# loss of the lift kept, the same schedule as the 2D model; the head predicts 18 classes and the
# read-out takes the argmax (no threshold). No 2D rendering loss.
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.head.num_classes = num_classes  # noqa: F405  free is a class
model.readout.threshold = None  # noqa: F405  the argmax read-out
model.supervision = [volume_supervision, dict(type='LSSDepthLoss', loss_weight=0.2)]  # noqa: F405
train_dataloader.dataset.update(pipeline=train_pipeline_3d)  # noqa: F405
