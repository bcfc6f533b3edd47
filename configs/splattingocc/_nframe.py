# The setup of configs/splattingocc/splattingocc-Nframe.py (importable name for variants).
# SplattingOcc on real nuScenes + Occ3D-nuScenes, 2D supervision only (LiDAR-projected depth and
# semantics), with auxiliary rays from adjacent keyframes (RenderOcc): frames t-k .. t+k render
# too, weight 0.3, dynamic classes ignored there. ResNet-50 at 704 x 256, 200 x 200 x 16 Gaussians,
# gsplat, 8 GPUs x batch 1, AdamW 2e-4, 12 epochs.
#   python tools/create_data.py nuscenes --root data/nuscenes --version v1.0-trainval --sweeps 1
#   bash tools/dist_train.sh configs/splattingocc/splattingocc-Nframe.py 8
#   bash tools/dist_test.sh configs/splattingocc/splattingocc-Nframe.py CKPT 8 --eval segm ray
#
# Expected GPU memory per GPU (ARITHMETIC from the main tensors, fp32, batch 1, not measured):
#   ResNet-50 activations kept for backward, 6 images at 704 x 256 (~3.6x a 224^2 image at
#     ~90 MB each)                                                              ~2.0 GB
#   LSS lift: <= 6 x 88 x 16 x 44 = 372k frustum points x 32 channels (+ gathers)  ~0.2 GB
#   lifted volume 32 x 200 x 200 x 16 = 20.5M floats                               ~0.1 GB
#   3D encoder, 64 channels: 41M floats = 164 MB per map, ~3 saved maps per conv x 5 convs ~2.5 GB
#   Gaussian head: hidden 64 (2 maps) + 640k Gaussians x ~60 values (params, softmax)  ~0.5 GB
#   gsplat, 18 cameras (3 frames) dense at 704 x 256: 18 channels out (233 MB), projected
#     Gaussians and tile intersections (packed), saved for backward                 ~0.8 GB
#   parameters 25.5M x 4 (weights, grads, AdamW m and v)                            ~0.4 GB
#   CUDA context and allocator slack                                                ~1.5 GB
#   total                                                                           ~8 GB per GPU
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.occ3d_nuscenes_data import *  # noqa: F401,F403
    from .._base_.models.splattingocc_r50 import *  # noqa: F401,F403
    from .._base_.schedules.schedule_12e import *  # noqa: F401,F403

num_adjacent = 1  # k: frames t-1, t, t+1 render (F = 3, 18 cameras; 38,400 rays split over them)
train_dataloader.dataset.update(num_adjacent=num_adjacent)  # noqa: F405
