"""Data-parallel training is the single-process training of the whole batch.

Two CPU processes (tools/dist_train.sh: torchrun, gloo, the CPU DDP wrapper) with b samples each
train K iterations; the reference is one process with 2b samples, same seed. This checks the
sampler sharding (rank r takes every 2nd index of the same shuffled stream) and the gradient
averaging (DDP averages, the loss is a batch mean).

Normalisation: the real model (backbone, neck, volume encoder) uses plain ``nn.BatchNorm`` (no
SyncBN; SyncBatchNorm does not run on CPU tensors in torch), so each process normalises with the
statistics of its own b samples. The check model therefore has two independent branches with
separate parameters: one with GroupNorm (independent of the batch) that must match the 2b
reference, one with BatchNorm that must match a 2b reference whose BatchNorm sees the batch in the
same two groups as the processes (``ghost_chunks=2``: samples r::2), and, as a control, must
differ from the plain 2b reference. Parameters are compared (BatchNorm running statistics are
per process: rank 0's are saved).

Tolerance: float32 sums in a different order (DDP bucket all-reduce vs one backward), amplified by
AdamW over K steps: |a - b| <= 2e-6 + 1e-5 |b|. Measured: GroupNorm branch vs the 2b reference
3e-8 max, BatchNorm branch vs the grouped reference 0, BatchNorm branch vs the plain 2b reference
4e-3 (the control asserts > 1e-3).
"""
import subprocess

import pytest
import torch
from mmengine.model import BaseModel
from torch import Tensor, nn

import splattingocc.engine  # noqa: F401
from splattingocc.cli import train
from splattingocc.registry import MODELS
from toy_components import REPO, TOY_CONFIG, dist_env, unique_name

K = 6  # iterations (24 samples of a 16-sample set: the sharding crosses the shuffle's wrap)
B = 2  # samples per process
ATOL, RTOL = 2e-6, 1e-5

pytestmark = pytest.mark.slow  # two torchrun processes


@MODELS.register_module(force=True)
class DDPCheckModel(BaseModel):
    """Two MLP branches regressing the toy target: ``gn`` (GroupNorm) and ``bn`` (BatchNorm1d).

    Args:
        ghost_chunks: split the batch into this many groups (samples ``r::ghost_chunks``), run
            each through the model separately (BatchNorm statistics per group) and average the
            group losses: what ``ghost_chunks`` data-parallel processes compute together.
    """

    def __init__(self, num_features: int = 8, hidden: int = 16, grid=(4, 4, 2),
                 ghost_chunks: int = 1):
        super().__init__()
        self.gn = nn.Sequential(nn.Linear(num_features, hidden), nn.GroupNorm(4, hidden),
                                nn.ReLU(), nn.Linear(hidden, 1))
        self.bn = nn.Sequential(nn.Linear(num_features, hidden), nn.BatchNorm1d(hidden),
                                nn.ReLU(), nn.Linear(hidden, 1))
        self.grid = tuple(grid)
        self.ghost_chunks = ghost_chunks

    def _losses(self, x: Tensor, target: Tensor) -> dict:
        # x: [B, F], target: [B]
        loss_gn = ((self.gn(x).squeeze(-1) - target) ** 2).mean()
        loss_bn = ((self.bn(x).squeeze(-1) - target) ** 2).mean()
        return dict(loss_gn=loss_gn, loss_bn=loss_bn)

    def forward(self, x: Tensor, target: Tensor = None, voxel_semantics=None, meta=None,
                mode: str = 'tensor'):
        # x: [B, F], target: [B]
        assert x.dim() == 2 and (target is None or target.shape == x.shape[:1]), x.shape
        if mode == 'loss':
            g = self.ghost_chunks
            assert x.shape[0] % g == 0, f'batch {x.shape[0]} not divisible by {g} chunks'
            parts = [self._losses(x[r::g], target[r::g]) for r in range(g)]
            return {k: sum(p[k] for p in parts) / g for k in parts[0]}
        pred = self.gn(x).squeeze(-1)  # [B]
        if mode == 'predict':
            return [dict(semantics=torch.zeros(self.grid, dtype=torch.uint8).numpy(),
                         sample_token=meta['sample_token'][b], scene_name=meta['scene_name'][b])
                    for b in range(x.shape[0])]
        return pred


OPTIONS = [
    'custom_imports.imports=[toy_components,test_ddp_equivalence]',
    'model.type=DDPCheckModel',
    f'train_cfg.max_iters={K}', f'train_cfg.val_interval={K}', f'param_scheduler.1.end={K}',
    f'default_hooks.checkpoint.interval={K}',
    # clipping scales all gradients by one global norm, which would couple the two branches
    'optim_wrapper.clip_grad=None',
    'randomness.seed=0',
]


def _params(state: dict) -> dict:
    """Parameters only (BatchNorm running statistics are per process)."""
    return {k: v for k, v in state.items()
            if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
    """Final weights of 2 processes x B samples (rank 0's checkpoint)."""
    work_dir = tmp_path_factory.mktemp('ddp')
    env = dist_env(OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), TOY_CONFIG, '2', '--work-dir',
         str(work_dir), '--cfg-options', *OPTIONS, f'train_dataloader.batch_size={B}'],
        env=env, cwd=str(work_dir), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    log = next(work_dir.glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log
    ckpt = torch.load(work_dir / f'iter_{K}.pth')
    assert ckpt['meta']['iter'] == K
    assert len(ckpt['rng_states']) == 2  # RandomStateHook gathered 2 ranks
    return _params(ckpt['state_dict'])


def _one_process(work_dir, ghost_chunks: int) -> dict:
    argv = [TOY_CONFIG, '--work-dir', str(work_dir), '--cfg-options',
            f'experiment_name={unique_name()}', *OPTIONS, f'train_dataloader.batch_size={2 * B}',
            f'model.ghost_chunks={ghost_chunks}']
    runner = train.build_runner(train.parse_args(argv))
    assert type(runner.model).__name__ == 'DDPCheckModel'
    runner.train()
    assert runner.iter == K
    return _params({k: v.detach().clone() for k, v in runner.model.state_dict().items()})


def _max_diff(a: dict, b: dict, branch: str) -> float:
    keys = [k for k in a if k.startswith(branch + '.')]
    assert keys and set(keys) == {k for k in b if k.startswith(branch + '.')}
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


def _assert_close(a: dict, b: dict, branch: str) -> None:
    for k in (k for k in a if k.startswith(branch + '.')):
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=RTOL, msg=lambda m, k=k: f'{k}: {m}')


def test_batch_independent_norm_matches_single_process_batch(two_processes, tmp_path):
    reference = _one_process(tmp_path, ghost_chunks=1)
    _assert_close(two_processes, reference, 'gn')
    # control: per-process BatchNorm statistics are not those of the whole batch
    assert _max_diff(two_processes, reference, 'bn') > 1e-3


def test_batchnorm_matches_per_process_statistics(two_processes, tmp_path):
    reference = _one_process(tmp_path, ghost_chunks=2)
    _assert_close(two_processes, reference, 'bn')
    _assert_close(two_processes, reference, 'gn')  # group-wise evaluation changes nothing here
