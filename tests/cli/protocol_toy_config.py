# The toy model with a real read-out, toy val / test splits and the Occ3D metric on them, for
# tests/cli/test_calibrated_readout.py. Needs tests/cli on PYTHONPATH (the test sets it).
from mmengine.config import read_base

with read_base():
    from ...configs._base_.schedules.schedule_tiny import *  # noqa: F401,F403

custom_imports = dict(imports=['protocol_toy'], allow_failed_imports=False)
class_names = [f'c{i}' for i in range(17)] + ['free']
model = dict(type='ProtocolToyModel',
             readout=dict(type='OccupancyReadout', pc_range=[0, 0, 0, 4, 4, 2], occ_size=[4, 4, 2],
                          num_classes=18, free_label=17, threshold=0.3934693402873666))
loader = dict(batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
              collate_fn=dict(type='default_collate'))
train_dataloader = dict(loader, dataset=dict(type='ProtocolToyDataset', split='train', seed=0),
                        sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(loader, dataset=dict(type='ProtocolToyDataset', split='val', seed=1))
test_dataloader = dict(loader, dataset=dict(type='ProtocolToyDataset', split='test', seed=2,
                                            length=5))
val_evaluator = [dict(type='Occ3DMetric', class_names=class_names, num_classes=18, free_label=17)]
test_evaluator = val_evaluator
