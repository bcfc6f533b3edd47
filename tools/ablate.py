"""Fair variant comparisons: every arm trained under the same budget(s), its read-out calibrated
on val, evaluated on test, reported over seeds with 95 % intervals.

    python tools/ablate.py --base CONFIG --arms splat,nerf,seed,3d,2d3d --seeds 0,1,2
                           [--iters N] [--budget-minutes M] [--out DIR] [--evals 4]
                           [--eval segm ray ap render] [--pairs splat:nerf,2d3d:3d]
                           [--val-samples K] [--cfg-options k=v ...] [--log-file PATH]

Arms: 'splat' (the base as is), 'nerf' (RenderOcc), 'seed' (fixed isotropic Gaussians), 'sparse'
(a budget of free-mean Gaussians), '3d' (3D supervision only, argmax read-out), '3d+render' (3d
plus GaussRender's render-consistency loss), '2d3d' (2D + 3D), or name=key=value[,key=value...] for
any other knob. --iters and --budget-minutes together give an equal-iterations and an
equal-wall-clock table from one call. Each (budget, arm, seed) runs tools/train.py, tools/test.py
--calibrate (on val, for a read-out with a threshold) and tools/test.py --eval (on test) as
subprocesses; a finished one is not rerun, a failed one is reported and retried on the next
call. DIR gets results.md, results.json and plots; with --log-file PATH (e.g. log.txt) PATH gets
an entry under the next free ID E<n>, without it no log is written. All the logic is in
splattingocc/experiments/.
"""
import sys

from splattingocc.engine.launch import run_main
from splattingocc.experiments.cli import main

if __name__ == '__main__':
    sys.exit(run_main(main))
