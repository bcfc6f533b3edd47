"""Reading Occ3D-nuScenes ground truth files (``gts/<scene>/<token>/labels.npz``).

Format (checked against the real files in ../shared/realdata/occ3d): an npz with the arrays
``semantics``, ``mask_lidar`` and ``mask_camera``, each uint8 of shape (X, Y, Z) in the ego frame of
the sample; semantics holds classes 0..num_classes-2 and ``free`` = num_classes-1; masks are 0/1.
The grid size and number of classes come from configs/_base_/datasets (passed in by the caller).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import DataError

OCC3D_KEYS = ('semantics', 'mask_lidar', 'mask_camera')


class Occ3DFormatError(DataError):
    """A labels.npz file that is missing, unreadable or not in the Occ3D format (a
    :class:`~splattingocc.errors.UserError`: the tools print it as one line)."""


def load_occ3d_labels(path,
                      occ_size: Optional[Sequence[int]] = None,
                      num_classes: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Load and check one Occ3D ground-truth file.

    Args:
        path: the ``labels.npz`` file (a folder is accepted too: ``<folder>/labels.npz``).
        occ_size: expected (X, Y, Z) grid size, e.g. ``occ_size`` of the dataset config; None: any
            3D shape (all three arrays must still agree).
        num_classes: number of classes including free (18 for Occ3D-nuScenes); semantics must lie in
            0..num_classes-1. None: not checked.

    Returns:
        dict with ``semantics``, ``mask_lidar``, ``mask_camera``: uint8 numpy arrays [X, Y, Z].

    Raises:
        Occ3DFormatError: one message naming the file and what is wrong with it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / 'labels.npz'
    if not path.is_file():
        raise Occ3DFormatError(
            f'Occ3D ground truth file not found: {path}. Occ3D-nuScenes is a separate download '
            '(https://github.com/Tsinghua-MARS-Lab/Occ3D); its files go to '
            '<data_root>/gts/<scene_name>/<sample_token>/labels.npz.')
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in OCC3D_KEYS if k not in npz.files]
            if missing:
                raise Occ3DFormatError(
                    f'{path}: not an Occ3D labels file, missing array(s) {missing} '
                    f'(found {sorted(npz.files)}); expected {list(OCC3D_KEYS)}.')
            out = {k: npz[k] for k in OCC3D_KEYS}
    except Occ3DFormatError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise Occ3DFormatError(f'{path}: cannot read it as an npz file ({e}); the file is corrupt '
                               'or truncated, download or generate it again.') from e

    shape = out['semantics'].shape
    for k, a in out.items():
        if a.ndim != 3:
            raise Occ3DFormatError(f'{path}: array {k!r} has shape {a.shape}, expected (X, Y, Z).')
        if a.shape != shape:
            raise Occ3DFormatError(f'{path}: array {k!r} has shape {a.shape} but semantics has '
                                   f'{shape}; all three must agree.')
        if occ_size is not None and tuple(a.shape) != tuple(int(s) for s in occ_size):
            raise Occ3DFormatError(f'{path}: array {k!r} has shape {a.shape}, the config\'s '
                                   f'occ_size is {tuple(occ_size)}.')
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.integer) and a.dtype != np.bool_:
                raise Occ3DFormatError(f'{path}: array {k!r} has dtype {a.dtype}, expected uint8.')
            if a.size and (a.min() < 0 or a.max() > 255):
                raise Occ3DFormatError(f'{path}: array {k!r} ({a.dtype}) holds values outside '
                                       '0..255.')
            out[k] = a.astype(np.uint8)
    for k in ('mask_lidar', 'mask_camera'):
        if out[k].size and out[k].max() > 1:
            raise Occ3DFormatError(f'{path}: {k} holds the value {int(out[k].max())}, '
                                   'expected 0/1.')
    if num_classes is not None and out['semantics'].size:
        top = int(out['semantics'].max())
        if top >= num_classes:
            raise Occ3DFormatError(f'{path}: semantics holds class {top}, but the config has '
                                   f'num_classes={num_classes} (0..{num_classes - 1}).')
    return out


__all__ = ['load_occ3d_labels', 'Occ3DFormatError', 'OCC3D_KEYS']
