# SplattingOcc, tiny network on the CPU, synthetic dataset, 2D supervision only (the demo's
# default). Everything is in _tiny_synthetic.py (an importable name for the variant configs).
from mmengine.config import read_base

with read_base():
    from ._tiny_synthetic import *  # noqa: F401,F403
