"""Per-class diagnosis of a checkpoint: is a class lost in 2D (not recognised) or in 3D (wrong
geometry)?

    python tools/analysis/diagnose.py CONFIG CHECKPOINT [--max-samples N] [--json FILE]
                                      [--cfg-options k=v ...]

On the config's val dataset (its pipeline plus the LiDAR-projected 2D labels of the current
frame), per class: of the ground-truth voxels inside mask_camera, the share predicted occupied and
predicted right, the median read-out density there, the voxels predicted as the class and the
share whose cell of the lifted volume receives any frustum point of the LSS lift ("reach %"); of
the labelled pixels, the share whose rendered class is right, the share with no rendered surface
(alpha < 0.5) and the median |rendered depth - label|; of the labelled feature cells (the LSS depth
target: the nearest label of each cell, by that label's class), the lift's probability within one
depth bin and the median error of its expected depth (splattingocc/evaluation/diagnostics.py).
With a splatting renderer, also the Gaussians per sample the head predicts and the ones that reach
the render (after the renderer's opacity pruning).
Needs the 2D label files (tools/create_data.py nuscenes). One process, CPU or the first GPU.
"""
import sys

from splattingocc.cli.diagnose import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
