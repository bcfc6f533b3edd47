# The 3D-supervised bound plus GaussRender's render-consistency loss (the base's
# render_consistency): the predicted and the ground-truth occupancy rendered as Gaussians at the
# voxel centres of a 0.8 m grid into one of the sample's cameras and a bird's-eye view, L1 on the
# rendered semantics and depth (docs/render-consistency.md). Everything else is the 3D bound's
# (the four lines of splattingocc-tiny-synthetic-3d.py, repeated: a file name with dashes cannot
# be imported; tests/experiments/test_arms.py checks that this config is the 3d arm plus
# render_consistency): the cross entropy over 18 labels inside mask_camera, the LSS depth loss,
# the schedule, the argmax read-out. tools/ablate.py's 3d+render arm.
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.head.num_classes = num_classes  # noqa: F405  free is a class
model.readout.threshold = None  # noqa: F405  the argmax read-out
model.supervision = [volume_supervision, dict(type='LSSDepthLoss', loss_weight=0.2),  # noqa: F405
                     render_consistency]  # noqa: F405
train_dataloader.dataset.update(pipeline=train_pipeline_3d)  # noqa: F405
