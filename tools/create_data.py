"""Dataset creation and preparation.

    # a procedural dataset in the exact nuScenes / Occ3D formats
    python tools/create_data.py synthetic --root data/synthetic-nuscenes [--scenes N]
        [--samples-per-scene M] [--seed S] [--overwrite]
    # info pkls and 2D labels (real nuScenes or the synthetic dataset), with nuscenes-devkit
    python tools/create_data.py nuscenes --root DATA --version v1.0-mini|v1.0-trainval
        [--out-dir DATA] [--sweeps K]
"""
import sys

from splattingocc.cli.create_data import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
