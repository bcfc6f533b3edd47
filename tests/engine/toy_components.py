"""A toy model, dataset and metric that follow the SplattingOcc data contract at toy size.

Registered in the project's registries so that the real tools (tools/train.py, tools/test.py,
tools/dist_train.sh) can run them from tests/engine/toy_config.py before the real model exists.
The model draws random numbers in its forward pass (like the renderer's pixel sampling), so the
resume tests also cover the RNG state; the dataset is deterministic per index.
"""
from __future__ import annotations

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch import Tensor, nn
from torch.utils.data import Dataset

from splattingocc.registry import DATASETS, METRICS, MODELS


@DATASETS.register_module(force=True)
class ToyOccDataset(Dataset):
    """``length`` samples: features x [F] and a tiny voxel grid of labels [X, Y, Z]."""

    def __init__(self, length: int = 16, num_features: int = 8, grid=(4, 4, 2), seed: int = 0):
        self.length = length
        self.num_features = num_features
        self.grid = tuple(grid)
        self.seed = seed
        self.metainfo = dict(classes=('a', 'b', 'c'), grid=np.asarray(self.grid))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100003 + index)
        x = torch.randn(self.num_features, generator=g)  # [F]
        target = torch.tanh(x[:4]).sum() + 0.1 * torch.randn((), generator=g)
        labels = (torch.arange(int(np.prod(self.grid))) + index) % 3  # [X*Y*Z]
        voxel_semantics = labels.reshape(self.grid).to(torch.uint8)  # [X, Y, Z]
        return dict(
            x=x, target=target, voxel_semantics=voxel_semantics,
            meta=dict(sample_token=f'token{index:04d}', scene_name=f'scene-{index % 2:04d}',
                      sample_idx=index))


@MODELS.register_module(force=True)
class ToyOccModel(BaseModel):
    """An MLP regressing ``target``; its loss has two terms ('loss_fit', 'loss_reg').

    Args:
        nan_at_iter: the loss_fit term becomes NaN at this (1-based) training forward call.
        nan_rank: in a distributed run, only this rank's loss becomes NaN (-1: every rank).
        sample_ratio: fraction of the batch's hidden units kept by a random mask in training
            (draws from the global torch RNG, like pixel sampling).
    """

    def __init__(self, num_features: int = 8, hidden: int = 16, grid=(4, 4, 2),
                 nan_at_iter: int = -1, sample_ratio: float = 0.75, nan_rank: int = -1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.cls = nn.Linear(num_features, 3)
        self.grid = tuple(grid)
        self.nan_at_iter = nan_at_iter
        self.nan_rank = nan_rank
        self.sample_ratio = sample_ratio
        self._train_calls = 0

    def forward(self, x: Tensor, target: Tensor = None, voxel_semantics=None, meta=None,
                mode: str = 'tensor'):
        # x: [B, F], target: [B]
        assert x.dim() == 2, x.shape
        hidden = self.net[1](self.net[0](x))  # [B, H]
        if mode == 'loss':
            self._train_calls += 1
            keep = torch.rand(hidden.shape) < self.sample_ratio  # [B, H] random draw
            hidden = hidden * keep / self.sample_ratio
            pred = self.net[2](hidden).squeeze(-1)  # [B]
            loss_fit = ((pred - target) ** 2).mean()
            if self._train_calls == self.nan_at_iter and self.nan_rank in (-1, get_rank()):
                loss_fit = loss_fit * float('nan')
            loss_reg = 1e-3 * sum((p ** 2).sum() for p in self.parameters())
            return dict(loss_fit=loss_fit, loss_reg=loss_reg)
        pred = self.net[2](hidden).squeeze(-1)
        if mode == 'predict':
            logits = self.cls(x)  # [B, 3]
            cls = logits.argmax(-1)  # [B]
            out = []
            for b in range(x.shape[0]):
                semantics = torch.full(self.grid, int(cls[b]), dtype=torch.uint8)  # [X, Y, Z]
                semantics[0, 0, 0] = 17  # one free voxel, like a real prediction
                out.append(dict(semantics=semantics.numpy(),
                                sample_token=meta['sample_token'][b],
                                scene_name=meta['scene_name'][b]))
            return out
        return pred


@METRICS.register_module(force=True)
class ToyOccMetric(BaseMetric):
    """Voxel accuracy, with the Occ3DMetric's ``metrics`` switch ('miou' / 'ray')."""

    def __init__(self, metrics=('miou',), collect_device: str = 'cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = tuple(metrics)

    def process(self, data_batch: dict, data_samples) -> None:
        gt = data_batch['voxel_semantics']  # [B, X, Y, Z]
        for b, out in enumerate(data_samples):
            hits = float((torch.as_tensor(out['semantics']) == gt[b]).float().mean())
            self.results.append(dict(acc=hits))

    def compute_metrics(self, results: list) -> dict:
        acc = 100.0 * float(np.mean([r['acc'] for r in results]))
        out = {'mIoU': acc, 'geometry_IoU': acc, 'frames': len(results)}
        if 'ray' in self.metrics:
            out['RayIoU'] = acc / 2
        return out


# ---------------------------------------------------------------------------------------------
# helpers for the engine/tool tests
# ---------------------------------------------------------------------------------------------
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from mmengine.hooks import Hook  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOY_CONFIG = str(HERE / 'toy_config.py')
TOY_CONFIG_EPOCH = str(HERE / 'toy_config_epoch.py')


def unique_name(prefix: str = 'toy') -> str:
    """An experiment name no other runner in this process uses (mmengine keys globals by it)."""
    return f'{prefix}_{uuid.uuid4().hex[:8]}'


def losses_of(runner, key: str = 'train/loss') -> np.ndarray:
    """Every logged value of a loss (one per iteration, also those restored by a resume)."""
    return np.asarray(runner.message_hub.get_scalar(key).data[0], dtype=np.float64)


def toy_runner(config: str, work_dir, *extra, options=()):
    """tools/train.py's runner for ``config`` under a fresh experiment name (not yet trained)."""
    from splattingocc.cli import train
    argv = [config, '--work-dir', str(work_dir), *extra,
            '--cfg-options', f'experiment_name={unique_name()}', *options]
    return train.build_runner(train.parse_args(argv))


def model_state(runner) -> dict:
    """A detached copy of the runner's model state dict."""
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    """Two state dicts with the same keys and bit-identical tensors."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Interrupt(Exception):
    """Raised by :class:`StopAfter` to end a training run as if the job were killed."""


class StopAfter(Hook):
    """Simulate a job killed right after iteration ``n`` (after its checkpoint was written)."""

    priority = 'LOWEST'

    def __init__(self, n: int):
        self.n = n

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.n:
            raise Interrupt


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def dist_env(**extra: str) -> dict:
    """Environment for tools/dist_*.sh in a test: a free PORT, this Python, toy_components
    importable, no GPU; ``extra`` adds or replaces variables."""
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable,
               PYTHONPATH=f'{HERE}{os.pathsep}{os.environ.get("PYTHONPATH", "")}',
               CUDA_VISIBLE_DEVICES='')
    env.update(extra)
    return env
