# RenderOcc-style NeRF baseline of splattingocc-tiny-synthetic.py: the same network and training,
# only the renderer differs (volume rendering of a density grid; the head's scene_type='auto'
# makes it output a DensityGrid for this renderer).
from mmengine.config import read_base

with read_base():
    from ..splattingocc._tiny_synthetic import *  # noqa: F401,F403

# assignment (not update) so no splatting-renderer argument is merged in
model.renderer = dict(type='VolumeRenderer', step_ratio=0.5)  # noqa: F405
