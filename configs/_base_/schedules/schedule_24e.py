# Epoch-based schedule for real data, 24 epochs (8 GPUs x 1 sample = batch 8): AdamW 2e-4,
# weight decay 0.01, gradient clipping at 35, 500-iteration linear warm-up, then cosine decay per
# iteration to 1e-3 of the peak over the 24 epochs; a checkpoint per epoch (last 3 kept),
# evaluation after the last epoch.
from mmengine.config import read_base

with read_base():
    from ..default_runtime import *  # noqa: F401,F403

max_epochs = 24

# mid-epoch checkpoint and resume on preemption (splattingocc/engine/preemption.py)
train_cfg = dict(type='PreemptibleEpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-2),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    # by_epoch=True with convert_to_iter_based: the cosine is stepped every iteration
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=1e-3, convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=8)

default_hooks.update(  # noqa: F405
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, by_epoch=True, max_keep_ckpts=3,
                    save_last=True),
)
