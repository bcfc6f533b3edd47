"""Draw the predictions of one scene, one PNG per frame.

    python tools/visualization/visual.py PRED_DIR/scene-0103 [--out OUT] [--data-root DATA]
        [--info PKL] [--max-frames N] [--no-3d]

PRED_DIR/scene-xxxx/<token>/pred.npz are the files of ``tools/test.py --dump-dir`` (key
'semantics', or 'pred'). Each PNG (OUT/<token>.png, default OUT = PRED_DIR/scene-xxxx_vis) shows
the six camera images (with --data-root and an info pkl that lists the sample: --info, else the
*.pkl files at the top of DATA are searched), the prediction and the ground truth from above
(DATA/gts/<scene>/<token>/labels.npz; free is transparent), the ground truth inside mask_camera
(unseen columns grey), a 3D view of the predicted voxels and a legend of the classes present.
Classes, range and cameras come from --dataset-config (configs/_base_/datasets/occ3d_nuscenes.py).
"""
import sys

from splattingocc.cli.visual import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
