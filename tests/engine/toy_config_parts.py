# The toy model, evaluation data and metric shared by toy_config.py and toy_config_epoch.py (each
# adds a schedule and its own train_dataloader). Needs tests/engine on PYTHONPATH (the tests set
# it) for custom_imports.
custom_imports = dict(imports=['toy_components'], allow_failed_imports=False)

model = dict(type='ToyOccModel', num_features=8, hidden=16, grid=(4, 4, 2))
val_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(type='ToyOccDataset', length=5, seed=1),
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'))
test_dataloader = val_dataloader
val_evaluator = [dict(type='ToyOccMetric', metrics=['miou'])]  # a list: see note in tools/test.py
test_evaluator = val_evaluator
