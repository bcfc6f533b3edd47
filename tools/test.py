"""Evaluate a trained SplattingOcc checkpoint on the test split (Occ3D mIoU, optionally RayIoU).

    python tools/test.py CONFIG CHECKPOINT --eval segm [ray] [--dump-dir DIR]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
                         [--gpu-collect] [--work-dir DIR]

--eval segm: mIoU over mask_camera voxels (+ geometry IoU); --eval segm ray: also RayIoU.
The metric prints the per-class IoU table; this tool prints the summary and writes all metrics to
<work-dir>/<timestamp>/metrics.json (atomically). --dump-dir DIR writes every prediction to
DIR/<scene_name>/<sample_token>/pred.npz (key 'semantics', uint8 [X, Y, Z]), the input of
tools/eval_occ.py. Multi-process: tools/dist_test.sh CONFIG CHECKPOINT NPROC [args].
"""
import sys

from splattingocc.cli.test import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
