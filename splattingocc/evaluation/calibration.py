"""Calibrated read-out: the occupancy threshold of a checkpoint, chosen on the val split.

The protocol: train on train, choose every threshold and hyperparameter on val, report on test.
``tools/test.py CONFIG CKPT --calibrate`` runs the model on the calibration split (the config's
``val_dataloader``), sweeps the read-out threshold over a fine grid (``Occ3DMetric`` with
'sweep': the exact mIoU and geometry IoU of the read-out at every threshold of the grid, inside
``mask_camera``) and writes the curve and the chosen threshold to a calibration file, by default
``<CKPT>.calibration.json`` next to the checkpoint; ``tools/test.py CONFIG CKPT --eval ...``
then reads that file and evaluates with its threshold.

The threshold is on the scale of ``SceneField.occupancy`` for every representation: the opacity
of one Occ3D voxel (for a Gaussian field ``1 - exp(-rho)``, for a density grid
``1 - exp(-sigma * 0.4 m)``).

The file (JSON; percentages for scores; written atomically)::

    format                'splattingocc-calibration/1'
    threshold             the chosen threshold (occupancy scale)
    rule                  how it was chosen ('max_miou': largest mIoU of the grid, the lowest
                          threshold among equal ones)
    miou, geometry_iou    at the chosen threshold (calibration split, mask_camera)
    configured_threshold  the config's model.readout.threshold, with its miou / geometry_iou
    split, ann_file, frames   the calibration split (its info pkl's metadata split)
    checkpoint, checkpoint_sha256, config
    quantity, mask        what is thresholded, where it is scored
    curve                 {'thresholds': [T], 'miou': [T], 'geometry_iou': [T]} (null = NaN)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Optional

import numpy as np

from ..errors import UserError

__all__ = ['CALIBRATION_FORMAT', 'calibration_path', 'checkpoint_sha256', 'calibration_document',
           'load_calibration']

CALIBRATION_FORMAT = 'splattingocc-calibration/1'
QUANTITY = ('field.occupancy: the opacity of one Occ3D voxel (1 - exp(-density) of the field '
            'on the Occ3D grid), compared in float64 by models/readout.py')
RULE_TEXT = {'max_miou': 'max_miou: the threshold of largest mIoU (mask_camera) on the grid, the '
                         'lowest among equal ones'}


def calibration_path(checkpoint: str) -> str:
    """The default calibration file of a checkpoint: ``<checkpoint>.calibration.json``."""
    return f'{checkpoint}.calibration.json'


def checkpoint_sha256(path: str) -> str:
    """SHA-256 of a checkpoint file (hex)."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _pct_list(values) -> list:
    return [None if not math.isfinite(v) else round(100.0 * float(v), 4) for v in values]


def _pct(v) -> Optional[float]:
    return None if not math.isfinite(v) else round(100.0 * float(v), 4)


def calibration_document(sweep: dict, configured_threshold: float, split: Optional[str],
                         ann_file: Optional[str], frames: int, checkpoint: str, config: str,
                         sha256: Optional[str], rule: str = 'max_miou') -> dict:
    """The calibration file's content (module docstring) from an ``Occ3DMetric.sweep`` dict
    ({'thresholds', 'miou', 'geometry_iou', 'best_index', 'best_threshold'})."""
    t = np.asarray(sweep['thresholds'], dtype=np.float64)
    best = int(sweep['best_index'])
    matches = np.nonzero(t == float(configured_threshold))[0]
    conf_i = int(matches[0]) if matches.size else None
    return dict(
        format=CALIBRATION_FORMAT,
        threshold=float(t[best]),
        rule=RULE_TEXT.get(rule, rule),
        miou=_pct(sweep['miou'][best]),
        geometry_iou=_pct(sweep['geometry_iou'][best]),
        configured_threshold=float(configured_threshold),
        configured_miou=None if conf_i is None else _pct(sweep['miou'][conf_i]),
        configured_geometry_iou=None if conf_i is None else _pct(sweep['geometry_iou'][conf_i]),
        split=split, ann_file=ann_file, frames=int(frames),
        checkpoint=os.path.abspath(checkpoint), checkpoint_sha256=sha256,
        config=os.path.abspath(config),
        quantity=QUANTITY, mask='mask_camera',
        created=time.strftime('%Y-%m-%d %H:%M:%S'),
        curve=dict(thresholds=[float(v) for v in t], miou=_pct_list(sweep['miou']),
                   geometry_iou=_pct_list(sweep['geometry_iou'])),
    )


def load_calibration(path: str, checkpoint: Optional[str] = None) -> dict:
    """Read and check a calibration file; with ``checkpoint`` (a local file), also that it was
    made for that checkpoint (same SHA-256). Raises ``UserError`` naming the file and the fix."""
    fix = 'rerun tools/test.py CONFIG CHECKPOINT --calibrate'
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError as e:
        raise UserError(f'calibration file {path} not found: {fix} (or pass --no-calibration '
                        "to use the config's threshold)") from e
    except (OSError, ValueError) as e:
        raise UserError(f'calibration file {path} is not readable JSON ({e}): {fix}') from e
    if not isinstance(doc, dict) or doc.get('format') != CALIBRATION_FORMAT:
        raise UserError(f'{path} is not a calibration file of format {CALIBRATION_FORMAT} '
                        f'(format: {doc.get("format") if isinstance(doc, dict) else None}): {fix}')
    t = doc.get('threshold')
    if not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
        raise UserError(f'{path}: threshold {t!r} is not a number in [0, 1]: {fix}')
    sha = doc.get('checkpoint_sha256')
    if checkpoint is not None and sha and os.path.isfile(checkpoint):
        if checkpoint_sha256(checkpoint) != sha:
            raise UserError(f'{path} was made for another checkpoint ({doc.get("checkpoint")}, '
                            f'different contents from {checkpoint}): {fix}')
    return doc
