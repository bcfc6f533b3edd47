# SplattingOcc on real nuScenes + Occ3D-nuScenes with adjacent-frame auxiliary rays, ResNet-50,
# 8 GPUs x batch 1. Everything (and the GPU memory estimate) is in _nframe.py.
from mmengine.config import read_base

with read_base():
    from ._nframe import *  # noqa: F401,F403
