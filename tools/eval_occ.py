"""Score a folder of occupancy predictions against the Occ3D-nuScenes ground truth.

    python tools/eval_occ.py --pred-dir DIR --data-root DATA [--metric miou ray ap] [--info PKL]
        [--no-camera-mask | --mask camera|lidar|none] [--json FILE] [--workers N]
        [--allow-missing]

Predictions: DIR/<scene_name>/<sample_token>/pred.npz with 'semantics' uint8 [200, 200, 16]
(``tools/test.py --dump-dir``), or SparseOcc-style files with key 'pred' (also DIR/<token>.npz).
Ground truth: DATA/gts/<scene_name>/<sample_token>/labels.npz. The set of predictions is checked
first: with --info (the split's info pkl) it must be the split's frames, without it every frame
with ground truth in the predicted scenes; a missing frame (unless --allow-missing), an extra one
or a token predicted twice stops with one line. mIoU is Occ3D's (one confusion matrix over the
dataset, mask_camera by default); RayIoU is SparseOcc's and needs --info (an info pkl with the
poses of every keyframe of the scenes). Classes, range and voxel size come from --dataset-config
(configs/_base_/datasets/occ3d_nuscenes.py).
AP (--metric ap) is occupancy average precision inside the mask and per-class AP (score =
occupancy x class probability), from the 'occupancy' and 'class_probs' of dumps written with
``tools/test.py --dump-dir DIR --dump-scores`` (binned: splattingocc/evaluation/functional/
average_precision.py; the same numbers as tools/test.py --eval ap on those frames).
The JSON (written atomically) holds percentages: frames, miou, per_class_iou, geometry_iou,
miou_no_mask, rayiou, rayiou_1m, rayiou_2m, rayiou_4m (null without RayIoU), with AP
occupancy_ap, map, per_class_ap, and the counts frames (scored) and frames_expected.
"""
import sys

from splattingocc.cli.eval_occ import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
