# Iteration-based schedule for the tiny CPU configs: AdamW, linear warm-up then cosine decay,
# gradient clipping, evaluation and a checkpoint at the end, checkpoints every 250 iterations.
# A config changing the length sets both the loop length and the cosine's end:
#   train_cfg.update(max_iters=600, val_interval=600); param_scheduler[-1].update(end=600)
# Iteration-based loops want an endless sampler in the train loader
# (sampler=dict(type='InfiniteSampler', shuffle=True)): mmengine otherwise restarts the loader
# after each pass with a 2 s pause.
from mmengine.config import read_base

with read_base():
    from ..default_runtime import *  # noqa: F401,F403

max_iters = 1000
warmup_iters = 50

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
    # overlaps the warm-up (mmengine chains schedulers), so a length change only touches `end`
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min_ratio=0.05),
]

default_hooks.update(  # noqa: F405
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', interval=250, by_epoch=False, max_keep_ckpts=3,
                    save_last=True),
)
log_processor.update(window_size=10)  # noqa: F405
