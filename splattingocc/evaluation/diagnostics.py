"""Per-class diagnostics of a trained model: where a class is lost, in 2D or in 3D.

Two views of the same frames, accumulated class by class:

* 3D (the Occ3D read-out, inside ``mask_camera`` when given): of the ground-truth voxels of a
  class, the share the model predicts occupied (any class) and the share it predicts right, the
  median of the read-out field there (the voxelizer's density for Gaussians), how many voxels
  the model predicts as that class, and (when given) the share whose cell of the lifted volume
  receives at least one frustum point of the LSS lift ("lift reach": a voxel outside it gets
  image features only through the 3D layers' neighbourhood).
* 2D (the rendered maps against the LiDAR-projected labels): of the labelled pixels of a class,
  the share whose rendered class (argmax of the composited class probabilities, "none" where the
  ray's alpha is under 0.5) is right, and the median absolute error of the rendered depth.

* lift (the LSS view transform's depth distribution, when given): per feature cell with a LiDAR
  label, the nearest label as the LSS depth loss takes it (``depth_labels_min_pool``) and that
  label's class: the probability mass the lift puts within one depth bin of it, and the median
  absolute error of the distribution's expected depth.

A class that renders right in 2D but is missing in 3D is being explained by the wrong geometry
(smeared or misplaced density); one that is wrong in both is not recognised at all. A class whose
lift misses its depth by metres gets its image features spread along the camera ray, so the 3D
layers have nothing that says where along the ray it is.
Medians come from fixed histograms (``DENSITY_BINS``, ``DEPTH_BINS``): exact to the bin width.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..geometry import depth_labels_min_pool, label_cell_index

__all__ = [
    'ClassDiagnostics', 'DENSITY_BINS', 'DEPTH_BINS', 'histogram_median', 'cells_to_grid',
    'val_pipeline_with_labels', 'nearest_label_per_cell', 'lift_statistics'
]

DENSITY_BINS = np.linspace(0.0, 4.0, 401)  # 0.01 wide; values outside go to the end bins
DEPTH_BINS = np.linspace(0.0, 60.0, 1201)  # 0.05 m wide


def histogram_median(counts: np.ndarray, edges: np.ndarray) -> Optional[float]:
    """Centre of the bin holding the median of a histogram (None when it is empty).

    The median is the value at rank ceil(n / 2) (the lower median for an even n).
    """
    counts = np.asarray(counts)
    n = int(counts.sum())
    if n == 0:
        return None
    k = int(np.searchsorted(np.cumsum(counts), (n + 1) // 2))
    return float(0.5 * (edges[k] + edges[k + 1]))


def _bin(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value, values outside the edges clipped into the end bins."""
    return np.clip(np.searchsorted(edges, values, side='right') - 1, 0, len(edges) - 2)


class ClassDiagnostics:
    """Accumulates the per-class 3D and 2D statistics of the module docstring.

    Args:
        class_names: names of the labels 0..num_classes-1 (free included).
        free_label: the free label (its voxels count as "predicted free").
    """

    def __init__(self, class_names: Sequence[str], free_label: int):
        self.class_names = list(class_names)
        L = len(self.class_names)
        if not 0 <= free_label < L:
            raise ValueError(f'ClassDiagnostics: free_label {free_label} is not a label of the '
                             f'{L} class names')
        self.free_label = free_label
        self.gt_voxels = np.zeros(L, np.int64)
        self.occupied = np.zeros(L, np.int64)
        self.right = np.zeros(L, np.int64)
        self.predicted = np.zeros(L, np.int64)
        self.reached = np.zeros(L, np.int64)
        self.reach_voxels = np.zeros(L, np.int64)
        self.density_hist = np.zeros((L, len(DENSITY_BINS) - 1), np.int64)
        self.pixels = np.zeros(L, np.int64)
        self.pixels_right = np.zeros(L, np.int64)
        self.pixels_none = np.zeros(L, np.int64)
        self.depth_hist = np.zeros((L, len(DEPTH_BINS) - 1), np.int64)
        self.cells = np.zeros(L, np.int64)
        self.cell_near_mass = np.zeros(L, np.float64)
        self.lift_hist = np.zeros((L, len(DEPTH_BINS) - 1), np.int64)
        self.gaussians_predicted: List[int] = []  # per sample, splatting renderers only
        self.gaussians_rendered: List[int] = []

    def add_gaussians(self, predicted: int, rendered: int) -> None:
        """One sample's Gaussian count: predicted by the head, and what reached the render (after
        the renderer's opacity pruning)."""
        if not 0 <= rendered <= predicted:
            raise ValueError(f'ClassDiagnostics: {rendered} Gaussians rendered of {predicted} '
                             'predicted')
        self.gaussians_predicted.append(int(predicted))
        self.gaussians_rendered.append(int(rendered))

    def gaussians(self) -> Optional[dict]:
        """Mean Gaussians per sample, predicted and rendered, and the samples counted (None when
        no sample was counted: a renderer without Gaussians)."""
        if not self.gaussians_rendered:
            return None
        return dict(samples=len(self.gaussians_rendered),
                    predicted=float(np.mean(self.gaussians_predicted)),
                    rendered=float(np.mean(self.gaussians_rendered)))

    def add_voxels(self, gt: np.ndarray, pred: np.ndarray, density: np.ndarray,
                   mask: Optional[np.ndarray] = None,
                   reached: Optional[np.ndarray] = None) -> None:
        """One frame's grids, all [X, Y, Z]: labels, predicted labels, read-out field, the
        voxels to count (None: all) and whether the lift reaches each voxel (None: not known)."""
        gt, pred, density = np.asarray(gt), np.asarray(pred), np.asarray(density)
        if not gt.shape == pred.shape == density.shape:
            raise ValueError(f'ClassDiagnostics.add_voxels: shapes differ: gt {gt.shape}, pred '
                             f'{pred.shape}, density {density.shape}')
        if reached is not None and np.shape(reached) != gt.shape:
            raise ValueError(f'ClassDiagnostics.add_voxels: reached has shape '
                             f'{np.shape(reached)}, the labels {gt.shape}')
        keep = np.ones(gt.shape, bool) if mask is None else np.asarray(mask).astype(bool)
        L = len(self.class_names)
        g = gt[keep].astype(np.int64)
        p = pred[keep].astype(np.int64)
        if g.size and (g.min() < 0 or g.max() >= L or p.min() < 0 or p.max() >= L):
            raise ValueError(f'ClassDiagnostics.add_voxels: labels outside [0, {L})')
        self.gt_voxels += np.bincount(g, minlength=L)
        self.occupied += np.bincount(g[p != self.free_label], minlength=L)
        self.right += np.bincount(g[p == g], minlength=L)
        self.predicted += np.bincount(p, minlength=L)
        np.add.at(self.density_hist, (g, _bin(density[keep], DENSITY_BINS)), 1)
        if reached is not None:
            self.reach_voxels += np.bincount(g, minlength=L)
            self.reached += np.bincount(g[np.asarray(reached).astype(bool)[keep]], minlength=L)

    def _check_labels(self, where: str, labels: np.ndarray) -> int:
        """The number of labels L; a ValueError naming ``where`` if a label is outside [0, L)."""
        L = len(self.class_names)
        if labels.size and (labels.min() < 0 or labels.max() >= L):
            raise ValueError(f'ClassDiagnostics.{where}: labels outside [0, {L})')
        return L

    def add_pixels(self, labels: np.ndarray, depth: np.ndarray, pred: np.ndarray,
                   pred_depth: np.ndarray) -> None:
        """Labelled pixels, all [M]: class labels, depth labels (m), rendered class (-1: no
        surface, alpha < 0.5) and rendered depth (m)."""
        labels, pred = np.asarray(labels).astype(np.int64), np.asarray(pred).astype(np.int64)
        depth, pred_depth = np.asarray(depth, np.float64), np.asarray(pred_depth, np.float64)
        if not labels.shape == depth.shape == pred.shape == pred_depth.shape:
            raise ValueError('ClassDiagnostics.add_pixels: labels, depth, pred and pred_depth '
                             'must have one shape')
        L = self._check_labels('add_pixels', labels)
        self.pixels += np.bincount(labels, minlength=L)
        self.pixels_right += np.bincount(labels[pred == labels], minlength=L)
        self.pixels_none += np.bincount(labels[pred < 0], minlength=L)
        np.add.at(self.depth_hist, (labels, _bin(np.abs(pred_depth - depth), DEPTH_BINS)), 1)

    def add_lift(self, labels: np.ndarray, near_mass: np.ndarray, abs_error: np.ndarray) -> None:
        """Labelled feature cells, all [M]: the class of the cell's nearest label, the lift's
        probability within one bin of that label, and |expected depth - label| (m)."""
        labels = np.asarray(labels).astype(np.int64)
        near_mass, abs_error = np.asarray(near_mass, np.float64), np.asarray(abs_error, np.float64)
        if not labels.shape == near_mass.shape == abs_error.shape:
            raise ValueError('ClassDiagnostics.add_lift: labels, near_mass and abs_error must '
                             'have one shape')
        L = self._check_labels('add_lift', labels)
        self.cells += np.bincount(labels, minlength=L)
        self.cell_near_mass += np.bincount(labels, weights=near_mass, minlength=L)
        np.add.at(self.lift_hist, (labels, _bin(abs_error, DEPTH_BINS)), 1)

    def summary(self) -> Dict[str, dict]:
        """{class name: statistics}; shares in %, None where the class has no voxel / pixel."""
        def share(a, n):
            return None if n == 0 else 100.0 * float(a) / float(n)

        out = {}
        for c, name in enumerate(self.class_names):
            out[name] = dict(
                gt_voxels=int(self.gt_voxels[c]), predicted_voxels=int(self.predicted[c]),
                occupied=share(self.occupied[c], self.gt_voxels[c]),
                right=share(self.right[c], self.gt_voxels[c]),
                median_density=histogram_median(self.density_hist[c], DENSITY_BINS),
                lift_reach=share(self.reached[c], self.reach_voxels[c]),
                pixels=int(self.pixels[c]),
                pixels_right=share(self.pixels_right[c], self.pixels[c]),
                pixels_none=share(self.pixels_none[c], self.pixels[c]),
                median_depth_error=histogram_median(self.depth_hist[c], DEPTH_BINS),
                cells=int(self.cells[c]),
                lift_near=share(self.cell_near_mass[c], self.cells[c]),
                lift_depth_error=histogram_median(self.lift_hist[c], DEPTH_BINS))
        return out

    def table(self) -> List[str]:
        """The summary as text lines."""
        def f(v, fmt):  # fmt: width.precision
            return format('-', '>' + fmt.split('.')[0]) if v is None else format(v, fmt + 'f')

        lines = [f'{"class":22s} {"GT vox":>8s} {"occ %":>6s} {"right %":>7s} {"med dens":>8s} '
                 f'{"pred vox":>8s} {"reach %":>7s} | {"pixels":>7s} {"2D right %":>10s} '
                 f'{"none %":>6s} {"med |dz| m":>10s} | {"cells":>6s} {"lift +-1 %":>10s} '
                 f'{"lift |dz| m":>11s}']
        for name, s in self.summary().items():
            lines.append(
                f'{name:22s} {s["gt_voxels"]:8d} {f(s["occupied"], "6.1")} '
                f'{f(s["right"], "7.1")} {f(s["median_density"], "8.3")} '
                f'{s["predicted_voxels"]:8d} {f(s["lift_reach"], "7.1")} | {s["pixels"]:7d} '
                f'{f(s["pixels_right"], "10.1")} '
                f'{f(s["pixels_none"], "6.1")} {f(s["median_depth_error"], "10.2")} | '
                f'{s["cells"]:6d} {f(s["lift_near"], "10.1")} {f(s["lift_depth_error"], "11.2")}')
        g = self.gaussians()
        if g is not None:
            lines.append(f'Gaussians per sample (mean of {g["samples"]}): {g["predicted"]:.0f} '
                         f'predicted, {g["rendered"]:.0f} rendered (after the renderer\'s opacity '
                         'pruning)')
        return lines


def val_pipeline_with_labels(pipeline: Sequence[dict], require_occ: bool = True) -> list:
    """The val pipeline with ``LoadLabels2D`` (current frame only) after the image loader (a
    copy; the config's list is left as it is). ``require_occ``: it must load the Occ3D ground
    truth too (tools/analysis/diagnose.py's 3D half)."""
    pipeline = [copy.deepcopy(dict(t)) for t in pipeline]
    types = [t['type'] for t in pipeline]
    if require_occ and 'LoadOcc3DLabels' not in types:
        raise UserError('the val pipeline has no LoadOcc3DLabels: the 3D diagnosis needs '
                        'the Occ3D ground truth')
    if 'LoadLabels2D' in types:
        return pipeline
    if 'LoadMultiViewImages' not in types:
        raise UserError('the val pipeline has no LoadMultiViewImages to put '
                        'LoadLabels2D after')
    i = types.index('LoadMultiViewImages')
    labels = dict(type='LoadLabels2D', camera_names=pipeline[i]['camera_names'],
                  load_adjacent=False)
    return pipeline[:i + 1] + [labels] + pipeline[i + 1:]


def nearest_label_per_cell(gt_depth: torch.Tensor, gt_sem: torch.Tensor, feat_size):
    """The LSS depth target of every feature cell (``depth_labels_min_pool``: the nearest label,
    0 where none) and that label's class (-1 where none; of tied labels the largest class).

    Args:
        gt_depth, gt_sem: [B, N, h, w] depth (0 = none) and class labels.
    Returns:
        depth [B, N, Hf, Wf] (float), classes [B, N, Hf, Wf] (long).
    """
    B, N, h, w = gt_depth.shape
    Hf, Wf = feat_size
    dev = gt_depth.device
    target = depth_labels_min_pool(gt_depth, (Hf, Wf))  # [B, N, Hf, Wf]
    cell = label_cell_index((h, w), (Hf, Wf), dev).expand(B * N, -1)  # [B*N, h*w]
    d = gt_depth.reshape(B * N, -1)
    nearest = (d > 0) & (d == target.reshape(B * N, -1).gather(1, cell))
    sem = torch.where(nearest, gt_sem.reshape(B * N, -1).long(), torch.full_like(cell, -1))
    cls = torch.full((B * N, Hf * Wf), -1, dtype=torch.long, device=dev)
    cls = cls.scatter_reduce(1, cell, sem, reduce='amax', include_self=True)
    return target, cls.reshape(B, N, Hf, Wf)


def lift_statistics(view_transform, depth_prob: torch.Tensor, gt_depth: torch.Tensor,
                    gt_sem: torch.Tensor):
    """Per labelled feature cell of the current frame's cameras: (class, the lift's probability
    within one bin of the label, |expected depth - label|) as numpy arrays [M] each."""
    B, N, D, Hf, Wf = depth_prob.shape
    target, cls = nearest_label_per_cell(gt_depth[:, :N], gt_sem[:, :N], (Hf, Wf))
    bins = view_transform.depth_bin_index(target)  # [B, N, Hf, Wf], -1 = none / out of range
    keep = (bins >= 0) & (cls >= 0)
    p = depth_prob.float().permute(0, 1, 3, 4, 2)[keep]  # [M, D]
    k = bins[keep]
    near = sum(p.gather(1, (k + o).clamp(0, D - 1)[:, None])[:, 0] * ((k + o >= 0) & (k + o < D))
               for o in (-1, 0, 1))
    expected = (p * view_transform.depths.to(p)).sum(-1)
    err = (expected - target[keep].float()).abs()
    return cls[keep].cpu().numpy(), near.cpu().numpy(), err.cpu().numpy()


def cells_to_grid(cells: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """[B, x, y, z] values of a coarse grid -> [B, X, Y, Z] on a grid that it divides (each
    voxel takes the value of the cell containing it)."""
    factors = [g // c for g, c in zip(grid, cells.shape[1:])]
    if any(f * c != g for f, c, g in zip(factors, cells.shape[1:], grid)):
        raise ValueError(f'diagnose: the lifted volume {tuple(cells.shape[1:])} does not divide '
                         f'the Occ3D grid {tuple(grid)}')
    for axis, f in enumerate(factors, start=1):
        cells = cells.repeat_interleave(f, dim=axis)
    return cells
