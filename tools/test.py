"""Evaluate a trained SplattingOcc checkpoint on the test split (Occ3D mIoU, optionally RayIoU,
average precision and rendering metrics), or calibrate its read-out threshold on the val split.

    python tools/test.py CONFIG CHECKPOINT --calibrate [--calibration FILE]
    python tools/test.py CONFIG CHECKPOINT --eval segm [ray] [ap] [render]
                         [--dump-dir DIR [--dump-scores]]
                         [--calibration FILE | --no-calibration] [--require-calibration]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
                         [--gpu-collect] [--work-dir DIR]

Protocol: train on train, choose every threshold and hyperparameter on val, report on test.
--calibrate runs the config's val_dataloader, sweeps the read-out's occupancy threshold (the
opacity of one voxel, the same scale for every representation) over a fine grid and writes the
mIoU / geometry IoU curve and the threshold of largest mIoU to FILE (default
CHECKPOINT.calibration.json; splattingocc/evaluation/calibration.py). --eval then reads the
config's test_dataloader (the test split where the data has one) with that threshold when the
file exists, and says so; without it the config's threshold is used and labelled 'not
calibrated' (--require-calibration: refuse instead). A threshold given with --cfg-options
model.readout.threshold=T wins over the file.

--eval segm: mIoU over mask_camera voxels (+ geometry IoU); ray: RayIoU; ap: occupancy average
precision inside mask_camera and per-class AP (score = occupancy x class probability); render:
depth AbsRel / RMSE / delta < 1.25 and rendered-semantics accuracy / mIoU at the labelled pixels
(adds LoadLabels2D to the test pipeline; needs a model with a ray supervision).
The metric prints the per-class table; this tool prints the summary and writes all metrics, the
split and the read-out threshold used (with its source) to <work-dir>/<timestamp>/metrics.json
(atomically). --dump-dir DIR writes every prediction to DIR/<scene_name>/<sample_token>/pred.npz
('semantics' uint8 [X, Y, Z]; with --dump-scores also 'occupancy' [X, Y, Z] and 'class_probs'
[X, Y, Z, C - 1] in float16, for AP), the input of tools/eval_occ.py.
Multi-process: tools/dist_test.sh CONFIG CHECKPOINT NPROC [args].
"""
import sys

from splattingocc.cli.test import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
