"""The Occ3D-nuScenes dataset: samples of an info pkl written by ``create_nuscenes_infos``."""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset

from ..errors import DataError
from ..registry import DATASETS, TRANSFORMS
from ..safe_pickle import load_pickle
from .nuscenes_converter import LABELS2D_FORMAT, SPLITS

_REDO = 're-create it with tools/create_data.py'
# keys of a sample info and of its camera entries that the dataset reads, with the shapes of
# the arrays among them
_INFO_KEYS = {'token': None, 'scene_name': None, 'timestamp': None, 'lidar_path': None,
              'lidar2ego': (4, 4), 'ego2global': (4, 4), 'occ_path': None, 'cams': None}
_CAM_KEYS = {'data_path': None, 'cam_intrinsic': (3, 3), 'sensor2ego': (4, 4),
             'ego2global': (4, 4), 'width': None, 'height': None}


def check_info_metadata(metadata, path) -> dict:
    """The ``metadata`` of an info file, checked: written by this converter version
    (``labels2d_format``) for a known nuScenes version; :class:`DataError` naming the file."""
    if not isinstance(metadata, dict):
        raise DataError(f'{path}: no "metadata" dict (found {type(metadata).__name__}); the file '
                        f'was not written by tools/create_data.py, {_REDO}.')
    fmt = metadata.get('labels2d_format')
    if fmt != LABELS2D_FORMAT:
        raise DataError(f'{path}: metadata labels2d_format is {fmt!r}, this version reads '
                        f'{LABELS2D_FORMAT} (the 2D label files changed layout); {_REDO}.')
    version = metadata.get('version')
    if version not in SPLITS:
        raise DataError(f'{path}: metadata version is {version!r}, expected one of '
                        f'{sorted(SPLITS)}; {_REDO}.')
    return dict(metadata)


def _check_keys(entry, keys: dict, where: str, path) -> None:
    if not isinstance(entry, dict):
        raise DataError(f'{path}: {where} is a {type(entry).__name__}, not a dict; {_REDO}.')
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DataError(f'{path}: {where} lacks {missing}; {_REDO}.')
    for key, shape in keys.items():
        if shape is None:
            continue
        try:
            arr = np.asarray(entry[key], dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != shape or not np.isfinite(arr).all():
            found = 'not numeric' if arr is None else f'shape {arr.shape}'
            raise DataError(f'{path}: {where}: {key!r} must be a finite {shape[0]}x{shape[1]} '
                            f'matrix, found {found}; {_REDO}.')


def check_sample_info(info, index: int, path, camera_names: Sequence[str]) -> None:
    """The keys and matrix shapes the dataset reads from sample ``index`` of an info file."""
    _check_keys(info, _INFO_KEYS, f'sample {index}', path)
    where = f'sample {index} ({info["token"]})'
    if not isinstance(info['cams'], dict):
        raise DataError(f'{path}: {where}: "cams" is a {type(info["cams"]).__name__}, not a '
                        f'dict; {_REDO}.')
    for ch in camera_names:
        if ch not in info['cams']:
            raise DataError(f'{path}: {where} has no camera {ch} (cameras: '
                            f'{sorted(info["cams"])}); fix camera_names in the config.')
        _check_keys(info['cams'][ch], _CAM_KEYS, f'{where} camera {ch}', path)

# fields of an info's camera entry that the pipeline needs (renamed for the transforms)
_CAM_FIELDS = ('sensor2ego', 'ego2global', 'width', 'height', 'timestamp', 'sample_data_token')


@DATASETS.register_module()
class Occ3DNuScenesDataset(BaseDataset):
    """Multi-camera keyframes with 2D labels and Occ3D ground truth.

    Each item is the output of ``pipeline`` applied to a dict with: ``token``, ``scene_name``,
    ``timestamp``, ``lidar2ego`` / ``ego2global`` [4, 4], absolute ``lidar_path``, ``occ_path``,
    ``label2d_path``, ``cams`` {channel: {img_path, cam2img [3, 3], sensor2ego [4, 4], ego2global
    [4, 4], width, height, ...}} and ``adjacent_frames``: a list of 2 * num_adjacent dicts (token,
    offset, ego2global, cams, label2d_path) ordered t-k .. t+k.

    Adjacent frames are found by following ``prev``/``next`` within the info file. Near the ends of
    a scene a missing frame at offset k is replaced by the farthest existing frame in the same
    direction (so the offset actually used may be smaller than k); with no frame at all in that
    direction the nearest frames of the other direction are used, and a single-sample scene uses
    the current frame itself (offset 0). So every sample has the same number of render views and
    batches stack.

    Args:
        ann_file: the info pkl (relative to ``data_root`` unless absolute).
        camera_names: cameras in the order used everywhere (config ``camera_names``).
        data_root: folder the paths in the pkl are relative to.
        pipeline: transforms (dicts built from ``TRANSFORMS`` or callables).
        num_adjacent: k adjacent keyframes on each side for rendering supervision (0 = none).
        test_mode: mmengine's test mode (no refetch on a None sample).
        **kwargs: passed to ``mmengine.dataset.BaseDataset`` (metainfo, indices, ...).
    """

    def __init__(self,
                 ann_file: str,
                 camera_names: Sequence[str],
                 data_root: str = '',
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 num_adjacent: int = 0,
                 test_mode: bool = False,
                 **kwargs):
        if not camera_names:
            raise ValueError('Occ3DNuScenesDataset: camera_names is empty; pass camera_names from '
                             'configs/_base_/datasets/occ3d_nuscenes.py.')
        self.camera_names = list(camera_names)
        self.num_adjacent = int(num_adjacent)
        if self.num_adjacent < 0:
            raise ValueError(f'Occ3DNuScenesDataset: num_adjacent must be >= 0, got {num_adjacent}')
        built = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        self.info_metadata: dict = {}
        super().__init__(ann_file=ann_file, data_root=data_root, pipeline=built,
                         test_mode=test_mode, **kwargs)

    # ------------------------------------------------------------------------------------------
    def _abs(self, p: Optional[str]) -> Optional[str]:
        if p is None:
            return None
        p = str(p).replace('\\', '/')
        return p if os.path.isabs(p) else os.path.join(self.data_root or '', p)

    def _cams(self, info: dict) -> Dict[str, dict]:
        cams = {}
        for ch in self.camera_names:
            if ch not in info['cams']:
                raise DataError(f'{self.ann_file}: sample {info["token"]} has no camera {ch} '
                                f'(cameras: {sorted(info["cams"])}); fix camera_names in the '
                                'config.')
            c = info['cams'][ch]
            cams[ch] = dict(img_path=self._abs(c['data_path']),
                            cam2img=np.asarray(c['cam_intrinsic'], dtype=np.float64),
                            **{k: c[k] for k in _CAM_FIELDS if k in c})
        return cams

    def _adjacent(self, infos: List[dict], index: Dict[str, int], t: int) -> List[dict]:
        """The 2k (info index, offset) pairs of sample t, ordered t-k .. t+k (see class doc)."""
        k_max = self.num_adjacent
        chains = {}
        for direction, key in ((-1, 'prev'), (1, 'next')):
            chain, cur = [], infos[t]
            for _ in range(k_max):
                tok = cur.get(key, '')
                if not tok or tok not in index:
                    break
                cur = infos[index[tok]]
                chain.append(index[tok])
            chains[direction] = chain  # chain[j] is at offset direction * (j + 1)
        pairs = []
        for k in list(range(-k_max, 0)) + list(range(1, k_max + 1)):
            d = 1 if k > 0 else -1
            same, other = chains[d], chains[-d]
            if same:
                j = min(abs(k), len(same)) - 1
                pairs.append((same[j], d * (j + 1)))
            elif other:
                j = min(abs(k), len(other)) - 1
                pairs.append((other[j], -d * (j + 1)))
            else:
                pairs.append((t, 0))
        return pairs

    def load_data_list(self) -> List[dict]:
        path = self.ann_file
        if not os.path.isfile(path):
            raise FileNotFoundError(f'info file not found: {path}; create it with '
                                    '`python tools/create_data.py nuscenes|synthetic ...` or fix '
                                    'ann_file / data_root in the config.')
        data = load_pickle(path)  # restricted: a pickle that would run code is refused
        if not isinstance(data, dict) or 'infos' not in data:
            found = (f'a dict with keys {sorted(map(str, data))}' if isinstance(data, dict) else
                     f'a {type(data).__name__}')
            raise DataError(f'{path}: not a SplattingOcc info file (expected a dict with '
                            f'"metadata" and "infos", found {found}); create it with '
                            'tools/create_data.py.')
        self.info_metadata = check_info_metadata(data.get('metadata'), path)
        infos = data['infos']
        if not isinstance(infos, (list, tuple)) or not infos:
            what = f'{len(infos)} samples' if isinstance(infos, (list, tuple)) else \
                f'a {type(infos).__name__}'
            raise DataError(f'{path}: "infos" holds {what}, no sample to load; re-run '
                            'tools/create_data.py (is the split empty?) or fix ann_file.')
        for i, info in enumerate(infos):
            check_sample_info(info, i, path, self.camera_names)
        index = {info['token']: i for i, info in enumerate(infos)}
        out = []
        for t, info in enumerate(infos):
            item = dict(
                token=info['token'],
                scene_name=info['scene_name'],
                scene_token=info.get('scene_token', ''),
                timestamp=int(info['timestamp']),
                lidar_path=self._abs(info['lidar_path']),
                lidar2ego=np.asarray(info['lidar2ego'], dtype=np.float64),
                ego2global=np.asarray(info['ego2global'], dtype=np.float64),
                occ_path=self._abs(info['occ_path']),
                label2d_path=self._abs(info.get('label2d_path')),
                cams=self._cams(info),
            )
            adj = []
            if self.num_adjacent > 0:
                for j, offset in self._adjacent(infos, index, t):
                    a = infos[j]
                    adj.append(dict(token=a['token'], offset=int(offset),
                                    ego2global=np.asarray(a['ego2global'], dtype=np.float64),
                                    label2d_path=self._abs(a.get('label2d_path')),
                                    cams=self._cams(a)))
            item['adjacent_frames'] = adj
            out.append(item)
        return out


__all__ = ['Occ3DNuScenesDataset']
