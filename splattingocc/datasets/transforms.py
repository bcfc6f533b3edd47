"""Data pipeline transforms of the Occ3D-nuScenes dataset (registered in ``TRANSFORMS``).

A typical pipeline (all grid/class/camera settings come from configs/_base_/datasets)::

    dict(type='LoadMultiViewImages', camera_names=camera_names),
    dict(type='LoadLabels2D', camera_names=camera_names),           # current + adjacent frames
    dict(type='ResizeCropImages', final_size=(704, 256), scale_range=(0.94, 1.11)),  # training
    dict(type='RandomMirrorScene', prob=0.5),                        # optional, training
    dict(type='PhotoMetricDistortion'),                              # optional, training
    dict(type='LoadOcc3DLabels', occ_size=occ_size, num_classes=num_classes),
    dict(type='PackOccInputs', label_downsample=1),

The results dict between transforms (numpy, float64 geometry):

* from the dataset: ``cams`` {channel: {img_path, cam2img, sensor2ego, ego2global, width, height}},
  ``ego2global``/``lidar2ego`` of the sample, ``label2d_path``, ``occ_path``, ``adjacent_frames``.
* ``img``: list of Ncam RGB arrays [H, W, 3] (uint8, float32 after photometric distortion).
* ``cam2img`` [Ncam, 3, 3]: intrinsics of the current images; ``cam2ego`` [Ncam, 4, 4]: camera ->
  ego at the sample's LiDAR time; ``img_aug`` [Ncam, 3, 3]: pixel transform applied so far.
* ``render_views``: the cameras that supervise rendering, V = F * Ncam, frame-major with the
  current frame first: ``viewmats`` [V, 4, 4] (current ego -> camera), ``Ks`` [V, 3, 3],
  ``offsets`` [V], ``cam_index`` [V] (camera of each view), ``size`` (W, H) of the label image,
  ``points``: V dicts of the sparse labels x, y (continuous pixel coordinates, centre of the
  stored pixel: u + 0.5), depth (camera z) and label (class).

Geometry: resizing maps continuous pixel coordinates x -> s * x and cropping subtracts the crop
origin, so every image transform is one 3x3 matrix A applied to intrinsics (K' = A K) and to the
label points alike; depth (camera z) is unchanged. Labels are rasterised only at the end
(``PackOccInputs``), nearest point per pixel, at (H, W) / label_downsample.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..errors import CorruptFileError, DataError
from ..registry import TRANSFORMS
from ..geometry import rigid_inverse_np
from .label_projection import rasterize_point_labels
from .nuscenes_converter import load_labels2d
from .occ3d import load_occ3d_labels

cv2.setNumThreads(1)  # data loader workers parallelise; OpenCV threads would oversubscribe


def _require(results: dict, key: str, transform: str, needs: str) -> None:
    if key not in results:
        raise KeyError(f'{transform}: the results dict has no {key!r}; put {needs} before '
                       f'{transform} in the pipeline.')


_JPEG_SOI, _JPEG_SOS, _JPEG_EOI = b'\xff\xd8', b'\xff\xda', b'\xff\xd9'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def image_truncation(data: bytes) -> Optional[str]:
    """Why the bytes of a JPEG or PNG file are incomplete, or None.

    OpenCV decodes a truncated JPEG without an error (libjpeg only warns "Premature end of JPEG
    file" on stderr and fills the rest of the image with grey), so the end is checked here: a
    JPEG's last scan (after its last start-of-scan marker FFDA) must be followed by the
    end-of-image marker FFD9 (inside entropy-coded data an FF byte is always followed by 00 or a
    restart marker, so FFD9 cannot occur there by chance); a PNG must end with its IEND chunk.
    """
    if data[:2] == _JPEG_SOI:
        sos = data.rfind(_JPEG_SOS)
        if sos < 0:
            return 'a JPEG without image data (no start-of-scan marker)'
        if data.find(_JPEG_EOI, sos) < 0:
            return 'a truncated JPEG (no end-of-image marker after the last scan)'
    elif data[:8] == _PNG_SIGNATURE:
        if b'IEND' not in data[-16:]:
            return 'a truncated PNG (no IEND chunk at the end)'
    return None


def read_image_rgb(path) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3]; a missing, corrupt or truncated file is a clear
    error (:class:`~splattingocc.errors.CorruptFileError`, an ``OSError``)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'camera image not found: {path}; check data_root and the info '
                                'pkl (re-run tools/create_data.py if the data moved).')
    with open(path, 'rb') as f:
        data = f.read()
    problem = image_truncation(data)
    img = None
    if problem is None:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            problem = 'not a decodable image (corrupt)'
    if problem is not None:
        raise CorruptFileError(f'camera image {path} cannot be decoded: {problem} '
                               f'({len(data)} bytes); re-download or regenerate it.')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@TRANSFORMS.register_module()
class LoadMultiViewImages:
    """Load the current frame's camera images and their calibration.

    Adds ``img`` (list of [H, W, 3] uint8 RGB), ``cam2img`` [Ncam, 3, 3], ``cam2ego`` [Ncam, 4, 4]
    (camera -> ego at the LiDAR timestamp: ego2global_lidar^-1 @ ego2global_cam @ sensor2ego),
    ``img_aug`` [Ncam, 3, 3] (identity), ``camera_names``.

    Args:
        camera_names: cameras in the order of the config's ``camera_names``.
    """

    def __init__(self, camera_names: Sequence[str]):
        assert len(camera_names) > 0, 'camera_names is empty'
        self.camera_names = list(camera_names)

    def __call__(self, results: dict) -> dict:
        _require(results, 'cams', 'LoadMultiViewImages', 'the dataset (Occ3DNuScenesDataset)')
        global_to_ego = rigid_inverse_np(results['ego2global'])
        imgs, Ks, cam2ego = [], [], []
        for ch in self.camera_names:
            if ch not in results['cams']:
                raise DataError(f'camera {ch} of camera_names is not in the info of sample '
                                f'{results.get("token")} (has {sorted(results["cams"])}); fix '
                                'camera_names in the config or re-run tools/create_data.py.')
            cam = results['cams'][ch]
            img = read_image_rgb(cam['img_path'])
            if (img.shape[1], img.shape[0]) != (cam['width'], cam['height']):
                raise DataError(f'{cam["img_path"]}: image is {img.shape[1]}x{img.shape[0]} but '
                                f'the info pkl says {cam["width"]}x{cam["height"]}; the '
                                'intrinsics would not match, re-run tools/create_data.py.')
            imgs.append(img)
            Ks.append(np.asarray(cam['cam2img'], dtype=np.float64))
            cam2ego.append(global_to_ego @ cam['ego2global'] @ cam['sensor2ego'])
        results['img'] = imgs
        results['cam2img'] = np.stack(Ks)  # [Ncam, 3, 3]
        results['cam2ego'] = np.stack(cam2ego)  # [Ncam, 4, 4]
        results['img_aug'] = np.tile(np.eye(3), (len(imgs), 1, 1))  # [Ncam, 3, 3]
        results['camera_names'] = list(self.camera_names)
        return results

    def __repr__(self):
        return f'{type(self).__name__}(camera_names={self.camera_names})'


@TRANSFORMS.register_module()
class LoadLabels2D:
    """Load the sparse 2D depth/semantic labels of the current and adjacent frames.

    Adds ``render_views`` (see the module docstring). Views are frame-major: the Ncam cameras of
    the current frame, then those of each adjacent frame in the order of ``adjacent_frames``
    (t-k .. t+k). An adjacent camera's view matrix is current ego -> global -> its ego (at its own
    timestamp) -> camera.

    Args:
        camera_names: cameras in the config's order.
        load_adjacent: also load the adjacent frames given by the dataset (``num_adjacent``).
        ignore_classes_adjacent: classes whose points are dropped from adjacent frames (moving
            objects would be in the wrong place); None keeps all (the model may ignore them).
    """

    def __init__(self, camera_names: Sequence[str], load_adjacent: bool = True,
                 ignore_classes_adjacent: Optional[Sequence[int]] = None):
        self.camera_names = list(camera_names)
        self.load_adjacent = load_adjacent
        self.ignore_classes_adjacent = (None if ignore_classes_adjacent is None else
                                        np.asarray(list(ignore_classes_adjacent), dtype=np.int64))

    def _frame_views(self, frame: dict, offset: int, ego_cur2global: np.ndarray, is_adj: bool):
        labels = load_labels2d(frame['label2d_path'], self.camera_names)
        out = []
        for i, ch in enumerate(self.camera_names):
            cam = frame['cams'][ch]
            # current ego -> global -> ego at the camera's time -> camera
            viewmat = (rigid_inverse_np(cam['sensor2ego']) @ rigid_inverse_np(cam['ego2global'])
                       @ ego_cur2global)
            lab = labels[ch]
            label = lab['label'].astype(np.int64)
            depth = lab['depth'].astype(np.float64)
            x = lab['u'].astype(np.float64) + 0.5
            y = lab['v'].astype(np.float64) + 0.5
            if is_adj and self.ignore_classes_adjacent is not None:
                keep = ~np.isin(label, self.ignore_classes_adjacent)
                x, y, depth, label = x[keep], y[keep], depth[keep], label[keep]
            out.append(dict(viewmat=viewmat, K=np.asarray(cam['cam2img'], dtype=np.float64),
                            offset=offset, cam_index=i, size=(cam['width'], cam['height']),
                            points=dict(x=x, y=y, depth=depth, label=label)))
        return out

    def __call__(self, results: dict) -> dict:
        _require(results, 'label2d_path', 'LoadLabels2D', 'the dataset (Occ3DNuScenesDataset)')
        if results.get('mirrored'):
            raise ValueError('LoadLabels2D: RandomMirrorScene ran before it, so the labels would '
                             'not be mirrored; put RandomMirrorScene after LoadLabels2D and '
                             'ResizeCropImages in the pipeline')
        ego_cur2global = np.asarray(results['ego2global'], dtype=np.float64)
        views = self._frame_views(results, 0, ego_cur2global, is_adj=False)
        if self.load_adjacent:
            for adj in results.get('adjacent_frames', []):
                views += self._frame_views(adj, int(adj['offset']), ego_cur2global, is_adj=True)
        sizes = {v['size'] for v in views}
        if len(sizes) != 1:
            raise ValueError(f'sample {results.get("token")}: the stored images of the render '
                             f'views have different sizes {sorted(sizes)}; all cameras must '
                             'share one '
                             'size (resize the dataset images).')
        results['render_views'] = dict(
            viewmats=np.stack([v['viewmat'] for v in views]),  # [V, 4, 4]
            Ks=np.stack([v['K'] for v in views]),  # [V, 3, 3]
            offsets=np.array([v['offset'] for v in views], dtype=np.int64),  # [V]
            cam_index=np.array([v['cam_index'] for v in views], dtype=np.int64),  # [V]
            size=sizes.pop(),
            points=[v['points'] for v in views],
        )
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(camera_names={self.camera_names}, '
                f'load_adjacent={self.load_adjacent}, '
                f'ignore_classes_adjacent={self.ignore_classes_adjacent})')


def resize_crop_matrix(sx: float, sy: float, x0: float, y0: float) -> np.ndarray:
    """[3, 3] pixel transform: scale continuous coordinates, then subtract the crop origin."""
    return np.array([[sx, 0.0, -x0], [0.0, sy, -y0], [0.0, 0.0, 1.0]])


@TRANSFORMS.register_module()
class ResizeCropImages:
    """Resize every camera image, then crop (or zero-pad) it to ``final_size``.

    The scale fits the width, s = W_out / W_in, times a factor drawn from ``scale_range`` per camera
    (training augmentation; (1, 1) = none). The crop keeps the bottom of the image (the sky is
    dropped, as BEVDet does) with an extra random share ``crop_bottom_range`` of the height cut from
    the bottom, and is centred horizontally, shifted by a random fraction ``crop_x_range`` of the
    free width. The intrinsics, the accumulated ``img_aug`` and all render views of the camera
    (current and adjacent frames) follow, so geometry stays consistent.

    Args:
        final_size: (W, H) of the network input.
        scale_range: (lo, hi) multiplicative jitter of the scale; (1, 1) for testing.
        crop_bottom_range: (lo, hi) fraction of the resized height additionally cut at the bottom.
        crop_x_range: (lo, hi) in [-1, 1]: horizontal crop shift as a fraction of half the free
            width.
        interpolation: 'area' when shrinking and 'linear' when enlarging ('auto'), or fixed.
    """

    def __init__(self, final_size: Tuple[int, int], scale_range=(1.0, 1.0),
                 crop_bottom_range=(0.0, 0.0), crop_x_range=(0.0, 0.0), interpolation='auto'):
        assert len(final_size) == 2 and min(final_size) > 0, final_size
        self.final_size = (int(final_size[0]), int(final_size[1]))
        self.scale_range = tuple(float(s) for s in scale_range)
        self.crop_bottom_range = tuple(float(s) for s in crop_bottom_range)
        self.crop_x_range = tuple(float(s) for s in crop_x_range)
        assert interpolation in ('auto', 'area', 'linear', 'nearest'), interpolation
        self.interpolation = interpolation

    def _params(self, W0: int, H0: int):
        W, H = self.final_size
        s = W / W0 * np.random.uniform(*self.scale_range)
        newW, newH = max(1, int(round(W0 * s))), max(1, int(round(H0 * s)))
        cut = np.random.uniform(*self.crop_bottom_range) * newH
        y0 = int(round(newH - cut - H))
        x0 = int(round((newW - W) / 2 * (1 + np.random.uniform(*self.crop_x_range))))
        return newW, newH, x0, y0

    def _interp(self, s: float) -> int:
        if self.interpolation == 'auto':
            return cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        return dict(area=cv2.INTER_AREA, linear=cv2.INTER_LINEAR,
                    nearest=cv2.INTER_NEAREST)[self.interpolation]

    def __call__(self, results: dict) -> dict:
        _require(results, 'img', 'ResizeCropImages', 'LoadMultiViewImages')
        W, H = self.final_size
        mats, in_sizes = [], []
        for i, img in enumerate(results['img']):
            H0, W0 = img.shape[:2]
            in_sizes.append((W0, H0))
            newW, newH, x0, y0 = self._params(W0, H0)
            sx, sy = newW / W0, newH / H0
            resized = cv2.resize(img, (newW, newH), interpolation=self._interp(sx))
            out = np.zeros((H, W) + img.shape[2:], dtype=img.dtype)
            # overlap of the crop window [x0, x0 + W) x [y0, y0 + H) with the resized image
            sx0, sy0 = max(x0, 0), max(y0, 0)
            sx1, sy1 = min(x0 + W, newW), min(y0 + H, newH)
            if sx1 > sx0 and sy1 > sy0:
                out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = resized[sy0:sy1, sx0:sx1]
            results['img'][i] = out
            A = resize_crop_matrix(sx, sy, x0, y0)
            mats.append(A)
            results['cam2img'][i] = A @ results['cam2img'][i]
            results['img_aug'][i] = A @ results['img_aug'][i]
        views = results.get('render_views')
        if views is not None:
            if tuple(views['size']) != tuple(in_sizes[0]) or len(set(in_sizes)) != 1:
                raise DataError(f'ResizeCropImages: the stored label views are {views["size"]} '
                                f'but the camera images are {sorted(set(in_sizes))}; the 2D '
                                'labels were made for other images, re-run '
                                'tools/create_data.py.')
            for v, ci in enumerate(views['cam_index']):
                A = mats[ci]
                views['Ks'][v] = A @ views['Ks'][v]
                p = views['points'][v]
                p['x'] = A[0, 0] * p['x'] + A[0, 2]
                p['y'] = A[1, 1] * p['y'] + A[1, 2]
            views['size'] = (W, H)
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(final_size={self.final_size}, scale_range='
                f'{self.scale_range}, crop_bottom_range={self.crop_bottom_range}, '
                f'crop_x_range={self.crop_x_range})')


def mirror_grid_y(grid: np.ndarray) -> np.ndarray:
    """[X, Y, Z] -> the same grid reflected in y (index j -> Y - 1 - j), for a grid whose y
    range is symmetric about the ego origin (Occ3D: -40 .. 40 m)."""
    return np.ascontiguousarray(grid[:, ::-1])


@TRANSFORMS.register_module()
class RandomMirrorScene:
    """With probability ``prob``, mirror the whole sample left-right (training augmentation).

    The scene is reflected in the ego x-z plane (ego y -> -y), which every camera sees as its
    image flipped horizontally: image column u -> W - u, the camera's x axis reversed. So the
    images and the label points are flipped, and each camera (current and adjacent render views)
    becomes ``cam2ego' = M cam2ego F`` with ``M = diag(1, -1, 1)`` (ego) and ``F = diag(-1, 1, 1)``
    (camera x), a proper rotation again, and ``K' = P K F`` with ``P`` the pixel flip, so fx stays
    positive and cx -> W - cx. Depth (camera z) is unchanged. Occ3D arrays, when loaded, are
    reversed along y, which assumes a grid symmetric in y (Occ3D: -40 .. 40 m). Put it after
    ``ResizeCropImages`` (it flips the images at their final size) and before ``PackOccInputs``;
    ``results['mirrored']`` records the draw. A mirrored world drives on the other side of the
    road, the cost of doubling what the cameras see (BEVDet flips for the same reason).
    """

    def __init__(self, prob: float = 0.5):
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f'RandomMirrorScene: prob must be in [0, 1], got {prob!r}')
        self.prob = float(prob)

    @staticmethod
    def _pixel_flip(W: float) -> np.ndarray:
        return np.array([[-1.0, 0.0, W], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])

    def __call__(self, results: dict) -> dict:
        _require(results, 'img', 'RandomMirrorScene', 'LoadMultiViewImages')
        mirror = bool(np.random.rand() < self.prob)
        results['mirrored'] = mirror
        if not mirror:
            return results
        M4, F4 = np.diag([1.0, -1.0, 1.0, 1.0]), np.diag([-1.0, 1.0, 1.0, 1.0])
        F3 = F4[:3, :3]
        for i, img in enumerate(results['img']):
            P = self._pixel_flip(img.shape[1])
            results['img'][i] = np.ascontiguousarray(img[:, ::-1])
            results['cam2img'][i] = P @ results['cam2img'][i] @ F3
            results['cam2ego'][i] = M4 @ results['cam2ego'][i] @ F4
            results['img_aug'][i] = P @ results['img_aug'][i]
        views = results.get('render_views')
        if views is not None:
            P = self._pixel_flip(views['size'][0])
            for v in range(len(views['Ks'])):
                views['Ks'][v] = P @ views['Ks'][v] @ F3
                views['viewmats'][v] = F4 @ views['viewmats'][v] @ M4
                views['points'][v]['x'] = views['size'][0] - views['points'][v]['x']
        for key in ('voxel_semantics', 'mask_camera', 'mask_lidar'):
            if key in results:  # loaded before; LoadOcc3DLabels mirrors them when loaded after
                results[key] = mirror_grid_y(results[key])
        return results


@TRANSFORMS.register_module()
class PhotoMetricDistortion:
    """Random brightness, contrast and saturation per camera (geometry untouched).

    Each effect is applied with probability ``prob``: brightness adds a value in
    [-brightness_delta, brightness_delta], contrast multiplies by a factor in ``contrast_range``,
    saturation blends with the grey image by a factor in ``saturation_range``. Output float32
    RGB clipped to 0..255.
    """

    def __init__(self, brightness_delta: float = 32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), prob: float = 0.5):
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.prob = float(prob)

    def __call__(self, results: dict) -> dict:
        _require(results, 'img', 'PhotoMetricDistortion', 'LoadMultiViewImages')
        for i, img in enumerate(results['img']):
            img = img.astype(np.float32)
            if np.random.rand() < self.prob:
                img += np.random.uniform(-self.brightness_delta, self.brightness_delta)
            if np.random.rand() < self.prob:
                img *= np.random.uniform(*self.contrast_range)
            if np.random.rand() < self.prob:
                grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # [H, W]
                f = np.random.uniform(*self.saturation_range)
                img = grey[..., None] + f * (img - grey[..., None])
            results['img'][i] = np.clip(img, 0, 255)
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(brightness_delta={self.brightness_delta}, contrast_range='
                f'{self.contrast_range}, saturation_range={self.saturation_range}, '
                f'prob={self.prob})')


@TRANSFORMS.register_module()
class LoadOcc3DLabels:
    """Load the Occ3D ground truth of the sample (``occ_path``).

    Adds ``voxel_semantics``, ``mask_lidar``, ``mask_camera``: uint8 [X, Y, Z].

    Args:
        occ_size: (X, Y, Z) from the dataset config.
        num_classes: classes including free (18), from the dataset config.
    """

    def __init__(self, occ_size: Sequence[int], num_classes: int):
        self.occ_size = tuple(int(s) for s in occ_size)
        self.num_classes = int(num_classes)

    def __call__(self, results: dict) -> dict:
        _require(results, 'occ_path', 'LoadOcc3DLabels', 'the dataset (Occ3DNuScenesDataset)')
        gt = load_occ3d_labels(results['occ_path'], self.occ_size, self.num_classes)
        results['voxel_semantics'] = gt['semantics']
        results['mask_lidar'] = gt['mask_lidar']
        results['mask_camera'] = gt['mask_camera']
        if results.get('mirrored'):  # RandomMirrorScene ran before: mirror these too
            for key in ('voxel_semantics', 'mask_lidar', 'mask_camera'):
                results[key] = mirror_grid_y(results[key])
        return results

    def __repr__(self):
        return f'{type(self).__name__}(occ_size={self.occ_size}, num_classes={self.num_classes})'


@TRANSFORMS.register_module()
class PackOccInputs:
    """Rasterise the labels and pack the sample into the tensors of the data contract.

    Output keys: 'img' float32 [Ncam, 3, H, W] (RGB 0..255), 'cam2img' [Ncam, 3, 3], 'cam2ego'
    [Ncam, 4, 4], 'render_viewmats' [V, 4, 4], 'render_Ks' [V, 3, 3] (label resolution),
    'render_frame_offset' int64 [V], 'gt_depth' float32 [V, h, w] (0 = none), 'gt_semantics' int64
    [V, h, w] (ignore_label = none), the Occ3D arrays as uint8 tensors when loaded, and 'meta'.
    (h, w) = (H, W) / label_downsample. Without LoadLabels2D the render views are the current
    cameras and there is no gt_depth / gt_semantics.

    Args:
        label_downsample: integer factor between the input image and the label maps.
        ignore_label: value of unlabelled pixels in gt_semantics (config ``ignore_label``).
    """

    def __init__(self, label_downsample: int = 1, ignore_label: int = 255):
        self.label_downsample = int(label_downsample)
        assert self.label_downsample >= 1, label_downsample
        self.ignore_label = int(ignore_label)

    def __call__(self, results: dict) -> dict:
        _require(results, 'img', 'PackOccInputs', 'LoadMultiViewImages')
        imgs = results['img']
        H, W = imgs[0].shape[:2]
        if any(im.shape[:2] != (H, W) for im in imgs):
            raise ValueError('PackOccInputs: camera images differ in size '
                             f'{sorted({im.shape[:2] for im in imgs})}; add ResizeCropImages.')
        ds = self.label_downsample
        if H % ds or W % ds:
            raise ValueError(f'PackOccInputs: label_downsample={ds} does not divide the input '
                             f'image size {W}x{H}; choose a divisor.')
        h, w = H // ds, W // ds
        D = np.diag([1.0 / ds, 1.0 / ds, 1.0])  # pixel transform input image -> label map

        img = np.stack(imgs).astype(np.float32)  # [Ncam, H, W, 3]
        img = np.ascontiguousarray(img.transpose(0, 3, 1, 2))  # [Ncam, 3, H, W]
        out = dict(
            img=torch.from_numpy(img),
            cam2img=torch.from_numpy(results['cam2img'].astype(np.float32)),
            cam2ego=torch.from_numpy(results['cam2ego'].astype(np.float32)),
        )
        views = results.get('render_views')
        if views is not None:
            if tuple(views['size']) != (W, H):
                raise ValueError(f'PackOccInputs: the label views are {views["size"]} but the '
                                 f'images are {(W, H)}; every camera must be resized the same way '
                                 '(use ResizeCropImages on all of them).')
            depth_maps, sem_maps = [], []
            for p in views['points']:
                d, s = rasterize_point_labels(p['x'] / ds, p['y'] / ds, p['depth'], p['label'],
                                              w, h, ignore_label=self.ignore_label)
                depth_maps.append(d)
                sem_maps.append(s)
            out['render_viewmats'] = torch.from_numpy(views['viewmats'].astype(np.float32))
            out['render_Ks'] = torch.from_numpy((D @ views['Ks']).astype(np.float32))
            out['render_frame_offset'] = torch.from_numpy(views['offsets'].astype(np.int64))
            out['gt_depth'] = torch.from_numpy(np.stack(depth_maps))  # [V, h, w]
            out['gt_semantics'] = torch.from_numpy(np.stack(sem_maps))  # [V, h, w]
        else:
            out['render_viewmats'] = torch.from_numpy(
                rigid_inverse_np(results['cam2ego']).astype(np.float32))
            out['render_Ks'] = torch.from_numpy((D @ results['cam2img']).astype(np.float32))
            out['render_frame_offset'] = torch.zeros(len(imgs), dtype=torch.int64)
        for key in ('voxel_semantics', 'mask_camera', 'mask_lidar'):
            if key in results:
                out[key] = torch.from_numpy(np.ascontiguousarray(results[key], dtype=np.uint8))
        out['meta'] = dict(
            sample_token=results['token'],
            scene_name=results['scene_name'],
            timestamp=int(results['timestamp']),
            occ_path=str(results['occ_path']),
            lidar2ego=np.asarray(results['lidar2ego'], dtype=np.float64),
            ego2global=np.asarray(results['ego2global'], dtype=np.float64),
            sample_idx=int(results['sample_idx']),
        )
        return out

    def __repr__(self):
        return (f'{type(self).__name__}(label_downsample={self.label_downsample}, '
                f'ignore_label={self.ignore_label})')


__all__ = ['LoadMultiViewImages', 'LoadLabels2D', 'ResizeCropImages', 'PhotoMetricDistortion',
           'LoadOcc3DLabels', 'PackOccInputs', 'read_image_rgb', 'image_truncation',
           'resize_crop_matrix']
