"""Which pixels to render in a training step, and their labels.

The 2D labels are per-camera maps (``gt_semantics`` [B, C, h, w], ``ignore_index`` = no label, and
optionally ``gt_depth`` [B, C, h, w], 0 = no depth). A sampler returns continuous pixel centres
(u, v) = (column + 0.5, row + 0.5) in pixels of those maps, ready for a renderer's ``pixels``
argument (so the cameras must describe images of the label maps' size), with the labels there.

Modes:

* ``'dense'``: every pixel, P = h * w; ``mask`` marks the labelled ones.
* ``'uniform'``: ``num_rays // C`` labelled pixels per camera, all equally likely.
* ``'class_weighted'``: the same count, each labelled pixel drawn with probability proportional to
  the weight of its class (RenderOcc's weighted ray sampling, with the rays split evenly over the
  cameras instead of drawn from the pooled rays of all cameras, so every camera renders the same
  number of pixels). Weight rules (computed from the label histogram of each sample, or of the
  whole batch with ``histogram='batch'``):

  - ``'renderocc'``: ``exp(beta * (n_max / n_c - 1))`` with ``beta`` = 0.005 (RenderOcc,
    ``mmdet3d/datasets/ray.py``, ``generate_rays``);
  - ``'inverse_frequency'``: ``(n_total / n_c) ** power``;
  - ``'fixed'``: the given ``class_weights``.

  Classes absent from the histogram get weight 0 (no pixel has them).

Without replacement (the default, as RenderOcc) the draw is sequential weighted sampling without
replacement, done for all cameras at once with the exponential-key method of Efraimidis & Spirakis
(keep the P largest ``log(u) / weight``, u uniform in (0, 1]). A camera with fewer labelled pixels
than P returns all of them and pads the rest with ``mask`` False (pixel (0.5, 0.5), label
``ignore_index``, depth 0). With ``replacement=True`` the P draws are independent (any camera with
at least one labelled pixel fills all P). The result is a deterministic function of the inputs and
``generator``'s state.

Open sky (``open_sky_mask``): pixels above every LiDAR return of their image column are rays
the LiDAR swept without a return; ``FreeSpaceLoss(sky_rays=...)`` draws some of them
(``sample_mask_pixels``) as free rays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import MODELS

__all__ = ['PixelSample', 'PixelSampler', 'sample_pixels', 'class_weights_from_histogram',
           'label_histogram', 'open_sky_mask', 'sample_mask_pixels']

MODES = ('dense', 'uniform', 'class_weighted')
WEIGHT_RULES = ('renderocc', 'inverse_frequency', 'fixed')


@dataclass
class PixelSample:
    """Sampled pixels and their labels.

    Attributes:
        pixels:    [B, C, P, 2] continuous (u, v) pixel centres (column + 0.5, row + 0.5).
        semantics: [B, C, P] int64 class labels, ``ignore_index`` where ``mask`` is False.
        depth:     [B, C, P] depth labels (0 where ``mask`` is False), or None if no depth given.
        mask:      [B, C, P] bool, True where the slot holds a labelled pixel.
        index:     [B, C, P] int64 flat pixel index ``row * w + column`` (0 at padding).
    """

    pixels: Tensor
    semantics: Tensor
    depth: Optional[Tensor]
    mask: Tensor
    index: Tensor


def label_histogram(labels: Tensor,  # [...]
                    num_classes: int,
                    ignore_index: int = 255) -> Tensor:
    """Counts of each class in ``labels`` (``ignore_index`` skipped). Returns [num_classes] int64.

    Raises ValueError naming the offending value if a label is outside [0, num_classes) and not
    ``ignore_index``.
    """
    flat = labels.reshape(-1).long()
    flat = flat[flat != ignore_index]
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_classes):
        bad = int(flat.min()) if int(flat.min()) < 0 else int(flat.max())
        raise ValueError(f'gt_semantics holds class {bad}, outside [0, {num_classes}) and not the '
                         f'ignore index {ignore_index}: check num_classes in the pixel sampler '
                         'config against the dataset classes')
    return torch.bincount(flat, minlength=num_classes)


def class_weights_from_histogram(counts: Tensor,  # [num_classes]
                                 rule: str = 'renderocc',
                                 beta: float = 0.005,
                                 power: float = 0.5,
                                 class_weights: Optional[Sequence[float]] = None) -> Tensor:
    """Per-class sampling weights from class counts; 0 for classes with count 0.

    Args:
        counts: [num_classes] pixel counts per class.
        rule: 'renderocc' (``exp(beta * (n_max / n_c - 1))``), 'inverse_frequency'
            (``(n_total / n_c) ** power``) or 'fixed' (``class_weights``).

    Returns:
        [num_classes] float64 weights >= 0.
    """
    assert counts.dim() == 1, counts.shape
    n = counts.double()
    present = n > 0
    safe = torch.where(present, n, torch.ones_like(n))
    if rule == 'renderocc':
        w = torch.exp(beta * (n.max() / safe - 1))
    elif rule == 'inverse_frequency':
        w = (n.sum() / safe) ** power
    elif rule == 'fixed':
        if class_weights is None or len(class_weights) != counts.numel():
            raise ValueError(f"pixel sampler weight_rule='fixed' needs class_weights with "
                             f'{counts.numel()} numbers (one per class), got {class_weights}')
        w = torch.as_tensor(class_weights, dtype=torch.float64, device=counts.device)
        if (w < 0).any():
            raise ValueError(f'pixel sampler class_weights must be >= 0, got {list(class_weights)}')
    else:
        raise ValueError(f'pixel sampler weight_rule must be one of {WEIGHT_RULES}, got {rule!r}')
    return torch.where(present, w, torch.zeros_like(w))


def sample_pixels(gt_semantics: Tensor,  # [B, C, h, w]
                  gt_depth: Optional[Tensor] = None,  # [B, C, h, w]
                  mode: str = 'class_weighted',
                  num_rays: int = 38400,
                  num_classes: Optional[int] = None,
                  weight_rule: str = 'renderocc',
                  beta: float = 0.005,
                  power: float = 0.5,
                  class_weights: Optional[Sequence[float]] = None,
                  histogram: str = 'sample',
                  replacement: bool = False,
                  require_depth: bool = False,
                  ignore_index: int = 255,
                  generator: Optional[torch.Generator] = None) -> PixelSample:
    """Choose pixels to render and gather their labels (see the module docstring).

    Args:
        gt_semantics: [B, C, h, w] integer class labels, ``ignore_index`` = unlabelled.
        gt_depth: [B, C, h, w] depth labels (0 = none), or None.
        mode: 'dense', 'uniform' or 'class_weighted'.
        num_rays: pixels per sample for the sampling modes, split evenly: P = num_rays // C.
        num_classes: number of classes (needed by 'class_weighted').
        weight_rule, beta, power, class_weights: the class weight rule (class_weighted only).
        histogram: 'sample' (weights from each sample's own labels, as RenderOcc) or 'batch'.
        replacement: draw with replacement.
        require_depth: a pixel counts as labelled only if its depth label is > 0 as well.
        generator: torch.Generator for the random draw (on the labels' device).

    Returns:
        PixelSample with pixels [B, C, P, 2], semantics [B, C, P], depth [B, C, P] or None,
        mask [B, C, P], index [B, C, P].
    """
    assert gt_semantics.dim() == 4, gt_semantics.shape
    B, C, h, w = gt_semantics.shape
    if gt_depth is not None:
        assert gt_depth.shape == gt_semantics.shape, (gt_depth.shape, gt_semantics.shape)
    if mode not in MODES:
        raise ValueError(f'pixel sampler mode must be one of {MODES}, got {mode!r}')
    if histogram not in ('sample', 'batch'):
        raise ValueError(f"pixel sampler histogram must be 'sample' or 'batch', got {histogram!r}")
    device = gt_semantics.device
    labels = gt_semantics.reshape(B, C, h * w).long()  # [B, C, h*w]
    valid = labels != ignore_index  # [B, C, h*w]
    if require_depth:
        if gt_depth is None:
            raise ValueError('pixel sampler require_depth=True needs gt_depth')
        valid &= gt_depth.reshape(B, C, h * w) > 0

    if mode == 'dense':
        index = torch.arange(h * w, device=device).expand(B, C, h * w)  # [B, C, P]
        mask = valid
    else:
        P = int(num_rays) // C
        if P < 1:
            raise ValueError(f'pixel sampler num_rays ({num_rays}) must be at least the number of '
                             f'cameras ({C})')
        weight = valid.double()  # [B, C, h*w]
        if mode == 'class_weighted':
            if num_classes is None:
                raise ValueError("pixel sampler mode='class_weighted' needs num_classes (take it "
                                 'from the dataset config)')
            safe_labels = torch.where(valid, labels, torch.zeros_like(labels))  # [B, C, h*w]
            if histogram == 'batch':
                cw = class_weights_from_histogram(
                    label_histogram(labels[valid], num_classes, ignore_index), weight_rule, beta,
                    power, class_weights).to(device)  # [num_classes]
                weight = weight * cw[safe_labels]
            else:
                for b in range(B):
                    cw = class_weights_from_histogram(
                        label_histogram(labels[b][valid[b]], num_classes, ignore_index),
                        weight_rule, beta, power, class_weights).to(device)  # [num_classes]
                    weight[b] = weight[b] * cw[safe_labels[b]]
        weight = weight.reshape(B * C, h * w)  # [B*C, h*w]
        positive = weight > 0  # [B*C, h*w]
        if replacement:
            has_any = positive.any(dim=1)  # [B*C]
            probs = torch.where(has_any[:, None], weight, torch.ones_like(weight))
            index = torch.multinomial(probs, P, replacement=True, generator=generator)  # [B*C, P]
            mask = has_any[:, None].expand(B * C, P)
        else:
            u = 1.0 - torch.rand(B * C, h * w, generator=generator, device=device,
                                 dtype=torch.float64)  # (0, 1]
            keys = torch.where(positive, torch.log(u) / torch.where(positive, weight,
                                                                    torch.ones_like(weight)),
                               torch.full_like(weight, -float('inf')))  # [B*C, h*w]
            k = min(P, h * w)
            top, index = torch.topk(keys, k, dim=1)  # [B*C, k]
            mask = top > -float('inf')
            if k < P:  # fewer pixels than requested in the whole image: pad
                pad = P - k
                index = torch.cat([index, index.new_zeros(B * C, pad)], dim=1)
                mask = torch.cat([mask, mask.new_zeros(B * C, pad)], dim=1)
        index = torch.where(mask, index, torch.zeros_like(index)).reshape(B, C, P)  # [B, C, P]
        mask = mask.reshape(B, C, P)

    rows = torch.div(index, w, rounding_mode='floor')
    cols = index - rows * w
    pixels = torch.stack([cols, rows], dim=-1).float() + 0.5  # [B, C, P, 2]
    semantics = torch.gather(labels, 2, index)  # [B, C, P]
    semantics = torch.where(mask, semantics, torch.full_like(semantics, ignore_index))
    depth = None
    if gt_depth is not None:
        depth = torch.gather(gt_depth.reshape(B, C, h * w), 2, index)  # [B, C, P]
        depth = torch.where(mask, depth, torch.zeros_like(depth))
    return PixelSample(pixels=pixels, semantics=semantics, depth=depth, mask=mask, index=index)


@MODELS.register_module()
class PixelSampler:
    """Config-built wrapper of :func:`sample_pixels`, e.g.::

        pixel_sampler = dict(type='PixelSampler', mode='class_weighted', num_rays=38400,
                             num_classes=num_classes, weight_rule='renderocc', beta=0.005)

    Call it as ``sampler(gt_semantics, gt_depth=None, generator=None) -> PixelSample``.
    """

    def __init__(self, mode: str = 'class_weighted', num_rays: int = 38400,
                 num_classes: Optional[int] = None, weight_rule: str = 'renderocc',
                 beta: float = 0.005, power: float = 0.5,
                 class_weights: Optional[Sequence[float]] = None, histogram: str = 'sample',
                 replacement: bool = False, require_depth: bool = False,
                 ignore_index: int = 255):
        if mode not in MODES:
            raise ValueError(f'pixel sampler mode must be one of {MODES}, got {mode!r}')
        if mode == 'class_weighted' and num_classes is None:
            raise ValueError("pixel sampler mode='class_weighted' needs num_classes (take it from "
                             'the dataset config)')
        if weight_rule not in WEIGHT_RULES:
            raise ValueError(f'pixel sampler weight_rule must be one of {WEIGHT_RULES}, got '
                             f'{weight_rule!r}')
        if weight_rule == 'fixed' and mode == 'class_weighted' and (
                class_weights is None or len(class_weights) != num_classes):
            raise ValueError(f"pixel sampler weight_rule='fixed' needs class_weights with "
                             f'{num_classes} numbers (one per class), got {class_weights}')
        self.kwargs = dict(mode=mode, num_rays=int(num_rays), num_classes=num_classes,
                           weight_rule=weight_rule, beta=float(beta), power=float(power),
                           class_weights=None if class_weights is None else list(class_weights),
                           histogram=histogram, replacement=bool(replacement),
                           require_depth=bool(require_depth), ignore_index=int(ignore_index))

    def __repr__(self) -> str:
        return f'PixelSampler({", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())})'

    def __call__(self, gt_semantics: Tensor,  # [B, C, h, w]
                 gt_depth: Optional[Tensor] = None,  # [B, C, h, w]
                 generator: Optional[torch.Generator] = None) -> PixelSample:
        return sample_pixels(gt_semantics, gt_depth, generator=generator, **self.kwargs)


# ------------------------------------------------------------------ open-sky pixels
def open_sky_mask(gt_depth: Tensor,  # [B, C, h, w]
                  column_window: int = 5, margin_rows: int = 1) -> Tensor:
    """Pixels above every LiDAR return of their image column and its neighbours: [B, C, h, w]
    bool.

    Per column, the highest labelled row is found, then the highest over ``column_window``
    neighbouring columns (azimuth gaps between LiDAR points); pixels more than ``margin_rows``
    above it are open sky: the LiDAR swept that direction (its vertical field of view covers
    the cameras') and got no return within its range. A column window containing a column
    without any label gives no sky (nothing is known there).
    """
    B, C, h, w = gt_depth.shape
    rows = torch.arange(h, device=gt_depth.device).view(1, 1, h, 1).expand(B, C, h, w)
    lab = gt_depth > 0
    top = torch.where(lab, rows, torch.full_like(rows, h)).amin(2)  # [B, C, w]; h = none
    top = torch.where(top == h, torch.full_like(top, -1), top).float()  # none -> no sky
    if column_window > 1:
        pad = column_window // 2
        top = -F.max_pool1d(-top.reshape(B * C, 1, w), column_window, stride=1,
                            padding=pad).reshape(B, C, -1)[..., :w]
    return rows < (top[:, :, None, :] - margin_rows)


def sample_mask_pixels(mask: Tensor,  # [B, C, h, w]
                       num: int, generator=None) -> Tuple[Tensor, Tensor]:
    """Up to ``num`` pixels per camera drawn uniformly without replacement from a mask:
    (pixels [B, C, num, 2] (u, v) centres, valid [B, C, num] bool: False where the mask has
    fewer pixels)."""
    B, C, h, w = mask.shape
    num = min(int(num), h * w)
    score = torch.rand(B, C, h * w, device=mask.device, generator=generator)
    score = torch.where(mask.reshape(B, C, -1), score, torch.full_like(score, -1.0))
    top, idx = score.topk(num, dim=-1)  # [B, C, num]
    pixels = torch.stack([(idx % w).float() + 0.5, (idx // w).float() + 0.5], -1)
    return pixels, top >= 0
