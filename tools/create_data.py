"""Dataset creation and preparation.

    # a procedural dataset in the exact nuScenes / Occ3D formats: train/val scenes (v1.0-mini)
    # and held-out test scenes (v1.0-test)
    python tools/create_data.py synthetic --root data/synthetic-nuscenes [--scenes N]
        [--samples-per-scene M] [--seed S] [--test-scenes T] [--test-seed S2] [--overwrite]
    # info pkls and 2D labels (real nuScenes or the synthetic dataset), with nuscenes-devkit:
    # v1.0-mini / v1.0-trainval -> *_infos_train.pkl + *_infos_val.pkl; v1.0-test (labelled in
    # the synthetic dataset only) -> *_infos_test.pkl
    python tools/create_data.py nuscenes --root DATA --version v1.0-mini|v1.0-trainval|v1.0-test
        [--out-dir DATA] [--sweeps K]

Protocol: train on train, choose every threshold and hyperparameter on val, report on test.
"""
import sys

from splattingocc.cli.create_data import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
