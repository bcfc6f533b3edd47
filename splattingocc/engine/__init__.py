"""Training/test engine on mmengine: safe + atomic checkpoints, hooks, launch helpers.

Importing this package allow-lists mmengine's checkpoint contents for
``torch.load(weights_only=True)`` (torch >= 2.6) and registers the hooks, the atomic checkpoint
file backend and the CPU-capable DDP wrapper.
"""
from .checkpoint import (AtomicCheckpointHook, AtomicLocalBackend, atomic_open, atomic_torch_save,
                         atomic_write_bytes, atomic_write_text, register_checkpoint_safe_globals,
                         resolve_resume_checkpoint)
from .hooks import DumpPredictionHook, FiniteLossHook, RandomStateHook, TrainingSummaryHook
from .launch import (CPUCompatibleDDP, atomic_write_json, default_work_dir, enable_amp,
                     load_config, resolve_dist_backend, setup_distributed)
from .preemption import PreemptibleEpochBasedTrainLoop, PreemptionHook  # noqa: F401
from .interval_checkpoint import IntervalCheckpointHook  # noqa: F401
from .watch import WatchHook  # noqa: F401  (TensorBoard and pictures during training)

register_checkpoint_safe_globals()

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'atomic_open', 'atomic_torch_save',
    'atomic_write_bytes', 'atomic_write_text', 'register_checkpoint_safe_globals',
    'resolve_resume_checkpoint', 'DumpPredictionHook', 'FiniteLossHook', 'RandomStateHook',
    'TrainingSummaryHook', 'CPUCompatibleDDP', 'atomic_write_json',
    'default_work_dir', 'enable_amp', 'load_config', 'resolve_dist_backend', 'setup_distributed'
]
