"""Watch a run while it trains: TensorBoard curves and pictures of one val sample.

:class:`WatchHook` is a default hook of every config (``default_hooks.watch`` in
configs/_base_/default_runtime.py). One key each:

* ``--cfg-options default_hooks.watch.tensorboard=True``: TensorBoard event files in
  ``WORK_DIR/tensorboard`` (watch with ``tensorboard --logdir WORK_DIR``; needs the ``tb`` extra,
  ``pip install -e .[tb]``, else the run stops at once with one line saying so). They hold
  everything mmengine's ``LoggerHook`` logs (every loss term, ``lr``, ``time`` = seconds per
  iteration, ``data_time``, ``time_render``, ``render_share``, ``grad_norm``) as ``train/<name>``
  every ``default_hooks.logger.interval`` iterations, the validation metrics (``val/mIoU``,
  ``val/geometry_IoU``, ``val/RayIoU`` where enabled, the class IoUs) at each evaluation, the
  config as text, and the pictures (``pictures/render_vs_labels``).
* ``default_hooks.watch.picture_interval=N`` (default 100): every N iterations (0: never) a
  picture of one
  fixed camera (``camera``) of one fixed val sample (``sample_index``): LiDAR depth and semantic
  labels next to the rendered depth and semantics, the rendered opacity, the top-down read-out
  next to the ground truth (``splattingocc/visualization/training_pictures.py``); written to
  ``WORK_DIR/pictures/iter_<N>.png`` (atomically) and, with TensorBoard on, as an image. Cost on
  the tiny config (2-core CPU): about 1 s per picture unloaded (2.5-4 s with the machine loaded
  4x), 1.7-2.5 % of the training time at the default interval.
* ``render_share`` (on by default): ``train/render_share`` = mean ``time_render`` / mean ``time``
  over the log processor's window, logged next to the other scalars (text log, scalars.json,
  TensorBoard) in configs whose supervision renders (``RaySupervision`` logs ``time_render``).

Training numerics do not depend on the hook: pictures are drawn on rank 0 only, in eval mode
(each module's mode restored after), under ``torch.no_grad``, calling the renderer directly (not
through the supervision's render clock), with the python / numpy / torch (CPU, CUDA) random
states saved before and restored after. A resumed run appends to the same event folder and hides
the events after the checkpoint it resumed from (SummaryWriter ``purge_step``).
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import random
import time
from typing import Optional, Union

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.visualization import TensorboardVisBackend
from mmengine.visualization.vis_backend import force_init_env

from ..errors import UserError
from ..registry import HOOKS

TENSORBOARD_INSTALL = "pip install -e '.[tb]' (or: pip install 'tensorboard>=2.14')"
PICTURE_TAG = 'pictures/render_vs_labels'


def require_tensorboard(key: str = 'default_hooks.watch.tensorboard=True') -> None:
    """A :class:`UserError` (one line: what to install) unless TensorBoard can be written."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:
        raise UserError(f'{key} needs the tensorboard package, which is not installed ({err}): '
                        f'{TENSORBOARD_INSTALL}') from None


def tensorboard_available() -> bool:
    """Whether the tensorboard package is installed (found, not imported)."""
    import importlib.util
    return importlib.util.find_spec('tensorboard') is not None


class TensorboardBackend(TensorboardVisBackend):
    """mmengine's TensorBoard backend with tag groups, resumable runs and prompt flushes.

    Scalars without a '/' get ``tag_prefix`` (``'train/'`` or ``'val/'``, set by the hook), so
    TensorBoard groups the curves; ``purge_step`` hides the events of an earlier run in the same
    folder from that step on (a resumed run), ``flush_secs`` bounds what a crash loses.
    """

    def __init__(self, save_dir: str, purge_step: Optional[int] = None, flush_secs: int = 30):
        super().__init__(save_dir)
        self.purge_step = purge_step
        self.flush_secs = int(flush_secs)
        self.tag_prefix = 'train/'

    def _init_env(self):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter
        os.makedirs(self._save_dir, exist_ok=True)
        self._tensorboard = SummaryWriter(self._save_dir, purge_step=self.purge_step,
                                          flush_secs=self.flush_secs)

    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: Optional[str] = None,
                    **kwargs) -> None:
        for key, value in scalar_dict.items():
            self.add_scalar(key if '/' in key else self.tag_prefix + key, value, step)

    @force_init_env
    def flush(self) -> None:
        self._tensorboard.flush()


def _rng_states() -> dict:
    states = dict(python=random.getstate(), numpy=np.random.get_state(),
                  torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


@contextlib.contextmanager
def random_state_kept():
    """Run a block without changing the global random streams (python, numpy, torch, CUDA)."""
    states = _rng_states()
    try:
        yield
    finally:
        random.setstate(states['python'])
        np.random.set_state(states['numpy'])
        torch.set_rng_state(states['torch'])
        if 'cuda' in states:
            torch.cuda.set_rng_state_all(states['cuda'])


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """``model.eval()`` for a block; each module's own training flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def render_share(message_hub, window: Union[int, str, None] = None) -> Optional[float]:
    """Mean ``train/time_render`` over mean ``train/time`` over the last ``window`` iterations
    (all of them for 'global' or None); None if either is not logged."""
    scalars = message_hub.log_scalars
    render, total = scalars.get('train/time_render'), scalars.get('train/time')
    if render is None or total is None:
        return None
    n = window if isinstance(window, int) and window > 0 else None
    seconds = total.mean(n) if n else total.mean()
    if not seconds > 0:
        return None
    return float((render.mean(n) if n else render.mean()) / seconds)


@HOOKS.register_module()
class WatchHook(Hook):
    """TensorBoard, pictures of one val sample during training, the render share (module doc).

    Args:
        tensorboard: write TensorBoard event files (needs the ``tb`` extra).
        tensorboard_dir: where; relative paths are below the work dir (default 'tensorboard').
        picture_interval: a picture every this many iterations; 0: none.
        sample_index: the val sample (index into the val dataset).
        camera: its camera, a name of ``camera_names`` or an index.
        picture_dir: folder of the PNG files; relative paths are below the work dir.
        max_depth: top of the depth colour scale (m); None: from the sample's depth labels.
        dpi: resolution of the pictures (72: about 1,600 x 400 pixels).
        render_share: log ``render_share`` (see the module docstring).
    """

    priority = 'NORMAL'  # after IterTimerHook ('time'), before LoggerHook (same iteration)

    def __init__(self, tensorboard: bool = False, tensorboard_dir: str = 'tensorboard',
                 picture_interval: int = 100, sample_index: int = 0,
                 camera: Union[int, str] = 0, picture_dir: str = 'pictures',
                 max_depth: Optional[float] = None, dpi: int = 72, render_share: bool = True):
        if int(picture_interval) < 0:
            raise UserError(f'default_hooks.watch.picture_interval must be >= 0 (0: no '
                            f'pictures), got {picture_interval}')
        self.tensorboard = bool(tensorboard)
        if self.tensorboard:
            require_tensorboard()  # before anything is built or trained
        self.tensorboard_dir = tensorboard_dir
        self.picture_interval = int(picture_interval)
        self.sample_index = int(sample_index)
        self.camera = camera
        self.picture_dir = picture_dir
        self.max_depth = max_depth
        self.dpi = int(dpi)
        self.log_render_share = bool(render_share)
        self.backend: Optional[TensorboardVisBackend] = None
        self._batch = None
        self._prepare_seconds = None
        self.picture_seconds = []
        self._failures = 0

    # -- TensorBoard -------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        if self.tensorboard and is_main_process():
            self._attach_tensorboard(runner)

    def _attach_tensorboard(self, runner) -> None:
        visualizer = runner.visualizer
        found = [b for b in visualizer._vis_backends.values()
                 if isinstance(b, TensorboardVisBackend)]
        if found:  # the config lists a TensorBoard backend itself: use that one
            self.backend = found[0]
            return
        path = self.tensorboard_dir
        path = path if osp.isabs(path) else osp.join(runner.work_dir, path)
        # a resumed run continues after its checkpoint; a fresh run hides what was there
        self.backend = TensorboardBackend(path, purge_step=runner.iter + 1 if runner.iter else 0)
        # mmengine's Visualizer has no public call to add a backend after it is built
        visualizer._vis_backends['WatchTensorboard'] = self.backend
        self.backend.add_config(runner.cfg)
        runner.logger.info(f'TensorBoard: events in {path} (tensorboard --logdir '
                           f'{runner.work_dir})')

    def _set_prefix(self, prefix: str) -> None:
        if isinstance(self.backend, TensorboardBackend):
            self.backend.tag_prefix = prefix

    def before_val_epoch(self, runner) -> None:
        self._set_prefix('val/')

    def after_val(self, runner) -> None:
        self._set_prefix('train/')

    def after_run(self, runner) -> None:
        if self.backend is not None:
            self.backend.close()
        if self.picture_seconds:
            n, total = len(self.picture_seconds), sum(self.picture_seconds)
            load = (f' + {self._prepare_seconds:.1f} s to load the sample'
                    if self._prepare_seconds is not None else '')
            runner.logger.info(f'WatchHook: {n} pictures in {total:.1f} s '
                               f'({total / n:.2f} s each){load}')

    # -- every iteration ---------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.log_render_share:
            share = render_share(runner.message_hub,
                                 getattr(runner.log_processor, 'window_size', None))
            if share is not None:
                runner.message_hub.update_scalar('train/render_share', share)
        if (self.picture_interval > 0 and self.every_n_train_iters(runner, self.picture_interval)
                and is_main_process()):
            if self._batch is None:
                start = time.perf_counter()
                with random_state_kept():
                    if not self._prepare_sample(runner):
                        self.picture_interval = 0
                        return
                self._prepare_seconds = time.perf_counter() - start
            self.draw(runner, runner.iter + 1)

    # -- pictures ----------------------------------------------------------------------------
    def _prepare_sample(self, runner) -> bool:
        """Load the val sample with its 2D labels once (collated, on the CPU), at the first
        picture. False (warned, no pictures in this run) if the val data cannot give one."""
        from mmengine.dataset import default_collate

        from ..registry import DATASETS, TRANSFORMS
        from ..visualization.training_pictures import picture_pipeline

        ds_cfg = (runner.cfg.get('val_dataloader') or {}).get('dataset')
        camera_names = list((ds_cfg or {}).get('camera_names')
                            or runner.cfg.get('camera_names') or [])
        types = [t.get('type') for t in (ds_cfg or {}).get('pipeline') or []
                 if isinstance(t, dict)]
        if not camera_names or 'LoadMultiViewImages' not in types:
            runner.logger.warning(
                'WatchHook: the val data has no cameras (val_dataloader.dataset with '
                'camera_names and a LoadMultiViewImages pipeline): no pictures in this run '
                '(default_hooks.watch.picture_interval=0 silences this)')
            return False
        if isinstance(self.camera, str):
            if self.camera not in camera_names:
                raise UserError(f'default_hooks.watch.camera={self.camera!r} is not one of the '
                                f'val cameras {camera_names}')
            self._camera_index = camera_names.index(self.camera)
        else:
            self._camera_index = int(self.camera)
            if not 0 <= self._camera_index < len(camera_names):
                raise UserError(f'default_hooks.watch.camera={self.camera} is out of range: the '
                                f'val samples have {len(camera_names)} cameras')
        self._camera_name = camera_names[self._camera_index]
        pipeline, self._val_has_labels = picture_pipeline(ds_cfg.get('pipeline') or [],
                                                          camera_names)
        dataset = None
        loop = getattr(runner, '_val_loop', None)
        if loop is not None and not isinstance(loop, dict):
            dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        if dataset is None or not hasattr(dataset, 'get_data_info'):
            dataset = DATASETS.build(dict(ds_cfg, pipeline=[]))
        if not 0 <= self.sample_index < len(dataset):
            raise UserError(f'default_hooks.watch.sample_index={self.sample_index} is out of '
                            f'range: the val dataset has {len(dataset)} samples')
        results = dataset.get_data_info(self.sample_index)
        for transform in pipeline:
            transform = TRANSFORMS.build(transform) if isinstance(transform, dict) else transform
            results = transform(results)
        self._batch = default_collate([results])
        return True

    def _model(self, runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def draw(self, runner, step: int) -> Optional[str]:
        """Draw the picture of iteration ``step``: PNG (and TensorBoard image); returns its path.

        A failure is logged as a warning (training goes on); after 3, pictures stop."""
        from ..visualization.training_pictures import (compute_picture, draw_picture,
                                                       figure_to_rgb, find_renderer)
        start = time.perf_counter()
        model = self._model(runner)
        try:
            with random_state_kept(), eval_mode(model), torch.no_grad():
                batch = model.data_preprocessor(self._batch, False)
                pic = compute_picture(model, batch, self._camera_index, self._camera_name,
                                      use_depth_labels=self._val_has_labels,
                                      renderer=find_renderer(model))
            readout = getattr(model, 'readout', None)
            cfg = runner.cfg
            pc_range = getattr(readout, 'pc_range', None) or cfg.get('point_cloud_range')
            free = getattr(readout, 'free_label', None)
            free = cfg.get('free_label', 17) if free is None else free
            fig = draw_picture(pic, pc_range, int(free), cfg.get('class_names'),
                               ignore_label=int(cfg.get('ignore_label', 255)),
                               max_depth=self.max_depth, dpi=self.dpi,
                               title=f'iteration {step}: {pic.scene_name} {pic.sample_token}, '
                               f'{pic.camera}')
            rgb = figure_to_rgb(fig)
            path = self._write_png(runner, step, rgb)
            if self.backend is not None:
                self.backend.add_image(PICTURE_TAG, rgb, step)
                if hasattr(self.backend, 'flush'):
                    self.backend.flush()
        except Exception as err:  # noqa: BLE001 - a picture must not end a long run
            self._failures += 1
            runner.logger.warning(f'WatchHook: the picture of iteration {step} failed '
                                  f'({type(err).__name__}: {err})'
                                  + ('; no more pictures in this run' if self._failures >= 3
                                     else ''))
            if self._failures >= 3:
                self.picture_interval = 0
            return None
        seconds = time.perf_counter() - start
        self.picture_seconds.append(seconds)
        runner.logger.info(f'WatchHook: picture of iteration {step} in {seconds:.2f} s: {path}')
        return path

    def _write_png(self, runner, step: int, rgb: np.ndarray) -> str:
        from PIL import Image

        from .checkpoint import atomic_open
        folder = self.picture_dir
        folder = folder if osp.isabs(folder) else osp.join(runner.work_dir, folder)
        path = osp.join(folder, f'iter_{step:06d}.png')
        with atomic_open(path, 'wb') as f:
            Image.fromarray(rgb).save(f, format='PNG')
        return path


__all__ = ['WatchHook', 'TensorboardBackend', 'require_tensorboard', 'tensorboard_available',
           'render_share',
           'random_state_kept', 'eval_mode', 'TENSORBOARD_INSTALL', 'PICTURE_TAG']
