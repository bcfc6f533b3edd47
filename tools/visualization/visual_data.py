"""Draw one sample of an info pkl: the camera images with the projected LiDAR depth and semantic
labels overlaid, and the Occ3D ground truth from above (highest occupied class per column).

    python tools/visualization/visual_data.py \
        --info data/synthetic-nuscenes/synthetic_infos_val.pkl \
        --data-root data/synthetic-nuscenes --index 0 --out sample0.png

Grid, classes and cameras come from configs/_base_/datasets/occ3d_nuscenes.py (or --dataset-config).
"""
import sys

from splattingocc.cli.visual_data import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
