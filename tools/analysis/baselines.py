"""Trivial occupancy baselines, scored like any model (the floor every trained number must clear).

    python tools/analysis/baselines.py --data-root data/synthetic-nuscenes [--out outputs/baselines]
        [--baselines all-free,voxel-mode] [--ray] [--json FILE]

Baselines (predictions for every frame of the val info pkl):

* ``all-free``: every voxel free (17).
* ``voxel-mode``: at every voxel position (x, y, z) of the ego-centred grid, the label most often
  seen there over the train split (free included; ties go to the smaller label). The Occ3D grid
  moves with the ego car, so this is the "most frequent class per column" prior: road under the
  car, free space above it.

Each baseline's predictions are written as ``OUT/<baseline>/<scene>/<token>/pred.npz`` (the
``tools/test.py --dump-dir`` layout) and scored by ``tools/eval_occ.py`` (Occ3D mIoU with
mask_camera; RayIoU with ``--ray``). ``--json`` writes {baseline: scores} (percentages).
"""
import sys

from splattingocc.cli.baselines import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
