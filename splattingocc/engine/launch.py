"""What tools/train.py, tools/test.py and the benchmarks share before ``Runner.from_cfg``.

* Config loading with clear errors, ``--cfg-options`` merging, the default work dir.
* The distributed backend: ``env_cfg.dist_cfg.backend='auto'`` becomes NCCL with CUDA, gloo
  without. mmengine's own ``init_dist`` calls ``torch.cuda.set_device`` unconditionally, which a
  CPU-only torch cannot do, so on CPUs the process group is initialised here (from torchrun's or
  Slurm's environment) and the model is wrapped by :class:`CPUCompatibleDDP` (DDP refuses
  ``device_ids`` for CPU modules, which mmengine always passes).
* ``--amp``: mmengine's ``AmpOptimWrapper`` (float16 autocast + dynamic loss scaling) on CUDA. On a
  CPU ``--amp`` is refused with a message: mmengine's AmpOptimWrapper needs CUDA, and bfloat16 on
  a CPU has an 8-bit significand (representable depths 2^-8 ~ 0.4 % apart: 16 cm at 40 m, in the
  rendered depth and the alpha compositing) while giving little speed without AMX units: not
  worth a silent downgrade.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import os.path as osp
import re
import subprocess
from typing import Optional, Sequence

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings

from splattingocc.registry import MODEL_WRAPPERS

from .checkpoint import atomic_write_text
from ..errors import UserError, one_line


#: top-level config keys that are settings: what mmengine's Runner and the tools read
SETTINGS_KEYS = frozenset(
    [p for p in inspect.signature(Runner.__init__).parameters if p not in ('self', 'cfg')]
    + ['runner_type', 'model_wrapper_cfg', 'find_unused_parameters', 'custom_imports'])


def _copies_of(value, node, path: str, found: list, derived: list) -> None:
    """Paths under ``node`` whose value equals ``value`` (``found``), and, for a string
    ``value``, string values that contain it (``derived``, e.g. ``data_root + 'x.pkl'``)."""
    if path and _same_value(node, value):
        found.append(path)
        return
    if isinstance(node, dict):
        for k, v in node.items():
            _copies_of(value, v, f'{path}.{k}' if path else str(k), found, derived)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _copies_of(value, v, f'{path}.{i}', found, derived)
    elif isinstance(value, str) and len(value) >= 3 and isinstance(node, str) and value in node:
        derived.append(path)


def _same_value(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list, tuple)) or isinstance(b, (dict, list, tuple)):
        return False
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values are not copies
        return False


def check_variable_overrides(cfg: Config, options: dict) -> None:
    """Refuse overrides of top-level variables of a pure-Python config.

    Such a config copies its variables (``max_iters``, ``data_root``, ``ray_supervision``...)
    into the nested settings while it is read (``train_cfg.update(max_iters=max_iters)``), so
    ``--cfg-options max_iters=2`` changes the variable and nothing that runs. A key whose first
    part is an existing top-level key that is not a setting (:data:`SETTINGS_KEYS`) is refused
    naming the nested keys that hold its value (those of the same name; for a dotted key the rest
    is appended); every such key of ``options`` is named in the one message. A new top-level key
    is left alone (mmengine's own behaviour).
    """
    settings = {k: (cfg[k].to_dict() if hasattr(cfg[k], 'to_dict') else cfg[k])
                for k in cfg.keys() if k in SETTINGS_KEYS}
    problems = []
    for key in options:
        head, _, rest = key.partition('.')
        if head in SETTINGS_KEYS or head not in cfg.keys() or rest.endswith('_delete_'):
            continue
        value = cfg[head]
        if callable(value) and not isinstance(value, dict):
            continue  # a function imported into the config (read_base), not a value
        value = value.to_dict() if hasattr(value, 'to_dict') else value
        found, derived = [], []
        _copies_of(value, settings, '', found, derived)
        structured = isinstance(value, dict) or (isinstance(value, (list, tuple)) and value)
        # a copy: the same key name, or an equal dict / list (which is no coincidence)
        named = [p for p in found if structured or p.rsplit('.', 1)[-1] == head]
        others = [p for p in found if p not in named] + derived
        suffix = '.' + rest if rest else ''
        if named:
            text = (f'{key}: {head!r} is a variable of the config file, copied into '
                    f'{", ".join(_few(named))} when it was read; set '
                    f'{", ".join(_few([p + suffix for p in named]))} instead')
            trivial = isinstance(value, (bool, type(None))) or (
                isinstance(value, (int, float)) and abs(value) < 10)
            if others and not trivial:
                text += f' (its value is also in {", ".join(_few(others))}: check those)'
        elif others:
            text = (f'{key}: {head!r} is a variable of the config file; only the nested keys it '
                    f'was copied into reach what runs, and its value is in '
                    f'{", ".join(_few(others))}: set the ones you mean instead')
        else:
            text = (f'{key}: {head!r} is a variable of the config file that no setting holds; '
                    'set the nested key you mean instead')
        problems.append(text)
    if problems:
        raise UserError('--cfg-options would change nothing that runs: ' + '; '.join(problems))


def _few(paths: list, n: int = 6) -> list:
    return list(paths[:n]) + ([f'{len(paths) - n} more'] if len(paths) > n else [])


def merge_cfg_options(cfg: Config, options: dict) -> None:
    """Merge ``--cfg-options`` into ``cfg`` in place: ``cfg.merge_from_dict(options)``, except
    that ``KEY._delete_=True`` also replaces a list element, as it replaces a dict:
    ``model.supervision.0.losses.3._delete_=True model.supervision.0.losses.3.type=X`` puts
    ``dict(type='X')`` in place of that loss (mmengine itself merges into a list element and
    would keep the old element's other keys). An override of a top-level config variable,
    which would change nothing, is refused first (:func:`check_variable_overrides`)."""
    check_variable_overrides(cfg, options)
    options = dict(options)
    for key in sorted(k for k in options if k.endswith('._delete_')):
        prefix = key[:-len('._delete_')]
        parent_path, _, index = prefix.rpartition('.')
        if not (index.isdigit() and options[key] is True):
            continue
        parent: object = cfg
        for part in parent_path.split('.'):
            if isinstance(parent, (list, tuple)) and part.isdigit() and int(part) < len(parent):
                parent = parent[int(part)]
            elif isinstance(parent, (dict, Config)) and part in parent:
                parent = parent[part]
            else:
                parent = None
                break
        if not isinstance(parent, list):
            continue  # a dict key that happens to be a number: mmengine's own rule applies
        if int(index) >= len(parent):
            raise UserError(f'--cfg-options {key}: {parent_path} has {len(parent)} entries, no '
                            f'entry {index} to replace')
        options.pop(key)
        element = {k[len(prefix) + 1:]: options.pop(k) for k in list(options)
                   if k.startswith(prefix + '.')}
        holder = Config(dict(x={}))
        holder.merge_from_dict({f'x.{k}': v for k, v in element.items()})
        parent[int(index)] = holder.x
    if options:
        cfg.merge_from_dict(options)


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """``Config.fromfile`` with a clear message for a missing file, merged with cfg-options
    (:func:`merge_cfg_options`)."""
    if not osp.isfile(path):
        raise UserError(f'config file {path} not found: pass a config such as '
                        'configs/splattingocc/splattingocc-tiny-synthetic.py')
    cfg = Config.fromfile(path)
    if cfg_options:
        merge_cfg_options(cfg, cfg_options)
    # pure-Python (read_base) configs skip mmengine's custom_imports handling: do it here
    custom_imports = cfg.get('custom_imports')
    if custom_imports:
        try:
            import_modules_from_strings(**custom_imports)
        except ImportError as err:
            raise UserError(f'{path}: custom_imports {custom_imports} failed ({err}); put the '
                            'module on PYTHONPATH') from err
    return cfg


def default_work_dir(config_path: str) -> str:
    """``./work_dirs/<config file name without .py>`` (mmdetection3d convention)."""
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def load_tool_config(path: str, cfg_options: Optional[dict] = None,
                     work_dir: Optional[str] = None) -> Config:
    """:func:`load_config`, with ``work_dir`` set: the argument, else the config's, else
    :func:`default_work_dir`."""
    cfg = load_config(path, cfg_options)
    cfg.work_dir = work_dir or cfg.get('work_dir') or default_work_dir(path)
    return cfg


def resolve_dist_backend(cfg: Config) -> str:
    """Fill ``env_cfg.dist_cfg.backend`` when it is missing or 'auto': NCCL on CUDA, else gloo."""
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    backend = dist_cfg.get('backend', 'auto')
    if backend in (None, 'auto'):
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        dist_cfg['backend'] = backend
    elif backend == 'nccl' and not torch.cuda.is_available():
        raise UserError("env_cfg.dist_cfg.backend='nccl' needs CUDA GPUs but none is visible: set "
                        "--cfg-options env_cfg.dist_cfg.backend=gloo (or 'auto')")
    return backend


# a Slurm host list: host names (letters, digits, '-', '_', '.') with bracketed ranges, commas
_SLURM_NODELIST = re.compile(r'[A-Za-z0-9._\-\[\],]+')


def first_slurm_host(node_list: str) -> str:
    """The first host of a Slurm node list (``n[01-04],m1`` -> ``n01``), from ``scontrol show
    hostnames`` run without a shell (the list is one argument, never part of a command string);
    a list with any other character is refused before anything runs."""
    if not _SLURM_NODELIST.fullmatch(node_list or ''):
        raise UserError(f'SLURM_NODELIST={node_list!r} is not a Slurm host list (only letters, '
                        "digits, '-', '_', '.', ',', '[', ']'): set MASTER_ADDR to the first "
                        'host instead')
    try:
        proc = subprocess.run(['scontrol', 'show', 'hostnames', node_list], capture_output=True,
                              text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(f'cannot run scontrol to resolve SLURM_NODELIST={node_list} ({err}): '
                        'set MASTER_ADDR') from err
    hosts = proc.stdout.split()
    if proc.returncode != 0 or not hosts:
        raise UserError(f'cannot resolve the first host of SLURM_NODELIST={node_list} (scontrol '
                        f'exit {proc.returncode}: {proc.stderr.strip()[:200]}): set MASTER_ADDR')
    return hosts[0]


def _slurm_env_to_torch_env() -> None:
    """Translate Slurm's task variables into the ones ``init_process_group('env://')`` reads."""
    needed = ['SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST']
    missing = [k for k in needed if k not in os.environ]
    if missing:
        raise UserError(f'--launcher slurm but {missing} are not set: start the job with srun')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = first_slurm_host(os.environ['SLURM_NODELIST'])
    os.environ.setdefault('MASTER_PORT', '29500')


def init_cpu_distributed(launcher: str, backend: str = 'gloo',
                         timeout_s: Optional[float] = None) -> None:
    """Initialise the default process group for CPU processes (``--launcher pytorch|slurm``)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    if launcher == 'slurm':
        _slurm_env_to_torch_env()
    elif launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
                   if k not in os.environ]
        if missing:
            raise UserError(f'--launcher pytorch but {missing} are not set: start with '
                            'tools/dist_train.sh (torchrun), or use --launcher none')
    else:
        raise UserError(f'unknown launcher {launcher!r}: use none, pytorch or slurm')
    kwargs = {}
    if timeout_s is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=float(timeout_s))
    torch_dist.init_process_group(backend=backend, init_method='env://', **kwargs)


@MODEL_WRAPPERS.register_module()
class CPUCompatibleDDP(MMDistributedDataParallel):
    """mmengine's DDP wrapper that drops ``device_ids`` when the module lives on the CPU."""

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Resolve the backend; on CPUs initialise the process group and pick the CPU DDP wrapper.

    With CUDA, mmengine's Runner initialises the process group itself from ``env_cfg``.
    """
    backend = resolve_dist_backend(cfg)
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    init_cpu_distributed(launcher, backend, cfg.env_cfg.dist_cfg.get('timeout'))
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='splattingocc.CPUCompatibleDDP', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def build_runner_from_cfg(cfg: Config, launcher: str) -> Runner:
    """:func:`setup_distributed`, then the config's runner (``runner_type`` if set, else
    mmengine's ``Runner``)."""
    setup_distributed(cfg, launcher)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def enable_amp(cfg: Config) -> None:
    """``--amp``: AmpOptimWrapper with dynamic loss scaling on CUDA; a clear refusal on CPU."""
    if not torch.cuda.is_available():
        raise UserError(
            '--amp needs a CUDA GPU: it uses mmengine AmpOptimWrapper (float16 autocast with a '
            'CUDA GradScaler) and no GPU is visible. On a CPU train without --amp (bfloat16 on CPU '
            'is deliberately not offered: it costs depth precision and gives little speed).')
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        raise UserError('--amp: the config has no optim_wrapper to switch to AmpOptimWrapper')
    if optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        optim_wrapper['type'] = 'AmpOptimWrapper'
        optim_wrapper.setdefault('loss_scale', 'dynamic')


def apply_randomness_args(cfg: Config, seed: Optional[int] = None,
                          deterministic: bool = False) -> None:
    """``--seed`` / ``--deterministic`` into ``cfg.randomness``; resolve ``deterministic='auto'``.

    'auto' (the runtime default) means deterministic algorithms on CPUs, where they cost next to
    nothing and make reruns and resumes bit-identical (without them some CPU kernels, e.g.
    accumulating ``index_put_``, add in a varying order), and off with CUDA, where they are slower
    and some kernels have no deterministic version (``--deterministic`` forces them on).
    """
    randomness = cfg.setdefault('randomness', {})
    if seed is not None:
        randomness['seed'] = int(seed)
    if deterministic:
        randomness['deterministic'] = True
    elif randomness.get('deterministic') == 'auto':
        randomness['deterministic'] = not torch.cuda.is_available()
    if randomness.get('deterministic') and torch.cuda.is_available():
        # cuBLAS needs a fixed workspace for deterministic GEMMs (CUDA docs)
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')


def add_common_arguments(parser) -> None:
    """Arguments train.py and test.py share."""
    parser.add_argument('--work-dir', help='folder for logs, checkpoints and results '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default=None,
        help='override config keys, e.g. train_cfg.max_iters=100 optim_wrapper.optimizer.lr=1e-3')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='process launcher for distributed runs (dist_train.sh uses pytorch)')
    # torch.distributed.launch passes --local_rank; torchrun sets LOCAL_RANK instead
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def evaluator_metric_cfgs(evaluator) -> list:
    """The metric config dicts of an evaluator config (dict, list of dicts, or Evaluator dict)."""
    if evaluator is None:
        return []
    if isinstance(evaluator, (list, tuple)):
        return [m for m in evaluator if isinstance(m, dict)]
    if isinstance(evaluator, dict):
        if evaluator.get('type', 'Evaluator') == 'Evaluator' and 'metrics' in evaluator:
            inner = evaluator['metrics']
            return evaluator_metric_cfgs(inner if isinstance(inner, (list, tuple)) else [inner])
        return [evaluator]
    return []


def normalize_evaluators(cfg: Config) -> None:
    """Wrap a single metric dict in a list for ``val_evaluator`` / ``test_evaluator``.

    mmengine's Runner reads a dict evaluator that has a ``metrics`` key as an ``Evaluator``
    config, so ``dict(type='Occ3DMetric', metrics=['miou'])`` would fail to build; as a list
    it is the metric config it is meant to be.
    """
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        if isinstance(evaluator, dict) and evaluator.get('type', 'Evaluator') != 'Evaluator':
            cfg[key] = [evaluator]


def atomic_write_json(path: str, obj, sort_keys: bool = True) -> None:
    """JSON (indent 2, keys sorted unless ``sort_keys`` is False) written to a temporary name and
    renamed; folders are made. Numpy scalars and arrays are written as numbers and lists."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default)
    atomic_write_text(path, text + '\n')


def _json_default(value):
    if hasattr(value, 'item') and callable(value.item):
        return value.item()
    if hasattr(value, 'tolist'):
        return value.tolist()
    return str(value)


def run_main(main, argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's ``main``; a user error becomes one line on stderr and exit code 2.

    User errors: :class:`UserError` and its subclasses (``splattingocc.errors``: a data file in
    the wrong format, a corrupt image, an unsafe pickle, an output that exists; the converters'
    and readers' own error types derive from them) and ``FileNotFoundError`` (a missing
    data/config/checkpoint file, whose message names it), also when raised inside a DataLoader
    worker (:func:`splattingocc.errors.one_line`). Set ``SPLATTINGOCC_TRACEBACK=1`` to see the
    full traceback.
    """
    import sys
    try:
        main(argv)
    except (UserError, FileNotFoundError) as err:
        if os.environ.get('SPLATTINGOCC_TRACEBACK'):
            raise
        print(f'error: {one_line(err)}', file=sys.stderr)
        return 2
    if _destroy_process_group():
        # A finished distributed run leaves through os._exit: with gloo, torch's C++ teardown at
        # interpreter exit sometimes aborts ('terminate called without an active exception',
        # seen in about 1 of 3 two-process CPU runs) after all the work was done and written.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _destroy_process_group() -> bool:
    """Barrier and tear the process group down; True if there was one."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return False
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return True


__all__ = [
    'load_config', 'merge_cfg_options', 'check_variable_overrides', 'default_work_dir',
    'resolve_dist_backend', 'init_cpu_distributed', 'first_slurm_host',
    'CPUCompatibleDDP', 'setup_distributed', 'enable_amp', 'apply_randomness_args',
    'add_common_arguments', 'atomic_write_json', 'run_main', 'evaluator_metric_cfgs',
    'normalize_evaluators'
]
