# The tiny SplattingOcc network for CPU training: a narrow ResNet, 6 cameras at a small input size,
# a COARSE prediction grid (Occ3D grid / grid_downsample: 50 x 50 x 8 voxels of 1.6 x 1.6 x 0.8 m,
# one Gaussian each) voxelized onto the 200 x 200 x 16 Occ3D grid at test time, the pure-torch
# splatting renderer and 6,144 rays per sample (1,024 per camera: rendering cost is dominated by
# the projection of the Gaussians, so more rays are almost free).
from mmengine.config import read_base

with read_base():
    from ..datasets.occ3d_nuscenes import *  # noqa: F401,F403

grid_downsample = [4, 4, 2]  # prediction grid = Occ3D grid / grid_downsample, per axis
pred_grid_size = [n // f for n, f in zip(occ_size, grid_downsample)]  # noqa: F405
pred_voxel_size = [v * f for v, f in zip(voxel_size, grid_downsample)]  # noqa: F405

context_channels = 32
volume_channels = 32

model = dict(
    type='SplattingOcc',
    backbone=dict(type='ResNet', depth='tiny', widths=[16, 32, 64, 128], stem_channels=16,
                  out_indices=[2, 3]),
    neck=dict(type='MergeNeck', in_channels=[64, 128], out_channels=64),  # stride 16
    # LSSViewTransform options tried and left off (log.txt, sessions 9-11): depth_convs=3,
    # lift_upsample=4 (s x s rays per cell: reaches every voxel, +56% time, no object gain),
    # ray_inputs=True (camera-ray directions into the depth net), semantic_classes=17 with
    # loss_image_sem=dict(type='ImageSemanticLoss') and volume_encoder in_channels 49 (the
    # class probabilities of each cell lifted with its context, session 11), lift_mode='hard'
    # (each cell at its argmax bin only) and a depth-pretrained lift (session 12),
    # ground_contact=True (a ground-contact depth prior) and the detector's label_lift_prob
    # (teacher forcing of the lift, session 13)
    view_transform=dict(type='LSSViewTransform', in_channels=64, out_channels=context_channels,
                        depth_bins=[1.0, 45.0, 1.0], pc_range=point_cloud_range,  # noqa: F405
                        grid_size=pred_grid_size),
    # two 3D residual blocks: +1.6 mIoU over one on two seeds at about the same cost per
    # iteration (17.43 / 17.32 vs 15.95 / 15.63 on val, log.txt, session 6)
    # channels_last: the same function in the NDHWC layout, about 18% faster in the encoder on
    # a CPU (log.txt, session 7; the demo was re-measured with it, session 8)
    volume_encoder=dict(type='VolumeEncoder3D', in_channels=context_channels,
                        channels=volume_channels, num_blocks=2, channels_last=True),
    head=dict(type='GaussianHead', in_channels=volume_channels,
              pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
              # occupied classes 0..16 only; free space = low density
              num_classes=num_classes - 1,  # noqa: F405
              # sigma from half an Occ3D voxel (so the voxelizer sees every Gaussian) to half a
              # prediction voxel per axis
              min_scale=[v / 2 for v in voxel_size],  # noqa: F405
              max_scale=[v / 2 for v in pred_voxel_size],
              hidden_channels=32, init_opacity=0.1,
              scene_type='auto'),  # 'density' when the renderer is the VolumeRenderer
    renderer=dict(type='TorchSplatRenderer', eps2d=0.3, near_plane=0.01, tile_size=16),
    voxelizer=dict(type='GaussianVoxelizer', pc_range=point_cloud_range,  # noqa: F405
                   occ_size=occ_size, voxel_size=voxel_size, num_classes=num_classes,  # noqa: F405
                   free_label=free_label, density_threshold=0.5, cutoff=3.0,  # noqa: F405
                   label_dtype='uint8'),
    pixel_sampler=dict(type='PixelSampler', mode='class_weighted', num_rays=6144,
                       num_classes=num_classes - 1,  # noqa: F405
                       weight_rule='renderocc', beta=0.005,
                       ignore_index=ignore_label),  # noqa: F405
    loss_depth=dict(type='SILogLoss', lam=0.85, loss_weight=1.0),
    loss_sem=dict(type='RenderedCELoss', class_weight='batch', power=0.5, loss_weight=1.0),
    loss_lss_depth=dict(type='LSSDepthLoss', loss_weight=0.2),
    # depth labels also say the camera ray is empty before its hit: the density at 8 points per
    # ray from 0.5 m up to 0.4 m above a ground hit (driveable_surface, other_flat, sidewalk,
    # terrain) or 0.8 m before any other hit is pushed to 0 (losses.py; --cfg-options
    # model.loss_free_space=None trains without it)
    # sky_rays: 256 pixels per sample above every LiDAR return of their column (and its
    # neighbours) are empty up to 60 m; surface_samples: 4 more free points in the last 2 m
    # before each stop
    loss_free_space=dict(type='FreeSpaceLoss', loss_weight=1.0, samples_per_ray=8, near=0.5,
                         flat_classes=[11, 12, 13, 14], flat_margin=0.4, margin=0.8, window=2,
                         sky_rays=256, surface_samples=4),
    # each labelled hit point takes its pixel's class (CE of the voxelizer's class scores there)
    # and, weakly, a density of at least occ_target (hinge; losses.py, SurfaceLoss). A stronger
    # occupancy term fills space no ray labels (log.txt, session 4); 0.1 with the free-space
    # options above gave the best val numbers (log.txt, session 5)
    loss_surface=dict(type='SurfaceLoss', occ_weight=0.1, occ_target=1.0, sem_weight=1.0,
                      class_weight='batch', power=0.5, window=2),
    # optional terms, off by default (add e.g. with --cfg-options model.loss_opacity.type=...):
    # loss_opacity=dict(type='OpacityEntropyLoss', loss_weight=0.01),
    # loss_distortion=dict(type='RayDistortionLoss', loss_weight=0.01),
    loss_3d=dict(type='Occupancy3DLoss', occ_weight=1.0, sem_weight=1.0, class_weight='batch',
                 power=0.5),
    use_2d_supervision=True,
    use_3d_supervision=False,
    use_mask_camera=False,
    loss_3d_grid='pred',  # 3D loss on the 50 x 50 x 8 prediction grid (labels: block majority)
    aux_weight=0.3,
    dynamic_classes=dynamic_classes,  # noqa: F405
)
