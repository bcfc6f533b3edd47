"""LSS view transform: lift image features to a voxel volume with a per-pixel depth distribution.

Geometry (Lift-Splat-Shoot, Philion & Fidler 2020):

* Feature cell (row i, column j) of an ``Hf x Wf`` map computed from an ``H x W`` input image
  covers input pixels ``[j * W / Wf, (j + 1) * W / Wf)``; its centre is at the continuous input
  coordinates ``u = (j + 0.5) * W / Wf``, ``v = (i + 0.5) * H / Hf`` (pixel centres at +0.5, as
  everywhere in the project).
* Depth bin k covers ``[d_min + k * step, d_min + (k + 1) * step)`` with
  ``D = round((d_max - d_min) / step)`` bins; the frustum point of bin k is at the bin centre
  ``d_min + (k + 0.5) * step`` (camera z).
* A frustum point is ``p_cam = d * K^-1 [u, v, 1]^T`` with K = ``cam2img`` of the network input
  (augmentation already folded in by the dataset), then ``p_ego = cam2ego @ p_cam``.
* Voxel (ix, iy, iz) of the volume holds ``pc_min + voxel_size * (index + [0, 1))``; points outside
  the box are dropped; the features of all points of a voxel are summed (sum pooling).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from ..geometry import (camera_rays, depth_bin_index, depth_labels_min_pool, frustum_points,
                        voxel_flat_index)
from ..registry import MODELS
from .neck import conv_bn_relu


def depth_bin_centres(depth_bins: Sequence[float]) -> Tensor:
    """(d_min, d_max, step) -> [D] bin centres d_min + (k + 0.5) * step."""
    d_min, d_max, step = (float(v) for v in depth_bins)
    num = int(round((d_max - d_min) / step))
    assert num > 0, depth_bins
    return d_min + (torch.arange(num, dtype=torch.float32) + 0.5) * step


def voxel_pool(points: Tensor,  # [B, M, 3]
               feats: Tensor,  # [B, M, C]
               pc_range: Sequence[float],
               grid_size: Sequence[int],
               ) -> Tensor:
    """Sums point features into the voxels containing them; points outside the box are dropped.

    Args:
        points: [B, M, 3] positions in metres.
        feats: [B, M, C] features.
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max).
        grid_size: (X, Y, Z).
    Returns:
        [B, C, X, Y, Z] volume.
    """
    assert points.dim() == 3 and points.shape[-1] == 3, points.shape
    assert feats.dim() == 3 and feats.shape[:2] == points.shape[:2], (feats.shape, points.shape)
    B, M, C = feats.shape
    X, Y, Z = (int(g) for g in grid_size)
    flat = voxel_flat_index(points, pc_range, grid_size)  # [B, M]
    b, m = (flat >= 0).nonzero(as_tuple=True)  # [V] each
    out = feats.new_zeros(B * X * Y * Z, C)
    out = out.index_add(0, b * (X * Y * Z) + flat[b, m], feats[b, m])  # [B*X*Y*Z, C]
    return rearrange(out, '(b x y z) c -> b c x y z', b=B, x=X, y=Y, z=Z)


def ground_contact_scan(ground_depth: Tensor,  # [..., Hf, Wf]
                        ground_prob: Tensor,  # [..., Hf, Wf]
                        ) -> Tensor:
    """Depth of each cell's ground contact: the ground depth of the nearest ground cell below it
    in its column, read softly with the ground probabilities g: walking up from the bottom row,
    ``c[r] = g[r] * ground_depth[r] + (1 - g[r]) * c[r + 1]`` and ``c[H-1] = ground_depth[H-1]``
    (the ground continues below the image). [..., Hf, Wf], rows top to bottom."""
    assert ground_depth.shape == ground_prob.shape, (ground_depth.shape, ground_prob.shape)
    rows = [ground_depth[..., -1, :]]
    for r in range(ground_depth.shape[-2] - 2, -1, -1):
        g = ground_prob[..., r, :]
        rows.append(g * ground_depth[..., r, :] + (1 - g) * rows[-1])
    return torch.stack(rows[::-1], dim=-2)


def keep_labels_at_random(bins: Tensor, prob: float) -> Tensor:
    """Each label of ``bins`` (>= 0; -1 = none) kept with probability ``prob`` (torch's global
    generator), else set to -1; ``prob`` >= 1 returns ``bins`` itself."""
    if prob >= 1.0:
        return bins
    keep = torch.rand(bins.shape, device=bins.device) < prob
    return torch.where(keep, bins, torch.full_like(bins, -1))


@MODELS.register_module()
class LSSViewTransform(nn.Module):
    """Predicts a depth distribution and context features per feature cell and splats them.

    Args:
        in_channels: channels of the image feature map (the neck's output).
        out_channels: context channels C of the produced volume.
        depth_bins: (d_min, d_max, step) in metres of camera z.
        pc_range: box of the produced volume (x_min, y_min, z_min, x_max, y_max, z_max).
        grid_size: (X, Y, Z) voxels of the produced volume.
        mid_channels: channels of the depth net's hidden 3x3 convs (default in_channels).
        depth_convs: number of 3x3 conv-BN-ReLU layers of the depth net before its 1x1 output
            layer (default 1).
        lift_upsample: s >= 1: the depth net's outputs (depth logits and context) are bilinearly
            upsampled s times per axis before the lift, so each feature cell casts s x s rays
            instead of one, each contributing 1 / s^2 (a voxel seen by a whole stride-16 cell
            keeps the magnitude it had with s = 1). At stride 16 a cell's single ray leaves
            gaps wider than a voxel at a distance (E35: with the tiny config's cameras and
            50 x 50 x 8 grid, s = 1 leaves about half the camera-visible cells unreached, s = 4
            nearly none).
            The depth distribution returned (and supervised by the LSS depth loss) is the
            upsampled one.
        ray_inputs: also feed the depth net, per feature cell, the ego-frame direction of the
            camera ray through the cell's centre (``camera_rays``, 3 channels after the image
            features): a convolution cannot tell where in the image a cell is, but the depth of
            the ground, and of whatever stands on it, follows from that direction and the rig.
        semantic_classes: K >= 1: the depth net also predicts K class logits per cell (to be
            supervised by the 2D semantic labels, ``ImageSemanticLoss``) and their softmax is
            lifted with the context, so the volume has ``out_channels + K`` channels, the last K
            holding per voxel the depth-weighted class mass of the rays through it (an explicit
            "how much car landed here" for the 3D layers). 0 (default): off.
        lift_mode: 'soft' (default): each cell's context is spread over its depth bins with the
            predicted probabilities (LSS). 'hard': each cell lifts its context to its most
            probable bin alone (one-hot of the argmax, no gradient through the choice), so the
            depth net is trained by the LSS depth loss only and the splat handles one point per
            ray instead of D.
        ground_contact: mix into each cell's depth distribution a prior from its ground contact
            (off by default): the camera depth of the flat ground ``z = ground_height`` (ego
            frame) is known per cell from the rig; a cell is read as ground with the probability
            its own (detached) distribution puts within one bin of that depth; walking up each
            column (``ground_contact_scan``) a cell gets the ground depth of the nearest ground
            cell below it, where an upright surface standing on the ground (a car's back, a
            facade, a trunk) meets it, and so, for a level camera, its own depth. The lifted
            distribution is ``m * q + (1 - m) * p``: p the depth net's, q a Gaussian of width
            ``contact_sigma`` metres over the bin centres at the contact depth, m a per-cell
            gate in (0, 1) from one more output channel of the depth net.
        ground_height: ego-frame z of the ground for ``ground_contact`` (metres, default 0).
        contact_sigma: width of ``ground_contact``'s prior in metres (default 1).
        oracle_lift: DIAGNOSTIC ONLY (default False): every feature cell with a LiDAR depth label
            lifts its context at that label's bin (``lift``'s ``oracle_depth``), in training and
            at test, so the test pipeline must load the 2D labels too
            (``configs/splattingocc/splattingocc-tiny-synthetic-oracle-depth.py``). It measures
            what a perfect lift would give; its scores are not results.
        label_lift_prob: in training only (``self.training``; off at 0, the default), each
            feature cell with a LiDAR depth label lifts its context at that label's bin with this
            probability instead of at the predicted distribution (teacher forcing of the lift;
            the LSS depth loss still trains the prediction). Inference lifts the prediction, so
            the scores are results: the labels are the 2D training labels, seen in training only.
    """

    def __init__(self, in_channels: int, out_channels: int, depth_bins: Sequence[float],
                 pc_range: Sequence[float], grid_size: Sequence[int], mid_channels: int = None,
                 depth_convs: int = 1, lift_upsample: int = 1, ray_inputs: bool = False,
                 semantic_classes: int = 0, lift_mode: str = 'soft',
                 ground_contact: bool = False, ground_height: float = 0.0,
                 contact_sigma: float = 1.0, oracle_lift: bool = False,
                 label_lift_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= label_lift_prob <= 1.0:
            raise ValueError('LSSViewTransform: label_lift_prob must be in [0, 1], got '
                             f'{label_lift_prob!r}')
        self.oracle_lift = bool(oracle_lift)
        self.label_lift_prob = float(label_lift_prob)
        if lift_mode not in ('soft', 'hard'):
            raise ValueError(f"LSSViewTransform: lift_mode must be 'soft' or 'hard', got "
                             f'{lift_mode!r}')
        self.lift_mode = lift_mode
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth_bins = tuple(float(v) for v in depth_bins)
        self.pc_range = tuple(float(v) for v in pc_range)
        self.grid_size = tuple(int(v) for v in grid_size)
        assert len(self.pc_range) == 6 and len(self.grid_size) == 3, (pc_range, grid_size)
        self.register_buffer('depths', depth_bin_centres(self.depth_bins), persistent=False)
        self.num_bins = self.depths.numel()
        mid = mid_channels or in_channels
        if int(depth_convs) < 1:
            raise ValueError(f'LSSViewTransform: depth_convs must be >= 1, got {depth_convs}')
        self.ray_inputs = bool(ray_inputs)
        first_in = in_channels + (3 if self.ray_inputs else 0)
        hidden = [conv_bn_relu(first_in if i == 0 else mid, mid)
                  for i in range(int(depth_convs))]
        if int(semantic_classes) != semantic_classes or int(semantic_classes) < 0:
            raise ValueError('LSSViewTransform: semantic_classes must be an integer >= 0, got '
                             f'{semantic_classes!r}')
        self.semantic_classes = int(semantic_classes)
        self.volume_channels = out_channels + self.semantic_classes
        self.ground_contact = bool(ground_contact)
        self.ground_height = float(ground_height)
        if not contact_sigma > 0:
            raise ValueError(f'LSSViewTransform: contact_sigma must be > 0, got {contact_sigma}')
        self.contact_sigma = float(contact_sigma)
        self.depth_net = nn.Sequential(
            *hidden, nn.Conv2d(mid, self.num_bins + out_channels + self.semantic_classes
                               + int(self.ground_contact), 1))
        if int(lift_upsample) != lift_upsample or int(lift_upsample) < 1:
            raise ValueError('LSSViewTransform: lift_upsample must be an integer >= 1, got '
                             f'{lift_upsample!r}')
        self.lift_upsample = int(lift_upsample)

    @torch.no_grad()
    def points_per_voxel(self, cam2img: Tensor, cam2ego: Tensor, feat_size: Tuple[int, int],
                         img_size: Tuple[int, int]) -> Tensor:
        """[B, X, Y, Z] number of frustum points (rays x depth bins) the lift sends to each voxel
        for a (B, N) camera rig and an Hf x Wf depth map (the upsampled size where
        ``lift_upsample`` > 1): 0 marks a voxel that receives no image feature."""
        pts = frustum_points(cam2img.float(), cam2ego.float(), feat_size, img_size, self.depths)
        flat = voxel_flat_index(pts, self.pc_range, self.grid_size).flatten(1)  # [B, M]
        B, V = flat.shape[0], math.prod(self.grid_size)
        b = torch.arange(B, device=flat.device)[:, None].expand_as(flat)
        ok = flat >= 0
        counts = torch.bincount(b[ok] * V + flat[ok], minlength=B * V)
        return counts.reshape(B, *self.grid_size)

    def depth_bin_index(self, depth: Tensor) -> Tensor:
        """Depth [...] -> bin index [...] (long), -1 for 0 (no label) and outside the bins."""
        return depth_bin_index(depth, self.depth_bins)

    def depth_outputs(self, feats: Tensor,  # [B, N, Cin, Hf, Wf]
                      cam2img: Tensor,  # [B, N, 3, 3]
                      cam2ego: Tensor,  # [B, N, 4, 4]
                      img_size: Tuple[int, int]):
        """The depth net's per-cell outputs, before any lifting (``tools/analysis/probe_depth.py``
        trains and scores the depth alone with this).

        Returns:
            depth probabilities [B, N, D, s*Hf, s*Wf] (s = lift_upsample), the context to lift
            [B, N, s*Hf, s*Wf, C + K] (the class probabilities last when K = semantic_classes >
            0) and the class logits [B, N, K, s*Hf, s*Wf] (None when K = 0).
        """
        assert feats.dim() == 5 and feats.shape[2] == self.in_channels, feats.shape
        B, N, _, Hf, Wf = feats.shape
        assert cam2img.shape == (B, N, 3, 3), cam2img.shape
        assert cam2ego.shape == (B, N, 4, 4), cam2ego.shape
        x = feats.flatten(0, 1)  # [B*N, Cin, Hf, Wf]
        if self.ray_inputs:
            rays = camera_rays(cam2img.float(), cam2ego.float(), (Hf, Wf), img_size)
            x = torch.cat([x, rearrange(rays, 'b n h w c -> (b n) c h w').to(x.dtype)], dim=1)
        x = self.depth_net(x)  # [B*N, D+C+K, Hf, Wf]
        s = self.lift_upsample
        if s > 1:
            # output cell centres (j + 0.5) / s - 0.5 in input cells: the frustum geometry below
            x = F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=False)
            Hf, Wf = Hf * s, Wf * s
        D, C, K = self.num_bins, self.out_channels, self.semantic_classes
        depth = x[:, :D].softmax(dim=1)  # [B*N, D, Hf, Wf]
        if self.ground_contact:
            depth = self._mix_contact_prior(depth, torch.sigmoid(x[:, D + C + K]), cam2img,
                                            cam2ego, img_size)
        ctx = x[:, D:D + C]  # [B*N, C, Hf, Wf]
        sem = None
        if K:
            sem = x[:, D + C:D + C + K]  # [B*N, K, Hf, Wf]
            ctx = torch.cat([ctx, sem.softmax(dim=1)], dim=1)  # [B*N, C+K, Hf, Wf]
        depth = rearrange(depth, '(b n) d h w -> b n d h w', b=B)
        ctx = rearrange(ctx, '(b n) c h w -> b n h w c', b=B)
        if sem is not None:
            sem = rearrange(sem, '(b n) k h w -> b n k h w', b=B)
        return depth, ctx, sem

    def _mix_contact_prior(self, depth: Tensor,  # [B*N, D, Hf, Wf]
                           gate: Tensor,  # [B*N, Hf, Wf]
                           cam2img: Tensor, cam2ego: Tensor,
                           img_size: Tuple[int, int]) -> Tensor:
        """``m * q + (1 - m) * p`` of the ``ground_contact`` option (class docstring)."""
        Hf, Wf = depth.shape[-2:]
        d_min, _, step = self.depth_bins
        rays = camera_rays(cam2img.float(), cam2ego.float(), (Hf, Wf), img_size).flatten(0, 1)
        height = (cam2ego[..., 2, 3].float() - self.ground_height).flatten(0, 1)  # [B*N]
        drop = rays[..., 2]  # [B*N, Hf, Wf]: ego z per metre of camera depth
        ground = height[:, None, None] / (-drop).clamp_min(1e-6)
        with torch.no_grad():
            # the ground's bin, -1 where the ray misses the ground within the bins
            k = self.depth_bin_index(torch.where(drop < 0, ground, torch.zeros_like(ground)))
            bins = torch.arange(self.num_bins, device=depth.device)[None, :, None, None]
            band = (bins - k[:, None]).abs() <= 1  # [B*N, D, Hf, Wf]
            g = (depth * band).sum(1) * (k >= 0)  # [B*N, Hf, Wf]
        # rays that miss the ground in range: only the bottom row's value is ever read for
        # them, as a fallback
        ground = ground.clamp(d_min, d_min + self.num_bins * step)
        contact = ground_contact_scan(ground, g.to(ground.dtype))  # [B*N, Hf, Wf]
        centres = self.depths.to(contact.dtype)[None, :, None, None]
        q = (-0.5 * ((centres - contact[:, None]) / self.contact_sigma) ** 2).softmax(dim=1)
        m = gate[:, None].to(depth.dtype)
        return m * q.to(depth.dtype) + (1 - m) * depth

    def forward(self, feats: Tensor,  # [B, N, Cin, Hf, Wf]
                cam2img: Tensor,  # [B, N, 3, 3]
                cam2ego: Tensor,  # [B, N, 4, 4]
                img_size: Tuple[int, int],
                depth_labels: Optional[Tensor] = None,  # [B, N, h, w]
                ):
        """Lift and splat; the depth labels of the N cameras (0 = none) are used only with
        ``oracle_lift`` or, in training, ``label_lift_prob`` (class docstring). Returns as
        ``lift``."""
        prob = 1.0 if self.oracle_lift else (self.label_lift_prob if self.training else 0.0)
        if prob <= 0:
            return self.lift(feats, cam2img, cam2ego, img_size)
        if depth_labels is None:
            switch = 'oracle_lift=True' if self.oracle_lift else 'label_lift_prob > 0'
            raise KeyError(f'LSSViewTransform: {switch} needs the batch key gt_depth: add '
                           'LoadLabels2D to this pipeline (see configs/splattingocc/'
                           'splattingocc-tiny-synthetic-oracle-depth.py)')
        return self.lift(feats, cam2img, cam2ego, img_size, oracle_depth=depth_labels,
                         oracle_prob=prob)

    def lift(self, feats: Tensor,  # [B, N, Cin, Hf, Wf]
             cam2img: Tensor,  # [B, N, 3, 3]
             cam2ego: Tensor,  # [B, N, 4, 4]
             img_size: Tuple[int, int],
             oracle_depth: Optional[Tensor] = None,  # [B, N, h, w]
             oracle_prob: float = 1.0):
        """Lift and splat.

        Args:
            feats: [B, N, Cin, Hf, Wf] image features of N cameras.
            cam2img: [B, N, 3, 3] intrinsics of the input images.
            cam2ego: [B, N, 4, 4] camera -> ego.
            img_size: (H, W) of the input images.
            oracle_depth: DIAGNOSTIC ONLY. LiDAR depth label maps of the N cameras (0 = none):
                every lifted cell with a label (``depth_labels_min_pool``, the LSS depth loss's
                target) lifts its context at that label's bin alone (one-hot) instead of the
                predicted distribution; cells without one keep the prediction. The returned
                depth is still the prediction. A model that sees its labels is not a result,
                only a measure of what a perfect lift would give.
            oracle_prob: each labelled cell takes its label with this probability (drawn per
                cell from torch's global generator), else keeps the prediction (the training-only
                ``label_lift_prob``).
        Returns:
            volume [B, C + K, X, Y, Z] (K = semantic_classes), depth probabilities
            [B, N, D, s*Hf, s*Wf] (s = lift_upsample) and, only when K > 0, class logits
            [B, N, K, s*Hf, s*Wf].
        """
        B, N = feats.shape[:2]
        depth, ctx, sem = self.depth_outputs(feats, cam2img, cam2ego, img_size)
        Hf, Wf = depth.shape[-2:]
        bins = None
        if oracle_depth is not None:
            assert oracle_depth.shape[:2] == (B, N), (oracle_depth.shape, B, N)
            bins = self.depth_bin_index(depth_labels_min_pool(
                oracle_depth.to(depth.device, depth.dtype), (Hf, Wf)))  # [B, N, Hf, Wf]
            bins = keep_labels_at_random(bins, oracle_prob)
        with torch.no_grad():
            if self.lift_mode == 'hard':
                # one point per cell, at its chosen bin's centre (frustum_points' formula)
                k = depth.argmax(2)  # [B, N, Hf, Wf]
                if bins is not None:
                    k = torch.where(bins >= 0, bins, k)
                rays = camera_rays(cam2img.float(), cam2ego.float(), (Hf, Wf), img_size)
                d = self.depths.to(rays.dtype)[k]  # [B, N, Hf, Wf]
                pts = (rays * d[..., None] + cam2ego[:, :, None, None, :3, 3].float())[:, :, None]
                lifted = torch.ones_like(d, dtype=depth.dtype)[:, :, None]  # [B, N, 1, Hf, Wf]
            else:
                pts = frustum_points(cam2img.float(), cam2ego.float(), (Hf, Wf), img_size,
                                     self.depths)  # [B, N, D, Hf, Wf, 3]
        if self.lift_mode == 'soft':
            lifted = depth
            if bins is not None:
                onehot = F.one_hot(bins.clamp_min(0), self.num_bins).permute(0, 1, 4, 2, 3)
                lifted = torch.where((bins >= 0)[:, :, None], onehot.to(depth.dtype), depth)
        # outer product depth x context, evaluated only for the points inside the box
        volume = self._splat(pts, lifted, ctx)
        if sem is None:
            return volume, depth
        return volume, depth, sem

    def _splat(self, pts: Tensor,  # [B, N, D, Hf, Wf, 3] (D = 1 for a hard lift)
               depth: Tensor,  # [B, N, D, Hf, Wf]
               ctx: Tensor,  # [B, N, Hf, Wf, C]
               ) -> Tensor:
        B = pts.shape[0]
        C = ctx.shape[-1]
        X, Y, Z = self.grid_size
        flat = voxel_flat_index(pts, self.pc_range, self.grid_size)  # [B, N, D, Hf, Wf]
        # only points in the box, and of those only the ones with weight (a hard lift's one bin)
        b, n, d, i, j = ((flat >= 0) & (depth > 0)).nonzero(as_tuple=True)  # [V] each
        contrib = depth[b, n, d, i, j, None] * ctx[b, n, i, j]  # [V, C]
        if self.lift_upsample > 1:
            contrib = contrib * (1.0 / self.lift_upsample ** 2)
        out = ctx.new_zeros(B * X * Y * Z, C).index_add(0, b * (X * Y * Z) + flat[b, n, d, i, j],
                                                         contrib)  # [B*X*Y*Z, C]
        return rearrange(out, '(b x y z) c -> b c x y z', b=B, x=X, y=Y, z=Z)
