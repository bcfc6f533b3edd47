"""A toy model with a real read-out (``OccupancyReadout``) on a 4 x 4 x 2 grid, and toy val /
test splits with Occ3D-style labels and masks, for the calibration and AP paths of tools/test.py
(tests/cli/test_calibrated_readout.py; registered through the config's custom_imports)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from mmengine.model import BaseModel
from torch import Tensor, nn
from torch.utils.data import Dataset

from splattingocc.fields import SceneField
from splattingocc.models.network import SplattingOcc
from splattingocc.registry import DATASETS, MODELS

GRID = (4, 4, 2)
NUM_CLASSES, FREE = 18, 17


class GridField(SceneField):
    """A field given by its grid values: density [B, X, Y, Z] and class scores [B, X, Y, Z, K]."""

    def __init__(self, density: Tensor, scores: Tensor):
        self.density, self.scores = density, scores
        self.num_classes = scores.shape[-1]
        self.box = (0.0, 0.0, 0.0, 4.0, 4.0, 2.0)

    @property
    def batch_size(self) -> int:
        return self.density.shape[0]

    def to_grid(self, pc_range, grid_size):
        assert tuple(grid_size) == self.density.shape[1:], (grid_size, self.density.shape)
        return self.density, self.scores


@DATASETS.register_module(force=True)
class ProtocolToyDataset(Dataset):
    """``length`` samples: x [8], Occ3D-style 'voxel_semantics' and 'mask_camera' [4, 4, 2];
    ``info_metadata['split']`` = ``split`` (as the info pkls of the real dataset)."""

    def __init__(self, split: str = 'val', length: int = 4, seed: int = 0):
        self.length, self.seed = length, seed
        self.info_metadata = dict(split=split)
        self.ann_file = f'toy_{split}.pkl'

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        sem = rng.integers(0, NUM_CLASSES, GRID)
        sem[rng.random(GRID) < 0.5] = FREE
        return dict(x=torch.from_numpy(rng.standard_normal(8).astype(np.float32)),
                    voxel_semantics=torch.from_numpy(sem.astype(np.uint8)),
                    mask_camera=torch.from_numpy((rng.random(GRID) < 0.8).astype(np.uint8)),
                    meta=dict(sample_token=f'{self.seed}-{index:03d}',
                              scene_name=f'scene-{self.seed}'))


@MODELS.register_module(force=True)
class ProtocolToyModel(BaseModel):
    """x [B, 8] -> a GridField (density softplus, class scores softmax over 17 classes), read out
    by ``readout``; ``predict`` is ``SplattingOcc.predict`` (labels and scores)."""

    def __init__(self, readout: dict):
        super().__init__()
        n = int(np.prod(GRID))
        self.lin = nn.Linear(8, n * NUM_CLASSES)
        self.readout = MODELS.build(readout)
        self.supervision = nn.ModuleList()

    def field(self, x: Tensor) -> GridField:
        y = self.lin(x).reshape(x.shape[0], *GRID, NUM_CLASSES)  # [B, X, Y, Z, 18]
        return GridField(nn.functional.softplus(y[..., 0]), y[..., 1:].softmax(-1))

    def forward(self, x: Tensor, voxel_semantics=None, mask_camera=None, meta=None,
                mode: str = 'tensor'):
        field = self.field(x)
        if mode == 'loss':
            return dict(loss=field.density.mean())
        if mode == 'predict':
            return SplattingOcc.predict(self, SimpleNamespace(field=field), dict(meta=meta))
        return field.density

    _render_at_labels = SplattingOcc._render_at_labels  # used by predict (None: no 2D labels)
