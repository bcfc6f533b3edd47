# Epoch-based schedule for real data (nuScenes + Occ3D, 8 GPUs x 1 sample = batch 8):
# AdamW 2e-4 (RenderOcc's setting), weight decay 0.01, gradient clipping at 35 (RenderOcc / BEVDet),
# 500-iteration linear warm-up, step decay x0.1 after epochs 8 and 11 (mmdetection3d's 1x),
# a checkpoint per epoch (last 3 kept) and every 500 iterations in between (last 2 kept; deleted
# once an epoch checkpoint supersedes them: a job killed without warning loses minutes, not an
# epoch of ~3,500 iterations), evaluation after the last epoch.
from mmengine.config import read_base

with read_base():
    from ..default_runtime import *  # noqa: F401,F403

max_epochs = 12

# mid-epoch checkpoint and resume on preemption (splattingocc/engine/preemption.py)
train_cfg = dict(type='PreemptibleEpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-2),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[8, 11], gamma=0.1),
]
# the learning rate above is for a total batch of 8; enable to scale it linearly with other batches
auto_scale_lr = dict(enable=False, base_batch_size=8)

default_hooks.update(  # noqa: F405
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, by_epoch=True, max_keep_ckpts=3,
                    save_last=True),
)
# mid-epoch checkpoints (splattingocc/engine/interval_checkpoint.py; resumed exactly by the
# preemptible loop above)
custom_hooks = [*custom_hooks,  # noqa: F405
                dict(type='IntervalCheckpointHook', interval=500, max_keep_ckpts=2)]
