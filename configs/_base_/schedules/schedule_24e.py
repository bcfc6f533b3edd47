# Epoch-based schedule for real data, 24 epochs: schedule_12e.py (AdamW 2e-4, weight decay 0.01,
# gradient clipping at 35, 500-iteration linear warm-up, a checkpoint per epoch with the last 3
# kept, evaluation after the last epoch) with cosine decay per iteration to 1e-3 of the peak over
# the 24 epochs in place of the step decay.
from mmengine.config import read_base

with read_base():
    from .schedule_12e import *  # noqa: F401,F403

max_epochs = 24

train_cfg.update(max_epochs=max_epochs, val_interval=max_epochs)  # noqa: F405
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    # by_epoch=True with convert_to_iter_based: the cosine is stepped every iteration
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=1e-3, convert_to_iter_based=True),
]
