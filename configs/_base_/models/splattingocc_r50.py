# The real-data SplattingOcc network: ResNet-50 at 704 x 256, LSS lift (88 depth bins, BEVDet's
# 1..45 m by 0.5 m) onto the full Occ3D grid (200 x 200 x 16, one Gaussian per 0.4 m voxel),
# a 3D conv encoder, gsplat rendering (CUDA; a clear error where gsplat cannot run, never a
# silent fallback: on CPUs pass --cfg-options model.supervision.0.renderer.backend=torch),
# RenderOcc's 38,400 class-weighted rays per sample.
from mmengine.config import read_base

with read_base():
    from ..datasets.occ3d_nuscenes import *  # noqa: F401,F403

pred_grid_size = occ_size  # noqa: F405  one Gaussian per Occ3D voxel
context_channels = 32
volume_channels = 64

# the 2D supervision: gsplat renders the Gaussians at RenderOcc's 38,400 class-weighted label
# pixels per sample (split over the cameras of all rendered frames)
ray_supervision = dict(
    type='RaySupervision',
    renderer=dict(type='SplatRenderer', backend='gsplat', eps2d=0.3, near_plane=0.01,
                  tile_size=16, packed=True),
    pixel_sampler=dict(type='PixelSampler', mode='class_weighted', num_rays=38400,
                       num_classes=num_classes - 1,  # noqa: F405
                       weight_rule='renderocc', beta=0.005,
                       ignore_index=ignore_label),  # noqa: F405
    aux_weight=0.3,
    dynamic_classes=dynamic_classes,  # noqa: F405
    losses=[
        dict(type='SILogLoss', lam=0.85, loss_weight=1.0),
        dict(type='RenderedCELoss', class_weight='batch', power=0.5, loss_weight=1.0),
        # depth labels also say the camera ray is empty before its hit: the density at 8 points
        # per ray from 0.5 m up to 0.4 m above a ground hit (driveable_surface, other_flat,
        # sidewalk, terrain) or 0.8 m before any other hit is pushed to 0
        dict(type='FreeSpaceLoss', loss_weight=1.0, samples_per_ray=8, near=0.5,
             flat_classes=[11, 12, 13, 14], flat_margin=0.4, margin=0.8),
        # each labelled hit point takes its pixel's class (semantic half only). E11, E14: chosen
        # on the synthetic val split; the tiny config's weak occupancy hinge, open-sky rays and
        # near-surface free samples are not here until they are checked on real nuScenes, whose
        # sky pixels and beam gaps differ
        dict(type='SurfaceLoss', occ_weight=0.0, sem_weight=1.0, class_weight='batch',
             power=0.5),
    ],
)
# the 3D supervision of 3D-supervised variants, as in the tiny model: cross entropy over all 18
# labels (free included) on the Occ3D grid inside mask_camera, uniform class weights; such a
# variant sets head.num_classes=num_classes and readout.threshold=None (the argmax read-out)
volume_supervision = dict(
    type='VolumeSupervision', pc_range=point_cloud_range,  # noqa: F405
    num_classes=num_classes, free_label=free_label,  # noqa: F405
    grid_size=None, mask_camera=True,
    losses=[dict(type='SemanticVoxelCELoss', class_weight=None)])

# GaussRender's render-consistency loss for a 3D-supervised variant (as the tiny model's
# render_consistency, with GaussRender's own grid and bird's-eye view: the 0.4 m Occ3D grid, a
# 400 x 400 image 80 m up; docs/render-consistency.md). The camera renders at our 704 x 256 input
# (camera_scale=1.0), not at GaussRender's raw 1600 x 900: that input is a 0.44 x resize and crop
# of the raw image, so camera_scale=1600 / 704 would match GaussRender's pixel density on the
# cropped view at about 5 x the pixels. No config uses it yet
render_consistency = dict(
    type='RenderConsistencySupervision',
    renderer=dict(type='SplatRenderer', backend='gsplat', eps2d=0.3, near_plane=0.01,
                  tile_size=16, packed=True),
    pc_range=point_cloud_range, num_classes=num_classes,  # noqa: F405
    free_label=free_label,  # noqa: F405
    grid_size=None, gaussian_scale=0.675, opacity='density', mask_camera=False,
    num_cameras=1,
    camera_weights=[2.0 if n in ('CAM_FRONT', 'CAM_BACK') else 1.0
                    for n in camera_names],  # noqa: F405
    camera_scale=1.0, bev_size=400, bev_height=None, pixels_per_view=None,
    loss_weights=dict(cam_sem=1.0, cam_depth=1.0, bev_sem=1.0, bev_depth=1.0),
    depth_norm=dict(cam=50.0, bev=100.0))

readout_threshold = 0.3934693402873666  # 1 - exp(-0.5)
# The faithful RenderOcc arm (configs/renderocc/renderocc-Nframe.py and tools/ablate.py's
# nerf arm take it from here): RenderOcc's head, renderer, read-out and loss set in place of the
# Gaussians, their renderer and their losses; docs/renderocc-fidelity.md lists each setting with
# its upstream file and line and the test of our formula.
renderocc = dict(
    # on the Occ3D grid itself (the prediction grid here)
    head=dict(type='RenderOccHead', in_channels=volume_channels,
              pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
              out_grid_size=occ_size, num_classes=num_classes - 1,  # noqa: F405
              out_dim=32, final_softplus=True, alpha_init=1e-6, interval=0.5, step_size=0.5),
    supervision=[
        dict(type='RaySupervision',
             renderer=dict(type='RenderOccRenderer', radius=39.0, step_size=0.5, interval=0.5,
                           alpha_init=1e-6, fast_color_thres=1e-7, stop_transmittance=1e-3),
             # RenderOcc's 38,400 rays per sample (max_ray_nums), LiDAR-labelled pixels only;
             # every label kept (no box filter: the 52 m rule below)
             pixel_sampler=dict(type='PixelSampler', mode='class_weighted', num_rays=38400,
                                num_classes=num_classes - 1,  # noqa: F405
                                weight_rule='renderocc', beta=0.005, require_depth=True,
                                ignore_index=ignore_label),  # noqa: F405
             aux_weight=0.3, dynamic_classes=dynamic_classes,  # noqa: F405
             label_range=None,
             losses=[
                 # class weights: None = RenderOcc's 1 / log(f + 0.001) of its Occ3D counts
                 dict(type='RenderOccSemanticLoss', class_weight=None, loss_weight=1.0,
                      max_depth=52.0),
                 dict(type='RenderOccDepthLoss', lam=0.85, loss_weight=1.0, max_depth=52.0,
                      radius=39.0),
                 dict(type='RenderOccEntropyLoss', loss_weight=0.01, max_depth=52.0),
                 dict(type='RenderOccDistortionLoss', loss_weight=0.01, max_depth=52.0),
             ]),
        # use_lss_depth_loss=True upstream; the splat arm's lift loss, so both arms lift alike
        dict(type='LSSDepthLoss', loss_weight=0.2),
    ],
    # raw density > 8.5 (test_threshold), as the opacity of one 0.4 m voxel:
    # fields.renderocc.opacity_threshold(8.5) = sigmoid(8.5 + log(1e-6 / (1 - 1e-6)))
    readout_threshold=0.004890737,
)

model = dict(
    type='SplattingOcc',
    # ImageNet weights: torchvision's resnet50 state dict saved locally (nothing is downloaded);
    # set pretrained=None to train from scratch
    backbone=dict(type='ResNet', depth=50, out_indices=[2, 3], frozen_stages=-1, norm_eval=False,
                  pretrained='checkpoints/resnet50-0676ba61.pth'),
    neck=dict(type='MergeNeck', in_channels=[1024, 2048], out_channels=256),  # stride 16
    view_transform=dict(type='LSSViewTransform', in_channels=256, out_channels=context_channels,
                        depth_bins=[1.0, 45.0, 0.5], pc_range=point_cloud_range,  # noqa: F405
                        grid_size=pred_grid_size, mid_channels=256),
    volume_encoder=dict(type='VolumeEncoder3D', in_channels=context_channels,
                        channels=volume_channels, num_blocks=2),
    head=dict(type='GaussianHead', in_channels=volume_channels,
              pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
              # occupied classes 0..16 only; free space = low density
              num_classes=num_classes - 1,  # noqa: F405
              min_scale=[v / 4 for v in voxel_size],  # noqa: F405
              max_scale=list(voxel_size),  # noqa: F405
              hidden_channels=64, init_opacity=0.1, cutoff=3.0, query_window=2),
    # the threshold is on the occupancy scale shared by every representation, the opacity of one
    # Occ3D voxel (Gaussians: 1 - exp(-density)); 1 - exp(-0.5) picks exactly the voxels of the
    # former threshold 0.5 on the Gaussian density. A default only: tools/test.py --calibrate
    # chooses a checkpoint's threshold on val, and evaluations on test use that one
    readout=dict(type='OccupancyReadout', pc_range=point_cloud_range,  # noqa: F405
                 occ_size=occ_size, voxel_size=voxel_size, num_classes=num_classes,  # noqa: F405
                 free_label=free_label, threshold=readout_threshold,  # noqa: F405
                 label_dtype='uint8'),
    supervision=[
        ray_supervision,
        dict(type='LSSDepthLoss', loss_weight=0.2),
    ],
)

# the sparse variant (issue 26; splattingocc-Nframe-sparse.py and tools/ablate.py's sparse arm):
# a budget of 25,000 Gaussians with free means (GaussianFlowOcc predicts 10,000, GaussianFormer's
# non-empty variant 25,600) out of the 640,000 cells, started at the top-25,000 cells of a
# predicted occupancy prior and refined in 2 steps by the volume features at their means (each
# step moves a mean at most one 0.4 m cell). Sizes from a quarter voxel to 4 voxels across and 2
# up (the per-voxel head's largest is one voxel). Not tuned, not run on real data
sparse_head = dict(type='SparseGaussianHead', in_channels=volume_channels,
                   pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
                   num_gaussians=25000, num_classes=num_classes - 1,  # noqa: F405
                   min_scale=[v / 4 for v in voxel_size],  # noqa: F405
                   max_scale=[4 * voxel_size[0], 4 * voxel_size[1],  # noqa: F405
                              2 * voxel_size[2]],  # noqa: F405
                   hidden_channels=64, num_refine=2, init_opacity=0.1, cutoff=3.0)
