# DIAGNOSTIC, not a result: the tiny 2D-only config whose LSS lift takes the LiDAR depth label's
# bin in every feature cell that has one, in training and at test (LSSViewTransform's
# oracle_lift), so the test pipeline loads the 2D labels too. It measures what a perfect lift
# would give this network (E42). Train / test as the tiny config:
#   python tools/train.py configs/splattingocc/splattingocc-tiny-synthetic-oracle-depth.py
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403

model.view_transform.update(oracle_lift=True)  # noqa: F405
test_pipeline_with_labels = [test_pipeline[0],  # noqa: F405
                             dict(type='LoadLabels2D', camera_names=camera_names),  # noqa: F405
                             ] + test_pipeline[1:]  # noqa: F405
val_dataloader.dataset.update(pipeline=test_pipeline_with_labels)  # noqa: F405
test_dataloader = val_dataloader  # noqa: F405
