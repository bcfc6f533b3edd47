"""SplattingOcc: the network. Images -> a scene field; trained by the supervision list of its
config, read out onto the Occ3D grid at test time.

Data flow (B samples, N input cameras)::

    img [B, N, 3, H, W] -> backbone -> neck -> features [B, N, C, Hf, Wf]
      -> view transform (lift: cam2img, cam2ego) -> volume [B, C', X, Y, Z] (+ depth probs)
      -> volume encoder -> head -> scene field (fields/: Gaussians | density grid)
    mode='loss':    every module of ``supervision`` -> named losses (one dict)
    mode='predict': read-out -> [X, Y, Z] uint8 labels (free = free_label) and the continuous
                    scores behind them per sample (+ renders at the labelled pixels when the
                    batch has 2D labels)
    mode='tensor':  the field's raw tensors

What the model is trained against is not part of the network: ``supervision`` is a list of
registered modules (``splattingocc/supervision``), e.g.::

    supervision=[dict(type='RaySupervision', renderer=..., pixel_sampler=..., losses=[...]),
                 dict(type='LSSDepthLoss', loss_weight=0.2)]

and what the head predicts is behind the scene-field interface (``splattingocc/fields``), so a
new loss, supervision kind or representation is a new class and a config, never a new argument
here (``docs/adding-a-variant.md``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.model import BaseModel
from torch import Tensor, nn

from ..registry import MODELS
from ..structures import NetworkOutputs
from ..supervision.base import merge_terms

_IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 (torchvision's ImageNet statistics)
_IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module()
class SplattingOcc(BaseModel):
    """The network. Components are config dicts built from ``MODELS``.

    Args:
        backbone, neck, view_transform, volume_encoder, head: the network parts; the head
            returns a scene field (``GaussianHead``, ``DensityGridHead``).
        readout: the field -> Occ3D labels (``OccupancyReadout``: grid, classes, threshold).
        supervision: the training signal, a non-empty list of supervision module configs; their
            named terms are merged (each name once).
        img_mean, img_std: RGB normalisation of the 0..255 input images.
    """

    def __init__(self, backbone: dict, neck: dict, view_transform: dict, volume_encoder: dict,
                 head: dict, readout: dict, supervision: Sequence[dict],
                 img_mean: Sequence[float] = _IMAGENET_MEAN,
                 img_std: Sequence[float] = _IMAGENET_STD,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not supervision:
            raise ValueError('SplattingOcc: model.supervision is empty; give at least one '
                             "supervision module, e.g. [dict(type='RaySupervision', ...)]")
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        self.view_transform = MODELS.build(view_transform)
        self.volume_encoder = MODELS.build(volume_encoder)
        self.head = MODELS.build(head)
        self.readout = MODELS.build(readout)
        self.supervision = nn.ModuleList([MODELS.build(s) for s in supervision])
        self.register_buffer('img_mean', torch.tensor(img_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('img_std', torch.tensor(img_std).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ network
    def extract(self, img: Tensor,  # [B, N, 3, H, W]
                cam2img: Tensor,  # [B, N, 3, 3]
                cam2ego: Tensor,  # [B, N, 4, 4]
                depth_labels: Optional[Tensor] = None,  # [B, N, h, w]
                ) -> NetworkOutputs:
        """Images -> the scene field and the lift's outputs.

        Args:
            img: [B, N, 3, H, W] RGB 0..255.
            cam2img: [B, N, 3, 3] intrinsics of the input images.
            cam2ego: [B, N, 4, 4] camera -> current ego.
            depth_labels: [B, N, h, w] depth labels of the input cameras (0 = none), for a lift
                configured to take them (``LSSViewTransform``'s ``oracle_lift`` and
                ``label_lift_prob``); others ignore them.
        """
        assert img.dim() == 5 and img.shape[2] == 3, img.shape
        B, N, _, H, W = img.shape
        assert cam2img.shape == (B, N, 3, 3), cam2img.shape
        assert cam2ego.shape == (B, N, 4, 4), cam2ego.shape
        x = (img.flatten(0, 1).float() - self.img_mean) / self.img_std  # [B*N, 3, H, W]
        feats = self.neck(self.backbone(x))  # [B*N, C, Hf, Wf]
        feats = feats.unflatten(0, (B, N))  # [B, N, C, Hf, Wf]
        lifted = self.view_transform(feats, cam2img, cam2ego, (H, W), depth_labels)
        volume, depth_prob = lifted[:2]  # [B, C', X, Y, Z], [B, N, D, Hf, Wf]
        lift_logits = lifted[2] if len(lifted) > 2 else None
        volume = self.volume_encoder(volume)  # [B, C'', X, Y, Z]
        return NetworkOutputs(field=self.head(volume), depth_probs=depth_prob,
                              depth_bins=getattr(self.view_transform, 'depth_bins', None),
                              lift_logits=lift_logits)

    def forward(self, mode: str = 'tensor', **batch):
        """mmengine entry: ``model(**batch, mode=...)`` with the data contract's batch keys."""
        if mode not in ('loss', 'predict', 'tensor'):
            raise ValueError(f"SplattingOcc.forward: mode must be 'loss', 'predict' or 'tensor', "
                             f'got {mode!r}')
        for key in ('img', 'cam2img', 'cam2ego'):
            if key not in batch:
                raise KeyError(f'SplattingOcc.forward: the batch has no {key!r} (keys: '
                               f'{sorted(batch)}); check the dataset pipeline\'s packing transform')
        depth_labels = batch.get('gt_depth')
        if depth_labels is not None:
            depth_labels = depth_labels[:, :batch['img'].shape[1]]  # the current frame's cameras
        outputs = self.extract(batch['img'], batch['cam2img'], batch['cam2ego'], depth_labels)
        if mode == 'loss':
            return self.loss(outputs, batch)
        if mode == 'predict':
            return self.predict(outputs, batch)
        return outputs.field.tensors()

    def loss(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        """The named terms of every supervision module ('loss_*' and detached statistics)."""
        losses: Dict[str, Tensor] = {}
        for module in self.supervision:
            merge_terms(losses, module(outputs, batch), 'SplattingOcc')
        return losses

    # ------------------------------------------------------------------ prediction
    def predict(self, outputs: NetworkOutputs, batch: dict) -> List[dict]:
        """Per sample, numpy arrays:

        * 'semantics': [X, Y, Z] uint8 Occ3D labels (the read-out at its threshold);
        * 'occupancy': [X, Y, Z] float64, what the read-out thresholds (the opacity of one
          voxel); 'class_labels': [X, Y, Z] uint8, each voxel's label where occupied;
          'class_probs': [X, Y, Z, C - 1] float16, the class probabilities given occupied
          (``OccupancyReadout.predict``): the inputs of the threshold sweep and of AP;
        * 'render' (only when the batch has 2D labels, ``gt_depth`` and ``gt_semantics``, and a
          supervision module renders): the render at the labelled pixels in the read-out's
          range (``RaySupervision.render_at_labels``; 'classes' as Occ3D labels);
        * 'sample_token', 'scene_name'.
        """
        pred = self.readout.predict(outputs.field)
        sem = pred['semantics'].cpu().numpy()  # [B, X, Y, Z]
        occ = pred['occupancy'].cpu().numpy()  # [B, X, Y, Z] float64
        labels = pred['class_labels'].cpu().numpy()  # [B, X, Y, Z]
        probs = pred['class_probs'].to(torch.float16).cpu().numpy()  # [B, X, Y, Z, C - 1]
        B = sem.shape[0]
        renders = self._render_at_labels(outputs.field, batch)
        metas = _split_meta(batch.get('meta'), B)
        results = []
        for b in range(B):
            out = dict(semantics=np.ascontiguousarray(sem[b]), occupancy=occ[b],
                       class_labels=np.ascontiguousarray(labels[b]), class_probs=probs[b],
                       sample_token=str(metas[b].get('sample_token', '')),
                       scene_name=str(metas[b].get('scene_name', '')))
            if renders is not None:
                out['render'] = renders[b]
            results.append(out)
        return results

    def _render_at_labels(self, field, batch: dict) -> Optional[List[dict]]:
        """Renders at the labelled pixels by the first supervision module that renders
        (``render_at_labels``), with classes as Occ3D labels; None without 2D labels in the
        batch or without such a module."""
        if batch.get('gt_depth') is None or batch.get('gt_semantics') is None:
            return None
        module = next((m for m in self.supervision if hasattr(m, 'render_at_labels')), None)
        if module is None:
            return None
        renders = module.render_at_labels(field, batch, box=self.readout.pc_range)
        free, K = self.readout.free_label, field.num_classes
        for r in renders:
            if K == self.readout.num_classes - 1:  # field class k -> label (free skipped)
                r['classes'] = (r['classes'] + (r['classes'] >= free)).astype(np.uint8)
        return renders


def _split_meta(meta, batch_size: int) -> List[dict]:
    """Per-sample meta dicts from a collated dict of lists (default_collate) or a list of dicts."""
    if meta is None:
        return [{} for _ in range(batch_size)]
    if isinstance(meta, (list, tuple)):
        assert len(meta) == batch_size, (len(meta), batch_size)
        return [dict(m) for m in meta]
    out = [{} for _ in range(batch_size)]
    for k, v in meta.items():
        for b in range(batch_size):
            try:
                out[b][k] = v[b]
            except (TypeError, IndexError, KeyError):
                out[b][k] = v
    return out


__all__ = ['SplattingOcc']
