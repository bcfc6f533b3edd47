# Toy config for the engine/tool tests: the real runtime + tiny schedule, toy model/data/metric.
# Needs tests/engine on PYTHONPATH (the tests set it) for custom_imports.
from mmengine.config import read_base

with read_base():
    from ...configs._base_.schedules.schedule_tiny import *  # noqa: F401,F403
    from .toy_config_parts import *  # noqa: F401,F403

train_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(type='ToyOccDataset', length=16),
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'))

train_cfg.update(max_iters=8, val_interval=8)  # noqa: F405
param_scheduler[-1].update(end=8)  # noqa: F405
param_scheduler[0].update(end=2)  # noqa: F405
default_hooks.update(  # noqa: F405
    logger=dict(type='LoggerHook', interval=2, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', interval=4, by_epoch=False, max_keep_ckpts=3,
                    save_last=True))
