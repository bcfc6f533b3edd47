# Data loaders of Occ3D-nuScenes (real data defaults: 704 x 256 input, as BEVDet / RenderOcc).
# Grid, classes and cameras come from occ3d_nuscenes.py. Info pkls and 2D labels are written by
#   python tools/create_data.py nuscenes --root data/nuscenes --version v1.0-trainval
# A config for other data or sizes redefines the pipelines and updates the loaders (the values
# below are already baked into them): see configs/splattingocc/_tiny_synthetic.py.
from mmengine.config import read_base

with read_base():
    from .occ3d_nuscenes import *  # noqa: F401,F403

dataset_type = 'Occ3DNuScenesDataset'
data_root = 'data/nuscenes/'
train_ann_file = 'nuscenes_infos_train.pkl'
val_ann_file = 'nuscenes_infos_val.pkl'

input_size = (704, 256)  # (W, H) of the network input: 1600 x 900 scaled by 0.44, bottom 256 rows
label_downsample = 1  # 2D label maps at the input resolution
num_adjacent = 0  # adjacent keyframes on each side rendered for auxiliary rays

train_pipeline = [
    dict(type='LoadMultiViewImages', camera_names=camera_names),  # noqa: F405
    dict(type='LoadLabels2D', camera_names=camera_names),  # noqa: F405
    # BEVDet's image augmentation: scale jitter 0.94..1.11, random bottom crop and shift
    dict(type='ResizeCropImages', final_size=input_size, scale_range=(0.94, 1.11),
         crop_bottom_range=(0.0, 0.0), crop_x_range=(-1.0, 1.0)),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackOccInputs', label_downsample=label_downsample,
         ignore_label=ignore_label),  # noqa: F405
]
# the same plus the Occ3D ground truth, for configs with 3D supervision (use_3d_supervision=True)
train_pipeline_3d = train_pipeline[:-1] + [
    dict(type='LoadOcc3DLabels', occ_size=occ_size, num_classes=num_classes),  # noqa: F405
    train_pipeline[-1],
]
test_pipeline = [
    dict(type='LoadMultiViewImages', camera_names=camera_names),  # noqa: F405
    dict(type='ResizeCropImages', final_size=input_size),
    dict(type='LoadOcc3DLabels', occ_size=occ_size, num_classes=num_classes),  # noqa: F405
    dict(type='PackOccInputs', label_downsample=label_downsample,
         ignore_label=ignore_label),  # noqa: F405
]

train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file=train_ann_file,
                 camera_names=camera_names, num_adjacent=num_adjacent,  # noqa: F405
                 pipeline=train_pipeline, test_mode=False),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file=val_ann_file,
                 camera_names=camera_names, num_adjacent=0, pipeline=test_pipeline,  # noqa: F405
                 test_mode=True),
)
# test = val: nuScenes has no labelled test split (neither lidarseg nor Occ3D publish test labels),
# so real-data numbers are val numbers and must be labelled so; thresholds calibrated on val
# (tools/test.py --calibrate) are then scored on the split that chose them. The synthetic configs
# have a held-out test split (configs/splattingocc/_tiny_synthetic.py).
test_dataloader = val_dataloader

val_evaluator = dict(type='Occ3DMetric', class_names=class_names,  # noqa: F405
                     num_classes=num_classes, free_label=free_label,  # noqa: F405
                     pc_range=point_cloud_range, voxel_size=voxel_size,  # noqa: F405
                     use_camera_mask=True, metrics=['miou'], ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator
