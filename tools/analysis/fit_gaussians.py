"""What can the config's Gaussian grid represent? Fit its Gaussians directly to Occ3D labels.

    python tools/analysis/fit_gaussians.py CONFIG [--frames 0,1] [--steps 300] [--lr 0.05]
                                           [--json FILE] [--cfg-options k=v ...]

No network and no images: for each chosen val frame, the raw values of one Gaussian per cell of
the head's grid (offset, scale, rotation, opacity, class logits; mapped to Gaussians exactly as the
head maps its outputs, ``GaussianHead.decode``) are optimised with Adam against the frame's own
Occ3D labels inside mask_camera (``Occupancy3DLoss``: occupancy BCE + class-balanced CE on the
field's grid), then read out by the config's read-out and scored with the Occ3D metric. The
result is a representation bound: the mIoU the prediction grid reaches when the labels are known,
so a trained model's gap to it is learning, not resolution. One process, CPU or the first GPU
(E30: 300 steps per frame of the tiny config's 20,000 Gaussians took minutes on 2 cores).
"""
import sys

from splattingocc.cli.fit_gaussians import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
