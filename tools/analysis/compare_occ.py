"""Paired comparison of two folders of occupancy predictions on the same frames, with a bootstrap
interval for the difference of their Occ3D scores.

    python tools/analysis/compare_occ.py --pred-dir A --ref-dir B --data-root DATA \
        [--mask camera|lidar|none] [--bootstrap 2000] [--unit frame|scene] [--seed 0] \
        [--info PKL] [--json FILE]

Both folders are read as ``tools/eval_occ.py`` reads one (DIR/<scene>/<token>/pred.npz, e.g. from
``tools/test.py --dump-dir`` or ``tools/analysis/baselines.py``). The frames must be the same in
both (a frame missing from one is an error naming it).

* Point estimates: mIoU, geometry IoU and per-class IoU of A and of B over all the frames, as
  ``tools/eval_occ.py`` computes them (one confusion matrix over the split, Occ3D's protocol),
  and A - B.
* Bootstrap (paired): R resamples, with replacement, of the units (frames, or whole scenes with
  ``--unit scene``: the frames of one scene are correlated, so a frame bootstrap on few scenes
  gives too narrow an interval). Each resample sums the chosen units' confusion matrices, for A
  and for B alike, and takes the difference of the scores; a class absent from a resample's
  ground truth and predictions is left out of its mIoU (NaN-mean, as in Occ3D). Reported: the
  2.5 and 97.5 percentiles of the differences (a 95% percentile interval) and the share of
  resamples in which A scores higher.
* With ``--info PKL`` (the info pkl with the poses of the split's keyframes, as for
  ``tools/eval_occ.py --metric ray``), RayIoU too (SparseOcc's metric: it casts LiDAR-like rays
  and needs no camera mask): its per-frame ray counts are summed over the same resamples.

The interval says how much the score of these predictions depends on which frames were drawn; it
says nothing about training noise (rerun with other seeds for that).
"""
import sys

from splattingocc.cli.compare_occ import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
