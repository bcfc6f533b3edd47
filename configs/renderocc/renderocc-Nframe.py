# RenderOcc-style NeRF baseline of splattingocc-Nframe.py: a density grid (DensityGridHead on
# the full Occ3D grid) rendered by NeRF volume rendering (VolumeRenderer) in place of the
# Gaussians and gsplat; network, supervision and training as there. Not yet a faithful RenderOcc
# (density parameterisation, sampling, regularisers and read-out differ from upstream).
from mmengine.config import read_base

with read_base():
    from ..splattingocc._nframe import *  # noqa: F401,F403

model.head = dict(type='DensityGridHead', in_channels=volume_channels,  # noqa: F405
                  pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
                  num_classes=num_classes - 1, hidden_channels=64,  # noqa: F405
                  edge=min(voxel_size))  # noqa: F405
# assignment (not update) so no splatting-renderer argument is merged in
model.supervision[0].renderer = dict(type='VolumeRenderer', step_ratio=0.5)  # noqa: F405
