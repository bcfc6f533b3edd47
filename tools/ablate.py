"""Gaussian-vs-NeRF (and other) ablations: every arm trained under the same budget, evaluated.

    python tools/ablate.py --base CONFIG --arms splat,nerf,3d,2d3d [--seeds 0,1]
                           (--budget-minutes M | --iters N) [--out DIR] [--evals 4] [--ray]
                           [--val-samples K] [--cfg-options k=v ...] [--log-file PATH]

Arms: 'splat' (the base as is), 'nerf' (the NeRF volume renderer), '3d' (3D supervision only),
'2d3d' (2D + 3D), 'seed' (fixed isotropic Gaussians), '3d+render' (3d plus GaussRender's
render-consistency loss), or name=key=value[,key=value...] for any other knob. Each (arm, seed) runs
tools/train.py and tools/test.py as subprocesses; a finished one is not rerun, a failed one is
reported and retried on the next call. DIR gets results.md, results.json and plots; with
--log-file PATH (e.g. log.txt) PATH gets an entry under the next free ID E<n>, without it no log
is written. All the logic is in splattingocc/experiments/.
"""
import sys

from splattingocc.engine.launch import run_main
from splattingocc.experiments.cli import main

if __name__ == '__main__':
    sys.exit(run_main(main))
