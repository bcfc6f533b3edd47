"""Supervision of the lift's image-side outputs by the 2D labels of the current frame.

* ``LSSDepthLoss`` (``loss_lss_depth``): the lift's depth distribution per feature cell against
  the bin of the nearest LiDAR depth label in the cell (BEVDepth's target,
  ``geometry.depth_labels_min_pool``); ``functional.lss_depth_loss``.
* ``ImageSemanticLoss`` (``loss_image_sem``): the lift's per-cell class logits (a lift with
  ``semantic_classes`` > 0), upsampled to the label maps, against the 2D semantic labels;
  ``functional.image_semantic_ce``.

The current frame's cameras are the first N of the batch's label cameras (N = the network's
input cameras).
"""
from __future__ import annotations

from typing import Dict, Sequence, Union

from torch import Tensor

from ..geometry import depth_bin_index, depth_labels_min_pool
from ..registry import MODELS
from ..structures import NetworkOutputs
from .base import Supervision, class_weight_setting, require_keys
from .functional import class_balanced_weights, image_semantic_ce, lss_depth_loss


@MODELS.register_module()
class LSSDepthLoss(Supervision):
    """``loss_lss_depth = loss_weight * lss_depth_loss(depth probabilities, label bins)``."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def score(self, depth_prob: Tensor,  # [B, N, D, Hf, Wf]
              target_bin: Tensor,  # [B, N, Hf, Wf], -1 = no label
              ) -> Tensor:
        return self.loss_weight * lss_depth_loss(depth_prob, target_bin)

    def forward(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        if outputs.depth_probs is None:
            raise ValueError('LSSDepthLoss needs a lift that predicts a depth distribution '
                             '(LSSViewTransform); remove it from model.supervision')
        require_keys('LSSDepthLoss', batch, ('gt_depth', ),
                     'load the 2D labels in the training pipeline (LoadLabels2D)')
        prob = outputs.depth_probs  # [B, N, D, Hf, Wf]
        N = prob.shape[1]
        target = depth_labels_min_pool(batch['gt_depth'][:, :N], prob.shape[-2:])  # current frame
        bins = depth_bin_index(target, outputs.depth_bins)  # [B, N, Hf, Wf]
        return dict(loss_lss_depth=self.score(prob, bins))


@MODELS.register_module()
class ImageSemanticLoss(Supervision):
    """``loss_image_sem = loss_weight * image_semantic_ce(lift logits, labels, class weights)``.

    Args:
        class_weight: None (uniform), a list of K weights, or 'batch' (per batch from the
            labels with ``class_balanced_weights(power)``).
        power: exponent of the batch inverse frequency.
        loss_weight: multiplier.
    """

    def __init__(self, class_weight: Union[None, str, Sequence[float]] = 'batch',
                 power: float = 0.5, loss_weight: float = 1.0):
        super().__init__()
        self.mode, fixed = class_weight_setting('ImageSemanticLoss', class_weight)
        self.register_buffer('class_weight', fixed, persistent=False)
        self.power, self.loss_weight = power, loss_weight

    def score(self, logits: Tensor,  # [B, N, K, Hf, Wf]
              labels: Tensor,  # [B, N, h, w]
              ) -> Tensor:
        cw = self.class_weight
        if self.mode == 'batch':
            cw = class_balanced_weights(labels, logits.shape[2], self.power)
        return self.loss_weight * image_semantic_ce(logits, labels, cw)

    def forward(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        if outputs.lift_logits is None:
            raise ValueError('ImageSemanticLoss needs a lift that predicts class logits: set '
                             'model.view_transform.semantic_classes (e.g. num_classes - 1)')
        require_keys('ImageSemanticLoss', batch, ('gt_semantics', ),
                     'load the 2D labels in the training pipeline (LoadLabels2D)')
        N = outputs.lift_logits.shape[1]
        return dict(loss_image_sem=self.score(outputs.lift_logits, batch['gt_semantics'][:, :N]))


__all__ = ['LSSDepthLoss', 'ImageSemanticLoss']
