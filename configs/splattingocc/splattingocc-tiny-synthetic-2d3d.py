# The tiny network supervised by the 2D labels AND the Occ3D ground truth: the demo's supervision
# plus exactly the 3D bound's loss (the base's volume_supervision: cross entropy over all 18
# labels on the Occ3D grid inside mask_camera); 18 classes and the argmax read-out, as the bound.
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.head.num_classes = num_classes  # noqa: F405  free is a class
model.readout.threshold = None  # noqa: F405  the argmax read-out
model.supervision = model.supervision + [volume_supervision]  # noqa: F405
train_dataloader.dataset.update(pipeline=train_pipeline_3d)  # noqa: F405
