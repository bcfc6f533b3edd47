# RenderOcc-style NeRF baseline of splattingocc-tiny-synthetic.py: the same network, supervision
# and training, with a density grid for a representation (DensityGridHead on the same 50 x 50 x 8
# grid) and NeRF volume rendering (VolumeRenderer) for the renderer. Not yet a faithful RenderOcc
# (density parameterisation, sampling, regularisers and read-out differ from upstream).
from mmengine.config import read_base

with read_base():
    from ..splattingocc._tiny_synthetic import *  # noqa: F401,F403

model.head = dict(type='DensityGridHead', in_channels=volume_channels,  # noqa: F405
                  pc_range=point_cloud_range, grid_size=pred_grid_size,  # noqa: F405
                  num_classes=num_classes - 1, hidden_channels=32,  # noqa: F405
                  edge=min(voxel_size))  # noqa: F405
# assignment (not update) so no splatting-renderer argument is merged in
model.supervision[0].renderer = dict(type='VolumeRenderer', step_ratio=0.5)  # noqa: F405
