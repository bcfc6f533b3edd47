# Toy config on the epoch-based 12-epoch schedule (shortened): checks that the real-data schedule
# builds and resumes. Needs tests/engine on PYTHONPATH for custom_imports.
from mmengine.config import read_base

with read_base():
    from ...configs._base_.schedules.schedule_12e import *  # noqa: F401,F403
    from .toy_config_parts import *  # noqa: F401,F403

train_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(type='ToyOccDataset', length=8),
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'))

train_cfg.update(max_epochs=3, val_interval=3)  # noqa: F405
param_scheduler[0].update(end=3)  # noqa: F405  warm-up over 3 iterations
param_scheduler[1].update(end=3, milestones=[2])  # noqa: F405
default_hooks.update(logger=dict(type='LoggerHook', interval=2))  # noqa: F405
