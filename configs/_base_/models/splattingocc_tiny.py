# The tiny SplattingOcc network for CPU training: a narrow ResNet, 6 cameras at a small input size,
# a COARSE prediction grid (Occ3D grid / grid_downsample: 50 x 50 x 8 voxels of 1.6 x 1.6 x 0.8 m,
# one Gaussian each) read out onto the 200 x 200 x 16 Occ3D grid at test time, the pure-torch
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

# the 2D supervision: render the Gaussians at 6,144 class-weighted label pixels per sample and
# score depth and semantics, plus the line-of-sight terms on the field itself
ray_supervision = dict(
    type='RaySupervision',
    renderer=dict(type='TorchSplatRenderer', eps2d=0.3, near_plane=0.01, tile_size=16),
    pixel_sampler=dict(type='PixelSampler', mode='class_weighted', num_rays=6144,
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
        # sidewalk, terrain) or 0.8 m before any other hit is pushed to 0; sky_rays: 256 pixels
        # per sample above every LiDAR return of their column (and its neighbours) are empty up
        # to 60 m; surface_samples: 4 more free points in the last 2 m before each stop
        dict(type='FreeSpaceLoss', loss_weight=1.0, samples_per_ray=8, near=0.5,
             flat_classes=[11, 12, 13, 14], flat_margin=0.4, margin=0.8, sky_rays=256,
             surface_samples=4),
        # each labelled hit point takes its pixel's class (CE of the field's class scores there)
        # and, weakly, a density of at least occ_target (hinge). E11: a strong occupancy term
        # fills space no ray labels; E14: weight 0.1 with the sky rays and surface samples above,
        # ahead on two seeds (chosen on the val split)
        dict(type='SurfaceLoss', occ_weight=0.1, occ_target=1.0, sem_weight=1.0,
             class_weight='batch', power=0.5),
        # optional terms, off by default: dict(type='RayDistortionLoss', loss_weight=0.01)
    ],
)
# the 3D supervision of the 3D-supervised variants (*-3d.py, *-2d3d.py and tools/ablate.py's 3d
# and 2d3d arms), as the 3D baselines of BEVStereo-occ and RenderOcc: cross entropy over all 18
# labels (free included) of the Gaussians voxelized onto the Occ3D grid, inside mask_camera, uniform
# class weights (BEVStereo-occ's unweighted CrossEntropyLoss). The head then predicts 18 classes
# and the read-out takes the argmax (threshold=None): see the variant configs
volume_supervision = dict(
    type='VolumeSupervision', pc_range=point_cloud_range,  # noqa: F405
    num_classes=num_classes, free_label=free_label,  # noqa: F405
    grid_size=None, mask_camera=True,
    losses=[dict(type='SemanticVoxelCELoss', class_weight=None)])

# GaussRender's render-consistency loss for the 3D-supervised variants (*-3d-render.py and
# tools/ablate.py's 3d+render arm): the predicted occupancy (the field on the render grid: Gaussians
# at its voxel centres, opacity = the field's voxel occupancy, the class probabilities as colours)
# and the ground truth (a one-hot Gaussian per occupied voxel) rendered into one of the sample's
# cameras (front and back drawn twice as often as the others) and a bird's-eye view, L1 on the
# semantics (free space as background) and on the accumulated depth (/ 50 m, / 100 m), weights 1
# each next to the cross entropy's 1 (GaussRender: 10 on each render term and 10 on its CE, plus
# a Lovasz term of weight 1). docs/render-consistency.md gives every setting's upstream file and
# line. Cheaper than GaussRender for a CPU: a render grid of 0.8 m voxels (Occ3D grid / 2 per
# axis; GaussRender: the 0.4 m grid, grid_size=None), the cameras at the label resolution (half
# the 256 x 144 input: 128 x 72; GaussRender: the raw 1600 x 900 camera image), a 100 x 100
# bird's-eye image (0.8 m per pixel at z = 0; GaussRender: 400 x 400 over its 80 m box)
render_downsample = [2, 2, 2]
render_consistency = dict(
    type='RenderConsistencySupervision',
    renderer=dict(type='TorchSplatRenderer', eps2d=0.3, near_plane=0.01),
    pc_range=point_cloud_range, num_classes=num_classes,  # noqa: F405
    free_label=free_label,  # noqa: F405
    grid_size=[n // f for n, f in zip(occ_size, render_downsample)],  # noqa: F405
    gaussian_scale=0.675, opacity='density', mask_camera=False,
    num_cameras=1,
    camera_weights=[2.0 if n in ('CAM_FRONT', 'CAM_BACK') else 1.0
                    for n in camera_names],  # noqa: F405
    camera_scale=0.5, bev_size=100, bev_height=None, pixels_per_view=None,
    loss_weights=dict(cam_sem=1.0, cam_depth=1.0, bev_sem=1.0, bev_depth=1.0),
    depth_norm=dict(cam=50.0, bev=100.0))

readout_threshold = 0.3934693402873666  # 1 - exp(-0.5)
# The faithful RenderOcc arm (configs/renderocc/renderocc-tiny-synthetic.py and tools/ablate.py's
# nerf arm take it from here): RenderOcc's head, renderer, read-out and loss set in place of the
# Gaussians, their renderer and their losses; docs/renderocc-fidelity.md lists each setting with
# its upstream file and line and the test of our formula.
renderocc = dict(
    # the 50 x 50 x 8 volume upsampled to RenderOcc's 200 x 200 x 16 before the head's MLPs
    head=dict(type='RenderOccHead', in_channels=volume_channels,
              pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
              out_grid_size=occ_size, num_classes=num_classes - 1,  # noqa: F405
              out_dim=32, final_softplus=True, alpha_init=1e-6, interval=0.5, step_size=0.5),
    supervision=[
        dict(type='RaySupervision',
             renderer=dict(type='RenderOccRenderer', radius=39.0, step_size=0.5, interval=0.5,
                           alpha_init=1e-6, fast_color_thres=1e-7, stop_transmittance=1e-3),
             # the splat arm's rays (6,144 per sample), LiDAR-labelled pixels only (RenderOcc's
             # rays are LiDAR points); every label kept (no box filter: the 52 m rule below)
             pixel_sampler=dict(type='PixelSampler', mode='class_weighted', num_rays=6144,
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
    backbone=dict(type='ResNet', depth='tiny', widths=[16, 32, 64, 128], stem_channels=16,
                  out_indices=[2, 3]),
    neck=dict(type='MergeNeck', in_channels=[64, 128], out_channels=64),  # stride 16
    # LSSViewTransform options tried and left off: depth_convs=3 (E32), lift_upsample=4 (E35),
    # ray_inputs=True (E36), semantic_classes=17 with an ImageSemanticLoss supervision and
    # volume_encoder in_channels 49 (E39, E41), lift_mode='hard' and a depth-pretrained lift
    # (E44), ground_contact=True and label_lift_prob (E45)
    view_transform=dict(type='LSSViewTransform', in_channels=64, out_channels=context_channels,
                        depth_bins=[1.0, 45.0, 1.0], pc_range=point_cloud_range,  # noqa: F405
                        grid_size=pred_grid_size),
    # E17: two 3D residual blocks ahead of one on two seeds at about the same cost per iteration;
    # E24: channels_last is the same function in the NDHWC layout, a faster encoder on a CPU
    volume_encoder=dict(type='VolumeEncoder3D', in_channels=context_channels,
                        channels=volume_channels, num_blocks=2, channels_last=True),
    head=dict(type='GaussianHead', in_channels=volume_channels,
              pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
              # occupied classes 0..16 only; free space = low density
              num_classes=num_classes - 1,  # noqa: F405
              # sigma from half an Occ3D voxel (so the read-out sees every Gaussian) to half a
              # prediction voxel per axis
              min_scale=[v / 2 for v in voxel_size],  # noqa: F405
              max_scale=[v / 2 for v in pred_voxel_size],
              hidden_channels=32, init_opacity=0.1, cutoff=3.0, query_window=2),
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
        # optional priors, off by default: dict(type='OpacityEntropyLoss', loss_weight=0.01)
    ],
)

# the seed code's variant ("density as opacity", *-seed.py and tools/ablate.py's seed arm): one
# Gaussian at each prediction voxel's centre, identity rotation and one fixed isotropic scale,
# only opacity and classes learned. The scale is not tuned: 0.6 m, between half the cell's
# vertical (0.4 m) and horizontal (0.8 m) edge
seed_head = dict(type='FixedGaussianHead', in_channels=volume_channels,
                 pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
                 num_classes=num_classes - 1, scale=0.6,  # noqa: F405
                 hidden_channels=32, init_opacity=0.1, cutoff=3.0, query_window=2)

# the sparse variant (issue 26; *-sparse.py and tools/ablate.py's sparse arm): a budget of 4,000
# Gaussians with free means (a fifth of the 20,000 cells; a synthetic frame has ~7,000 occupied
# cells, ~1,500 of them inside mask_camera), started at the top-4,000 cells of a predicted
# occupancy prior and refined in 2 steps by the volume features at their means (each step moves
# a mean at most one cell). Sizes from half an Occ3D voxel to one prediction voxel per axis
# (twice the per-voxel head's largest: 5x fewer Gaussians must cover the same surfaces). Not tuned
sparse_head = dict(type='SparseGaussianHead', in_channels=volume_channels,
                   pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
                   num_gaussians=4000, num_classes=num_classes - 1,  # noqa: F405
                   min_scale=[v / 2 for v in voxel_size],  # noqa: F405
                   max_scale=list(pred_voxel_size), hidden_channels=32, num_refine=2,
                   init_opacity=0.1, cutoff=3.0)
