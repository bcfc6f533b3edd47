"""Train a SplattingOcc model from a config (mmengine Runner).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
                          [--seed S] [--deterministic]

Multi-process: tools/dist_train.sh CONFIG NPROC [args] (torchrun, --launcher pytorch).
"""
import sys

from splattingocc.cli.train import main
from splattingocc.engine.launch import run_main

if __name__ == '__main__':
    sys.exit(run_main(main))
