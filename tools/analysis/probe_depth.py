"""Train the image half of a config alone on the LSS depth loss and score its depth per class.

    python tools/analysis/probe_depth.py CONFIG [--iters 1000] [--lr 1e-3] [--seed 0]
                                         [--log-every 100] [--max-val-samples N] [--save CKPT]
                                         [--json FILE] [--cfg-options k=v ...]

The backbone, neck and LSS depth net of CONFIG's model are trained alone (no lift, no 3D layers,
no rendering) on the train split's LiDAR depth labels: the LSS depth loss (``lss_depth_loss``,
weight 1) on the nearest label of every cell of the depth map (``lift_upsample`` included), with
AdamW (weight decay 0.01) and a one-cycle schedule (5% warm-up), batch 1, the config's train
pipeline. Then, on the val split, per class of each labelled cell's nearest label (classes 0-10
are the objects): the share of cells whose most probable bin is within one bin of the label's
("argmax +-1"), the probability mass within one bin ("mass +-1", tools/analysis/diagnose.py's
lift column) and the median |expected depth - label|. A few minutes on a CPU instead of a whole
training run: a quick measure of a depth net before the whole model is trained with it (the
lift's depth is what the demo's objects lack, README). ``--save`` writes the whole model's state
dict (its 3D half as initialised) for ``load_from``. One process, CPU or the first GPU.
"""
import sys

from splattingocc.cli.probe_depth import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
