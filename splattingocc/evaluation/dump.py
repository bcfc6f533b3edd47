"""Prediction files ``DIR/<scene_name>/<sample_token>/pred.npz`` ("semantics", uint8 [X, Y, Z]).

The layout mirrors Occ3D's ``gts/<scene_name>/<sample_token>/labels.npz``; ``tools/eval_occ.py``
scores such a folder. Files are written to a temporary name and renamed, so an interrupted run never
leaves a partial file.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ['PRED_FILENAME', 'prediction_path', 'dump_prediction', 'load_prediction', 'load_occ_gt']

PRED_FILENAME = 'pred.npz'


def prediction_path(root, scene_name: str, sample_token: str) -> Path:
    """``root/<scene_name>/<sample_token>/pred.npz``."""
    return Path(root) / str(scene_name) / str(sample_token) / PRED_FILENAME


def dump_prediction(root, scene_name: str, sample_token: str,
                    semantics: np.ndarray,  # [X, Y, Z] int
                    num_classes: int = 256) -> Path:
    """Write one frame's predicted classes atomically; returns the file path.

    Args:
        root: output folder.
        scene_name, sample_token: the frame (they name the sub-folders).
        semantics: [X, Y, Z] class per voxel (numpy or CPU tensor), stored as uint8.
        num_classes: labels must lie in [0, num_classes) (default: anything that fits uint8).
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
    path = prediction_path(root, scene_name, sample_token)
    from splattingocc.engine.checkpoint import atomic_open  # temp name + rename
    with atomic_open(path, 'wb') as f:
        np.savez_compressed(f, semantics=semantics.astype(np.uint8))
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
