# RenderOcc (pmj110119/RenderOcc) on the real-data setup of splattingocc-Nframe.py (ResNet-50,
# LSS lift onto the 200 x 200 x 16 Occ3D grid, frames t-1 .. t+1 rendered, 38,400 rays per
# sample): RenderOcc's head, volume renderer, loss set and read-out in place of the Gaussians
# (configs/renderocc/renderocc-tiny-synthetic.py says what each is; docs/renderocc-fidelity.md
# compares each with upstream's code). Upstream renders 7 frames (t-3 .. t+3) with a
# Swin-B BEVStereo network; backbone, frames and schedule here are the splat arm's.
from mmengine.config import read_base

with read_base():
    from ..splattingocc._nframe import *  # noqa: F401,F403

model.head = renderocc['head']  # noqa: F405
model.supervision = renderocc['supervision']  # noqa: F405
model.readout.threshold = renderocc['readout_threshold']  # noqa: F405
