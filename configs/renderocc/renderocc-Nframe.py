# RenderOcc-style NeRF baseline of splattingocc-Nframe.py: only the renderer differs (volume
# rendering of a density grid; the head outputs a DensityGrid for it via scene_type='auto').
from mmengine.config import read_base

with read_base():
    from ..splattingocc._nframe import *  # noqa: F401,F403

# assignment (not update) so no splatting-renderer argument is merged in
model.renderer = dict(type='VolumeRenderer', step_ratio=0.5)  # noqa: F405
