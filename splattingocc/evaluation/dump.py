"""Prediction files ``DIR/<scene_name>/<sample_token>/pred.npz``.

Arrays: 'semantics' uint8 [X, Y, Z] (the labels) and, when the model gives them, the continuous
scores behind them at float16 precision: 'occupancy' [X, Y, Z] (what the read-out thresholds,
the opacity of one voxel) and 'class_probs' [X, Y, Z, C - 1] (class probabilities given
occupied, the non-free classes in label order), which threshold-free metrics (AP) need.
The layout mirrors Occ3D's ``gts/<scene_name>/<sample_token>/labels.npz``; ``tools/eval_occ.py``
scores such a folder. Files are written to a temporary name and renamed, so an interrupted run never
leaves a partial file.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ['PRED_FILENAME', 'prediction_path', 'dump_prediction', 'load_prediction',
           'load_prediction_scores', 'load_occ_gt']

PRED_FILENAME = 'pred.npz'


def prediction_path(root, scene_name: str, sample_token: str) -> Path:
    """``root/<scene_name>/<sample_token>/pred.npz``."""
    return Path(root) / str(scene_name) / str(sample_token) / PRED_FILENAME


def dump_prediction(root, scene_name: str, sample_token: str,
                    semantics: np.ndarray,  # [X, Y, Z] int
                    num_classes: int = 256,
                    occupancy: Optional[np.ndarray] = None,  # [X, Y, Z] float
                    class_probs: Optional[np.ndarray] = None,  # [X, Y, Z, C - 1] float
                    ) -> Path:
    """Write one frame's predicted classes (and scores) atomically; returns the file path.

    Args:
        root: output folder.
        scene_name, sample_token: the frame (they name the sub-folders).
        semantics: [X, Y, Z] class per voxel (numpy or CPU tensor), stored as uint8.
        num_classes: labels must lie in [0, num_classes) (default: anything that fits uint8).
        occupancy: optional [X, Y, Z] occupancy scores, stored as float16.
        class_probs: optional [X, Y, Z, C - 1] class probabilities, stored as float16.
    """
    if not scene_name or not sample_token:
        raise ValueError(f'dump_prediction: scene_name ({scene_name!r}) and sample_token '
                         f'({sample_token!r}) must be non-empty')
    if hasattr(semantics, 'detach'):
        semantics = semantics.detach().cpu().numpy()
    semantics = np.asarray(semantics)
    if semantics.ndim != 3:
        raise ValueError(f'dump_prediction: semantics of {sample_token} must be [X, Y, Z], got '
                         f'shape {semantics.shape}')
    if semantics.size and (semantics.min() < 0 or semantics.max() >= min(num_classes, 256)):
        raise ValueError(f'dump_prediction: semantics of {sample_token} hold labels outside '
                         f'0..{min(num_classes, 256) - 1}')
    arrays = dict(semantics=semantics.astype(np.uint8))
    for key, value, ndim in (('occupancy', occupancy, 3), ('class_probs', class_probs, 4)):
        if value is None:
            continue
        if hasattr(value, 'detach'):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if value.ndim != ndim or value.shape[:3] != semantics.shape:
            raise ValueError(f'dump_prediction: {key} of {sample_token} has shape {value.shape}; '
                             f'expected {semantics.shape}' + (' + [C - 1]' if ndim == 4 else ''))
        arrays[key] = value.astype(np.float16)
    path = prediction_path(root, scene_name, sample_token)
    from splattingocc.engine.checkpoint import atomic_open  # temp name + rename
    with atomic_open(path, 'wb') as f:
        np.savez_compressed(f, **arrays)
    return path


def load_prediction(path) -> np.ndarray:
    """The 'semantics' (or SparseOcc-style 'pred') integer array of a prediction npz, as stored."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'prediction file not found: {path}')
    try:
        with np.load(path) as data:
            for key in ('semantics', 'pred'):
                if key in data.files:
                    arr = data[key]
                    break
            else:
                raise ValueError(f"{path}: no 'semantics' (or 'pred') array; found {data.files}")
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, ValueError) and str(e).startswith(path):
            raise
        raise ValueError(f'{path}: not a readable .npz file ({e}); re-dump the prediction') from e
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'{path}: labels must be integers, got dtype {arr.dtype}')
    return arr


def load_prediction_scores(path) -> dict:
    """{'occupancy': [X, Y, Z], 'class_probs': [X, Y, Z, C - 1]} float16 of a prediction npz
    (None for an array the file lacks: written without scores, or not by tools/test.py)."""
    path = os.fspath(path)
    try:
        with np.load(path) as data:
            return {k: (data[k] if k in data.files else None)
                    for k in ('occupancy', 'class_probs')}
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f'{path}: not a readable .npz file ({e}); re-dump the prediction') from e


def load_occ_gt(path) -> dict:
    """An Occ3D ``labels.npz``: {'semantics', 'mask_camera', 'mask_lidar'} uint8 [X, Y, Z] each
    (a missing mask is returned as None)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'ground-truth file not found: {path} (expected Occ3D '
                                'gts/<scene>/<token>/labels.npz under the data root)')
    try:
        with np.load(path) as data:
            if 'semantics' not in data.files:
                raise KeyError(f"{path}: no 'semantics' array; found {data.files}")
            out = {k: (data[k] if k in data.files else None)
                   for k in ('semantics', 'mask_camera', 'mask_lidar')}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f'{path}: not a readable Occ3D labels.npz ({e}); download or generate '
                         'it again') from e
    sem = out['semantics']
    if not np.issubdtype(sem.dtype, np.integer) or sem.ndim != 3:
        raise ValueError(f'{path}: semantics must be integers [X, Y, Z], got {sem.dtype} of shape '
                         f'{sem.shape}; download or generate it again')
    for k in ('mask_camera', 'mask_lidar'):
        if out[k] is not None and out[k].shape != sem.shape:
            raise ValueError(f'{path}: {k} shape {out[k].shape} differs from semantics {sem.shape}')
    return out
