"""Tests of splattingocc.voxelizer: dense brute-force reference, hand cases, real Occ3D data."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from splattingocc.registry import MODELS
from splattingocc.structures import Gaussians
from splattingocc.geometry import quat_to_rotmat
from splattingocc.voxelizer import (GaussianVoxelizer, gaussians_from_voxels,
                                    grid_gaussian_density, grid_gaussian_fields,
                                    scores_to_semantics, voxelize_gaussians)

# a small grid with unequal voxel sizes (0.4, 0.5, 0.3) and an off-origin box
PC_RANGE = (-2.0, -1.5, -0.9, 2.0, 1.5, 0.6)
OCC_SIZE = (10, 6, 5)


def _centres(pc_range, occ_size):
    """Voxel centres [X*Y*Z, 3] (numpy float64), X-major like the grid."""
    lo = np.asarray(pc_range[:3], dtype=np.float64)
    vs = (np.asarray(pc_range[3:]) - lo) / np.asarray(occ_size)
    ii = np.stack(np.meshgrid(*[np.arange(n) for n in occ_size], indexing='ij'), -1)
    return (lo + vs * (ii + 0.5)).reshape(-1, 3)


def _random_gaussians(B, N, K, seed, dtype=torch.float64, scale_range=(0.15, 0.8)):
    """Random anisotropic, rotated Gaussians, some reaching outside the grid box."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor(PC_RANGE[:3], dtype=torch.float64)
    hi = torch.tensor(PC_RANGE[3:], dtype=torch.float64)
    means = lo - 0.5 + (hi - lo + 1.0) * torch.rand(B, N, 3, generator=g, dtype=torch.float64)
    quats = torch.randn(B, N, 4, generator=g, dtype=torch.float64) * 2  # not normalised
    a, b = scale_range
    scales = a + (b - a) * torch.rand(B, N, 3, generator=g, dtype=torch.float64)
    opac = 0.05 + 0.95 * torch.rand(B, N, generator=g, dtype=torch.float64)
    feats = torch.randn(B, N, K, generator=g, dtype=torch.float64) * 2
    return Gaussians(*(t.to(dtype) for t in (means, quats, scales, opac, feats)))


def _dense_reference_numpy(gs: Gaussians, pc_range, occ_size, score_mode='softmax', cutoff=None):
    """Every Gaussian against every voxel centre (numpy float64; rotations from scipy).

    Returns density [B, X, Y, Z], scores [B, X, Y, Z, K], and the truncation bounds (what the
    Gaussians whose Mahalanobis distance exceeds ``cutoff`` contribute at most: o * exp(-c^2/2)).
    """
    p = _centres(pc_range, occ_size)  # [V, 3]
    B, N = gs.means.shape[:2]
    K = gs.features.shape[-1]
    dens = np.zeros((B, len(p)))
    scores = np.zeros((B, len(p), K))
    bound_d = np.zeros((B, len(p)))
    bound_s = np.zeros((B, len(p), K))
    for b in range(B):
        q = gs.quats[b].double().numpy()
        R = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy is scalar-last
        s2 = gs.scales[b].double().numpy() ** 2
        cov = np.einsum('nij,nj,nkj->nik', R, s2, R)  # [N, 3, 3]
        prec = np.linalg.inv(cov)  # a covariance, not a rigid transform
        d = p[None] - gs.means[b].double().numpy()[:, None]  # [N, V, 3]
        m2 = np.einsum('nvi,nij,nvj->nv', d, prec, d)  # [N, V]
        o = gs.opacities[b].double().numpy()[:, None]  # [N, 1]
        f = gs.features[b].double().numpy()
        if score_mode == 'softmax':
            f = np.exp(f - f.max(-1, keepdims=True))
            f = f / f.sum(-1, keepdims=True)
        w = o * np.exp(-0.5 * m2)  # [N, V]
        if cutoff is not None:
            out = m2 > cutoff ** 2
            bound = np.where(out, o * math.exp(-0.5 * cutoff ** 2), 0.0)  # [N, V]
            bound_d[b] = bound.sum(0)
            bound_s[b] = np.einsum('nv,nk->vk', bound, f)
            w = np.where(out, 0.0, w)
        dens[b] = w.sum(0)
        scores[b] = np.einsum('nv,nk->vk', w, f)
    shape = (B,) + tuple(occ_size)
    return (dens.reshape(shape), scores.reshape(shape + (K,)), bound_d.reshape(shape),
            bound_s.reshape(shape + (K,)))


def _run(gs, **kw):
    return voxelize_gaussians(gs.means, gs.quats, gs.scales, gs.opacities, gs.features,
                              PC_RANGE, OCC_SIZE, **kw)


@pytest.mark.parametrize('score_mode', ['softmax', 'raw'])
def test_matches_dense_reference_without_truncation(score_mode):
    gs = _random_gaussians(B=2, N=24, K=5, seed=0)
    out = _run(gs, cutoff=40.0, score_mode=score_mode)
    ref_d, ref_s, _, _ = _dense_reference_numpy(gs, PC_RANGE, OCC_SIZE, score_mode)
    assert out.density.shape == (2,) + OCC_SIZE and out.scores.shape == (2,) + OCC_SIZE + (5,)
    assert ref_d.max() > 0.5  # the case is not vacuous
    np.testing.assert_allclose(out.density.numpy(), ref_d, atol=1e-10, rtol=0)
    np.testing.assert_allclose(out.scores.numpy(), ref_s, atol=1e-10, rtol=0)
    # float32 inputs: same to 1e-5
    gs32 = Gaussians(*(t.float() for t in (gs.means, gs.quats, gs.scales, gs.opacities,
                                           gs.features)))
    out32 = _run(gs32, cutoff=40.0, score_mode=score_mode)
    assert out32.density.dtype == torch.float32
    np.testing.assert_allclose(out32.density.numpy(), ref_d, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out32.scores.numpy(), ref_s, atol=1e-5, rtol=0)


def test_default_cutoff_is_exact_inside_the_ellipsoid_and_within_the_truncation_bound():
    # small Gaussians so that the 3-sigma boxes are a small part of the grid
    gs = _random_gaussians(B=2, N=40, K=4, seed=1, scale_range=(0.1, 0.5))
    out = _run(gs)  # default cutoff 3
    assert out.num_pairs < 2 * 40 * math.prod(OCC_SIZE) / 2  # far fewer pairs than dense
    ref_d, ref_s, bd, bs = _dense_reference_numpy(gs, PC_RANGE, OCC_SIZE, cutoff=3.0)
    # the same sum restricted to m <= cutoff: nothing inside the ellipsoid is missed
    np.testing.assert_allclose(out.density.numpy(), ref_d, atol=1e-10, rtol=0)
    np.testing.assert_allclose(out.scores.numpy(), ref_s, atol=1e-10, rtol=0)
    # and against the untruncated sums the error is within the analytic bound
    full_d, full_s, _, _ = _dense_reference_numpy(gs, PC_RANGE, OCC_SIZE)
    err_d = full_d - out.density.numpy()
    err_s = full_s - out.scores.numpy()
    assert err_d.min() > -1e-12 and err_s.min() > -1e-12  # truncation only removes mass
    assert (err_d <= bd + 1e-12).all() and (err_s <= bs + 1e-12).all()
    assert err_d.max() > 0  # truncation did happen here
    n_gauss = gs.opacities.sum(1).numpy()[:, None, None, None]
    assert (err_d <= n_gauss * math.exp(-4.5)).all()  # the coarse global bound


def test_one_gaussian_at_a_voxel_centre_hand_case():
    # voxel (3, 2, 1) has its centre at (-2 + 0.4 * 3.5, -1.5 + 0.5 * 2.5, -0.9 + 0.3 * 1.5)
    centre = [-0.6, -0.25, -0.45]
    a, b, c = 0.3, 0.6, 0.2  # standard deviations along the local axes
    # 90 degrees about z: local x -> world y, local y -> world -x (w = cos 45, z = sin 45)
    quat = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]
    gs = Gaussians(torch.tensor([[centre]], dtype=torch.float64),
                   torch.tensor([[quat]], dtype=torch.float64),
                   torch.tensor([[[a, b, c]]], dtype=torch.float64),
                   torch.tensor([[0.7]], dtype=torch.float64),
                   torch.tensor([[[0.0, 2.0]]], dtype=torch.float64))
    out = _run(gs)
    d = out.density[0]
    assert d[3, 2, 1].item() == pytest.approx(0.7, abs=1e-12)
    # one voxel along world x (0.4 m) is along local y (std b); along world y (0.5 m): local x (a)
    assert d[4, 2, 1].item() == pytest.approx(0.7 * math.exp(-0.5 * (0.4 / b) ** 2), abs=1e-12)
    assert d[2, 2, 1].item() == pytest.approx(0.7 * math.exp(-0.5 * (0.4 / b) ** 2), abs=1e-12)
    assert d[3, 3, 1].item() == pytest.approx(0.7 * math.exp(-0.5 * (0.5 / a) ** 2), abs=1e-12)
    assert d[3, 2, 2].item() == pytest.approx(0.7 * math.exp(-0.5 * (0.3 / c) ** 2), abs=1e-12)
    # two voxels along world y is 1.0 m = 3.33 sigma > cutoff 3: truncated to 0
    assert d[3, 4, 1].item() == 0.0
    # softmax([0, 2]) weights the scores
    p1 = math.exp(2) / (1 + math.exp(2))
    assert out.scores[0, 3, 2, 1].tolist() == pytest.approx([0.7 * (1 - p1), 0.7 * p1], abs=1e-12)
    assert d.sum().item() > 0.7 and (d >= 0).all()


def test_quat_to_rotmat_matches_scipy():
    q = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3
    R = quat_to_rotmat(q).numpy()
    ref = Rotation.from_quat(q.numpy()[:, [1, 2, 3, 0]]).as_matrix()
    np.testing.assert_allclose(R, ref, atol=1e-12)


def test_batch_chunk_and_outside_invariance():
    gs = _random_gaussians(B=2, N=30, K=3, seed=4)
    full = _run(gs)
    # a tiny chunk bound (many chunks, some single oversized Gaussians) changes nothing
    tiny = _run(gs, max_pairs_per_chunk=7)
    assert tiny.num_pairs == full.num_pairs and tiny.num_contributions == full.num_contributions
    torch.testing.assert_close(tiny.density, full.density, atol=1e-12, rtol=0)
    torch.testing.assert_close(tiny.scores, full.scores, atol=1e-12, rtol=0)
    # each sample of the batch on its own gives the same grid
    for b in range(2):
        one = _run(gs.index(b))
        torch.testing.assert_close(one.density[0], full.density[b], atol=1e-12, rtol=0)
        torch.testing.assert_close(one.scores[0], full.scores[b], atol=1e-12, rtol=0)
    # Gaussians far outside the box (or with non-finite means) add nothing and do not fail
    far = torch.tensor([[[100.0, 0, 0], [0, -50, 0], [float('nan'), 0, 0]]], dtype=torch.float64)
    extra = Gaussians(far, torch.tensor([[[1.0, 0, 0, 0]] * 3], dtype=torch.float64),
                      torch.full((1, 3, 3), 0.5, dtype=torch.float64),
                      torch.ones(1, 3, dtype=torch.float64),
                      torch.ones(1, 3, 3, dtype=torch.float64))
    merged = Gaussians(*(torch.cat([getattr(gs.index(0), f), getattr(extra, f)], 1)
                         for f in ('means', 'quats', 'scales', 'opacities', 'features')))
    out = _run(merged)
    torch.testing.assert_close(out.density[0], full.density[0], atol=1e-12, rtol=0)
    assert out.num_pairs == _run(gs.index(0)).num_pairs
    # no Gaussians at all
    empty = _run(Gaussians(torch.zeros(1, 0, 3), torch.zeros(1, 0, 4), torch.ones(1, 0, 3),
                           torch.zeros(1, 0), torch.zeros(1, 0, 3)))
    assert empty.num_pairs == 0 and empty.density.abs().sum() == 0
    assert empty.scores.shape == (1,) + OCC_SIZE + (3,)


def test_semantics_rules():
    density = torch.tensor([0.1, 0.6, 0.6, 0.6]).reshape(1, 4, 1, 1)
    # K = num_classes = 4 with free = 3: argmax free -> free; low density -> free
    scores = torch.tensor([[0.0, 0.9, 0.0, 0.0], [0.0, 0.9, 0.0, 0.0], [0.1, 0.0, 0.0, 0.5],
                           [0.0, 0.1, 0.3, 0.2]]).reshape(1, 4, 1, 1, 4)
    lab = scores_to_semantics(density, scores, 0.5, free_label=3, num_classes=4)
    assert lab.dtype == torch.int64 and lab.flatten().tolist() == [3, 1, 3, 2]
    # K = num_classes - 1: features are the non-free classes in label order
    lab = scores_to_semantics(density, scores[..., :3], 0.5, free_label=3, num_classes=4,
                              dtype=torch.uint8)
    assert lab.dtype == torch.uint8 and lab.flatten().tolist() == [3, 1, 0, 2]
    # free label first: feature j is label j + 1
    lab = scores_to_semantics(density, scores[..., :3], 0.5, free_label=0, num_classes=4)
    assert lab.flatten().tolist() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match='num_classes'):
        scores_to_semantics(density, scores[..., :2], 0.5, free_label=3, num_classes=4)


def test_module_from_dataset_config_and_registry():
    from mmengine.config import Config

    from splattingocc.paths import REPO_ROOT
    ds = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))
    # registered on import (MODELS.build would also import every other registry location)
    cls = MODELS.module_dict['GaussianVoxelizer']
    assert cls is GaussianVoxelizer
    vox = cls(pc_range=ds.point_cloud_range, occ_size=ds.occ_size, voxel_size=ds.voxel_size,
              num_classes=ds.num_classes, free_label=ds.free_label, density_threshold=0.5)
    assert isinstance(vox, GaussianVoxelizer) and len(list(vox.parameters())) == 0
    # one Gaussian at the centre of voxel (100, 100, 8) with class 4 (car)
    centre = [ds.point_cloud_range[i] + ds.voxel_size[i] * (idx + 0.5)
              for i, idx in enumerate((100, 100, 8))]
    feats = torch.zeros(1, 1, ds.num_classes)
    feats[0, 0, 4] = 5.0
    gs = Gaussians(torch.tensor([[centre]]), torch.tensor([[[1.0, 0, 0, 0]]]),
                   torch.full((1, 1, 3), 0.2), torch.ones(1, 1), feats)
    out = vox(gs, return_fields=True)
    assert out.semantics.shape == (1,) + tuple(ds.occ_size)
    assert out.semantics[0, 100, 100, 8] == 4
    assert (out.semantics == ds.free_label).sum() == math.prod(ds.occ_size) - 1
    assert torch.equal(vox(gs), out.semantics)
    with pytest.raises(ValueError, match='voxel_size'):
        GaussianVoxelizer(ds.point_cloud_range, ds.occ_size, 18, 17, voxel_size=[0.5, 0.4, 0.4])
    with pytest.raises(ValueError, match='K=5'):
        vox(Gaussians(gs.means, gs.quats, gs.scales, gs.opacities, torch.zeros(1, 1, 5)))


def _rotmat_reference_torch(q):
    """R = (w^2 - v.v) I + 2 v v^T + 2 w [v]_x, from normalised q = [w, v] (another formula)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, v = q[..., :1, None], q[..., 1:]
    vx = torch.zeros(q.shape[:-1] + (3, 3), dtype=q.dtype)
    vx[..., 0, 1], vx[..., 0, 2], vx[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    vx = vx - vx.transpose(-1, -2)
    eye = torch.eye(3, dtype=q.dtype)
    vvt = v[..., :, None] * v[..., None, :]  # [..., 3, 3]
    return (w ** 2 - (v * v).sum(-1)[..., None, None]) * eye + 2 * vvt + 2 * w * vx


def _dense_reference_torch(means, quats, scales, opac, feats):
    """Differentiable brute force over all (Gaussian, voxel) pairs, no truncation."""
    p = torch.from_numpy(_centres(PC_RANGE, OCC_SIZE))  # [V, 3]
    R = _rotmat_reference_torch(quats)  # [B, N, 3, 3]
    cov = R @ torch.diag_embed(scales ** 2) @ R.transpose(-1, -2)  # [B, N, 3, 3]
    prec = torch.linalg.inv(cov)  # a covariance, not a rigid transform
    d = p[None, None] - means[:, :, None]  # [B, N, V, 3]
    m2 = torch.einsum('bnvi,bnij,bnvj->bnv', d, prec, d)
    w = opac[..., None] * torch.exp(-0.5 * m2)  # [B, N, V]
    dens = w.sum(1)  # [B, V]
    scores = torch.einsum('bnv,bnk->bvk', w, feats.softmax(-1))  # [B, V, K]
    return dens.reshape((-1,) + OCC_SIZE), scores.reshape((-1,) + OCC_SIZE + (feats.shape[-1],))


@pytest.mark.parametrize('max_pairs_per_chunk', [None, 5])
def test_gradients_match_dense_reference(max_pairs_per_chunk):
    gs = _random_gaussians(B=2, N=6, K=3, seed=5)
    g = torch.Generator().manual_seed(6)
    wd = torch.randn((2,) + OCC_SIZE, generator=g, dtype=torch.float64)
    ws = torch.randn((2,) + OCC_SIZE + (3,), generator=g, dtype=torch.float64)
    names = ('means', 'quats', 'scales', 'opacities', 'features')

    def grads(fn):
        leaves = [getattr(gs, n).clone().requires_grad_(True) for n in names]
        dens, scores = fn(*leaves)
        ((dens * wd).sum() + (scores * ws).sum()).backward()
        return [t.grad for t in leaves]

    ours = grads(lambda *a: (lambda o: (o.density, o.scores))(voxelize_gaussians(
        *a, PC_RANGE, OCC_SIZE, cutoff=40.0, max_pairs_per_chunk=max_pairs_per_chunk)))
    ref = grads(_dense_reference_torch)
    for name, a, b in zip(names, ours, ref):
        assert torch.isfinite(a).all(), name
        assert b.abs().max() > 1e-6, name  # non-trivial gradient
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7, msg=name)


def test_gradcheck_default_cutoff():
    # with the default cutoff the function is smooth away from the ellipsoid boundary
    gs = _random_gaussians(B=1, N=3, K=2, seed=7, scale_range=(0.3, 0.6))
    inputs = tuple(getattr(gs, n).clone().requires_grad_(True)
                   for n in ('means', 'quats', 'scales', 'opacities', 'features'))

    def fn(*a):
        out = voxelize_gaussians(*a, PC_RANGE, OCC_SIZE)
        return out.density, out.scores

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-6, fast_mode=True)


def test_backward_when_nothing_reaches_the_grid():
    means = torch.tensor([[[100.0, 0, 0]]], requires_grad=True)
    feats = torch.zeros(1, 1, 3, requires_grad=True)
    out = voxelize_gaussians(means, torch.tensor([[[1.0, 0, 0, 0]]]), torch.full((1, 1, 3), 0.3),
                             torch.ones(1, 1), feats, PC_RANGE, OCC_SIZE)
    assert out.num_pairs == 0 and out.density.abs().sum() == 0
    (out.density.sum() + out.scores.sum()).backward()  # a loss on an empty grid still works
    assert means.grad is None or (means.grad == 0).all()


def test_gaussians_from_voxels_pads_batches():
    sem = torch.full((2, 3, 2, 2), 17, dtype=torch.uint8)
    sem[0, 0, 0, 0], sem[0, 2, 1, 1], sem[1, 1, 0, 1] = 4, 11, 16
    gs = gaussians_from_voxels(sem, (0, 0, 0, 1.2, 0.8, 0.8), free_label=17, num_classes=18,
                               scale=0.1)
    assert gs.means.shape == (2, 2, 3) and gs.features.shape == (2, 2, 18)
    torch.testing.assert_close(gs.means[0], torch.tensor([[0.2, 0.2, 0.2], [1.0, 0.6, 0.6]]))
    assert gs.features[0].argmax(-1).tolist() == [4, 11] and gs.features[1, 0].argmax() == 16
    assert gs.opacities.tolist() == [[1.0, 1.0], [1.0, 0.0]]  # the padding is transparent


def _miou_masked(pred, gt, mask, num_classes=18, free_label=17):
    """Independent confusion-matrix mIoU over mask voxels; classes except free, nanmean."""
    g, p = gt[mask].astype(np.int64), pred[mask].astype(np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (g, p), 1)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = tp / union  # nan for classes absent from both
    keep = [c for c in range(num_classes) if c != free_label]
    return 100 * np.nanmean(iou[keep])


def test_round_trip_real_occ3d_frame(realdata):
    from mmengine.config import Config

    from splattingocc.paths import REPO_ROOT
    ds = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))
    f = realdata / 'occ3d' / '29796060110c4163b07f06eff4af0753.labels.npz'
    data = np.load(f)
    gt, mask = data['semantics'], data['mask_camera'].astype(bool)
    assert gt.shape == tuple(ds.occ_size)
    # one Gaussian per occupied voxel: sigma 0.2 m (half a voxel), opacity 1, one-hot logits;
    # a free voxel next to occupied ones gets 0.135 per face neighbour, so threshold 0.9
    gs = gaussians_from_voxels(torch.from_numpy(gt)[None], ds.point_cloud_range, ds.free_label,
                               ds.num_classes, scale=0.2, opacity=1.0, logit=20.0)
    assert gs.num_gaussians == int((gt != ds.free_label).sum()) > 30000
    vox = GaussianVoxelizer(ds.point_cloud_range, ds.occ_size, ds.num_classes, ds.free_label,
                            voxel_size=ds.voxel_size, density_threshold=0.9, label_dtype='uint8')
    pred = vox(gs)[0].numpy()
    assert pred.dtype == np.uint8
    miou = _miou_masked(pred, gt, mask)
    assert miou >= 99.0, miou
    assert (pred == gt).mean() > 0.999
    # sanity of the mIoU helper itself: a corrupted prediction scores lower
    bad = pred.copy()
    bad[gt == 4] = 0
    assert _miou_masked(bad, gt, mask) < miou - 3


def _grid_gaussians(grid, pc, seed=0, dtype=torch.float64):
    """One random Gaussian per voxel (mean inside it, scales up to half a voxel)."""
    g = torch.Generator().manual_seed(seed)
    X, Y, Z = grid
    lo, hi = torch.tensor(pc[:3], dtype=dtype), torch.tensor(pc[3:], dtype=dtype)
    vs = (hi - lo) / torch.tensor(grid, dtype=dtype)
    idx = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=dtype) for n in grid),
                                     indexing='ij'), -1).reshape(-1, 3)  # x-major order
    N = X * Y * Z
    means = lo + vs * (idx + torch.rand(N, 3, generator=g, dtype=dtype))
    scales = vs * (0.1 + 0.4 * torch.rand(N, 3, generator=g, dtype=dtype))
    quats = torch.randn(N, 4, generator=g, dtype=dtype)
    opac = torch.rand(N, generator=g, dtype=dtype)
    return means[None], quats[None], scales[None], opac[None], vs


def _dense_density(points, means, quats, scales, opac, keep=None):
    """Brute force: every Gaussian (or those where keep[p, n]) at every point."""
    R = quat_to_rotmat(quats[0])
    cov = R @ torch.diag_embed(scales[0].square()) @ R.transpose(-1, -2)
    d = points[0][:, None, :] - means[0][None]  # [P, N, 3]
    m2 = torch.einsum('pni,nij,pnj->pn', d, torch.linalg.inv(cov), d)
    w = opac[0][None] * torch.exp(-0.5 * m2)
    if keep is not None:
        w = w * keep
    return w.sum(-1)[None]


def test_grid_gaussian_density_matches_brute_force():
    """A window covering the whole grid: the exact sum over all Gaussians; windows 2 and 3: the
    sums over the voxels whose centres are within 1 (resp. 1.5) voxels of the point per axis
    (an explicit neighbour test)."""
    grid, pc = (5, 4, 3), [-5.0, -4.0, -1.0, 5.0, 4.0, 2.0]
    means, quats, scales, opac, vs = _grid_gaussians(grid, pc)
    g = torch.Generator().manual_seed(1)
    lo = torch.tensor(pc[:3], dtype=torch.float64)
    hi = torch.tensor(pc[3:], dtype=torch.float64)
    pts = (lo + (hi - lo) * torch.rand(1, 200, 3, generator=g, dtype=torch.float64))
    full = grid_gaussian_density(pts, means, quats, scales, opac, pc, grid, window=11)
    assert torch.allclose(full, _dense_density(pts, means, quats, scales, opac), atol=1e-12)
    x = (pts[0] - lo) / vs  # [P, 3] continuous voxel coordinates; voxel centres at index + 0.5
    idx = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing='ij'),
                      -1).reshape(-1, 3).double()
    for window, half in ((2, 1.0), (3, 1.5)):
        near = grid_gaussian_density(pts, means, quats, scales, opac, pc, grid, window=window)
        keep = ((idx[None] + 0.5 - x[:, None]).abs() < half).all(-1).double()  # [P, N]
        assert torch.allclose(near, _dense_density(pts, means, quats, scales, opac, keep),
                              atol=1e-12)
        assert (full - near).max() > 0  # the truncation drops something here


def test_grid_gaussian_density_gradcheck_and_bad_count():
    grid, pc = (2, 2, 2), [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]
    means, quats, scales, opac, _ = _grid_gaussians(grid, pc, seed=2)
    pts = torch.tensor([[[0.3, 0.7, 1.2], [1.5, 1.9, 0.1], [1.0, 0.2, 1.7]]], dtype=torch.float64)
    args = [t.clone().requires_grad_() for t in (means, quats, scales, opac)]
    assert torch.autograd.gradcheck(
        lambda m, q, s, o: grid_gaussian_density(pts, m, q, s, o, pc, grid), args)
    with pytest.raises(ValueError, match='window'):
        grid_gaussian_density(pts, means, quats, scales, opac, pc, grid, window=0)
    with pytest.raises(ValueError, match='one per voxel'):
        grid_gaussian_density(pts, means[:, :7], quats[:, :7], scales[:, :7], opac[:, :7], pc,
                              grid)


@pytest.mark.parametrize('score_mode', ['softmax', 'raw'])
def test_grid_gaussian_fields_scores_match_brute_force(score_mode):
    """Class scores at points = sum over all Gaussians (window covering the grid) of the density
    term times softmax(features) (or the raw features); density as grid_gaussian_density."""
    grid, pc = (4, 3, 2), [-4.0, -3.0, -1.0, 4.0, 3.0, 1.0]
    means, quats, scales, opac, _ = _grid_gaussians(grid, pc, seed=3)
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(1, means.shape[1], 5, generator=g, dtype=torch.float64)
    lo, hi = torch.tensor(pc[:3], dtype=torch.float64), torch.tensor(pc[3:], dtype=torch.float64)
    pts = lo + (hi - lo) * torch.rand(1, 50, 3, generator=g, dtype=torch.float64)
    dens, scores = grid_gaussian_fields(pts, means, quats, scales, opac, pc, grid, window=9,
                                        features=feats, score_mode=score_mode)
    assert torch.allclose(dens, grid_gaussian_density(pts, means, quats, scales, opac, pc, grid,
                                                      window=9), atol=1e-12)
    vote = feats[0].softmax(-1) if score_mode == 'softmax' else feats[0]
    want = torch.stack([_dense_density(pts, means, quats, scales, opac * vote[:, k][None])[0]
                        for k in range(5)], -1)[None]  # [1, P, 5]
    assert scores.shape == (1, 50, 5)
    assert torch.allclose(scores, want, atol=1e-12)
    if score_mode == 'softmax':  # probabilities sum to 1: the scores sum to the density
        assert torch.allclose(scores.sum(-1), dens, atol=1e-12)
    assert grid_gaussian_fields(pts, means, quats, scales, opac, pc, grid)[1] is None
    with pytest.raises(ValueError, match='score_mode'):
        grid_gaussian_fields(pts, means, quats, scales, opac, pc, grid, features=feats,
                             score_mode='logits')


@pytest.mark.parametrize('max_pairs_per_chunk', [None, 7])
def test_cached_and_recomputed_pairs_give_the_same_gradients(max_pairs_per_chunk):
    # the backward either reuses the forward's pairs (default) or recomputes them per chunk
    gs = _random_gaussians(B=2, N=9, K=4, seed=11)
    g = torch.Generator().manual_seed(12)
    wd = torch.randn((2,) + OCC_SIZE, generator=g, dtype=torch.float64)
    ws = torch.randn((2,) + OCC_SIZE + (4,), generator=g, dtype=torch.float64)
    names = ('means', 'quats', 'scales', 'opacities', 'features')

    def grads(cache_pairs):
        leaves = [getattr(gs, n).clone().requires_grad_(True) for n in names]
        out = voxelize_gaussians(*leaves, PC_RANGE, OCC_SIZE, cache_pairs=cache_pairs,
                                 max_pairs_per_chunk=max_pairs_per_chunk)
        ((out.density * wd).sum() + (out.scores * ws).sum()).backward()
        return [t.grad for t in leaves]

    for name, a, b in zip(names, grads(True), grads(False)):
        assert b.abs().max() > 1e-6, name
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10, msg=name)
