"""The pure-torch splatting renderer against a brute-force reference, by hand and on bad input.

The reference below is written independently of the renderer: gsplat's own pure-torch projection
(``gsplat.cuda._torch_impl``), then every Gaussian against every pixel, sorted by depth, with an
explicit front-to-back loop and gsplat's skip (power < 0, alpha < 1/255) and stop (next T <= 1e-4,
exclusive) rules.
"""
import math

import pytest
import torch

from splattingocc.registry import MODELS
from splattingocc.rendering import TorchSplatRenderer, rasterize_torch
from splattingocc.structures import Cameras, Gaussians

gsplat_torch = pytest.importorskip('gsplat.cuda._torch_impl')


def reference_render(means, quats, scales, opacities, features, viewmats, Ks, width, height,
                     pixels=None, eps2d=0.3, near_plane=0.01, far_plane=1e10, stats=None):
    """Brute force: returns depth [B, C, P], features [B, C, P, K], alpha [B, C, P].

    ``stats``, a dict if given, receives the number of pixels stopped by the 1e-4 rule."""
    B, N = means.shape[:2]
    C = viewmats.shape[1]
    K = features.shape[-1]
    covars, _ = gsplat_torch._quat_scale_to_covar_preci(quats, scales, True, False)
    _, means2d, depths, conics, _ = gsplat_torch._fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane)  # [B, C, N, 2], [B, C, N], [B, C, N, 3]
    if pixels is None:
        v, u = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
        uv = torch.stack([u, v], -1).reshape(1, 1, -1, 2).to(means.dtype) + 0.5
        uv = uv.expand(B, C, -1, 2)
    else:
        uv = pixels.to(means.dtype)
    P = uv.shape[2]
    inside = ((uv[..., 0] >= 0) & (uv[..., 0] < width) & (uv[..., 1] >= 0)
              & (uv[..., 1] < height))  # [B, C, P]
    out_d, out_f, out_a = [], [], []
    for b in range(B):
        for c in range(C):
            order = torch.argsort(depths[b, c].detach(), stable=True)
            T = torch.ones(P, dtype=means.dtype)
            done = ~inside[b, c]
            acc_f = torch.zeros(P, K, dtype=means.dtype)
            acc_d = torch.zeros(P, dtype=means.dtype)
            for i in order.tolist():
                z = depths[b, c, i]
                if not (near_plane < float(z.detach()) < far_plane):
                    continue
                dx = means2d[b, c, i, 0] - uv[b, c, :, 0]
                dy = means2d[b, c, i, 1] - uv[b, c, :, 1]
                ca, cb, cc = conics[b, c, i]
                sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                alpha = torch.clamp(opacities[b, i] * torch.exp(-sigma), max=0.999)
                use = (~done) & (sigma >= 0) & (alpha >= 1.0 / 255.0)
                next_T = T * (1 - alpha)
                stop = use & (next_T <= 1e-4)
                if stats is not None:
                    stats['stopped'] = stats.get('stopped', 0) + int(stop.sum())
                done = done | stop
                use = use & ~stop
                w = torch.where(use, alpha * T, torch.zeros_like(T))
                acc_f = acc_f + w[:, None] * features[b, i]
                acc_d = acc_d + w * z
                T = torch.where(use, next_T, T)
            alpha = 1 - T
            out_d.append(acc_d / alpha.clamp(min=1e-10))
            out_f.append(acc_f)
            out_a.append(alpha)
    return (torch.stack(out_d).reshape(B, C, P), torch.stack(out_f).reshape(B, C, P, K),
            torch.stack(out_a).reshape(B, C, P))


def random_scene(seed, B=1, N=50, C=2, width=40, height=30, K=3, dtype=torch.float64,
                 opaque=False):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.rand(*shape, generator=g, dtype=dtype)

    def rndn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    means = torch.stack([rndn(B, N) * 1.2, rndn(B, N) * 0.9, 3 + 4 * rnd(B, N)], -1)
    quats = rndn(B, N, 4)
    scales = 0.05 + 0.35 * rnd(B, N, 3)
    opacities = 0.05 + 0.94 * rnd(B, N)
    if opaque:  # many pixels reach the transmittance stop
        scales = 0.2 + 0.4 * rnd(B, N, 3)
        opacities = 0.6 + 0.39 * rnd(B, N)
    features = rndn(B, N, K)
    # camera c: a small rotation about y and a sideways shift, world-to-camera
    viewmats = torch.eye(4, dtype=dtype).repeat(B, C, 1, 1)
    for c in range(C):
        ang = 0.15 * c
        viewmats[:, c, 0, 0] = math.cos(ang)
        viewmats[:, c, 0, 2] = math.sin(ang)
        viewmats[:, c, 2, 0] = -math.sin(ang)
        viewmats[:, c, 2, 2] = math.cos(ang)
        viewmats[:, c, 0, 3] = -0.3 * c
    Ks = torch.tensor([[32.0, 0, width / 2], [0, 32.0, height / 2], [0, 0, 1]],
                      dtype=dtype).repeat(B, C, 1, 1)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities,
                features=features, viewmats=viewmats, Ks=Ks, width=width, height=height)


PARAMS = ('means', 'quats', 'scales', 'opacities', 'features')


def _with_grad(scene):
    scene = dict(scene)
    for k in PARAMS:
        scene[k] = scene[k].clone().requires_grad_(True)
    return scene


def _loss(depth, feats, alpha, seed=123):
    g = torch.Generator().manual_seed(seed)
    wd = torch.randn(depth.shape, generator=g, dtype=depth.dtype)
    wf = torch.randn(feats.shape, generator=g, dtype=depth.dtype)
    wa = torch.randn(alpha.shape, generator=g, dtype=depth.dtype)
    return (depth * wd).sum() + (feats * wf).sum() + (alpha * wa).sum()


def _compare(scene, pixels=None, tile_size=16, dtype=torch.float64, fwd_tol=1e-5, grad_rtol=1e-4,
             depth_rtol=0.0, min_stopped=0):
    scene = {k: v.to(dtype) if torch.is_tensor(v) else v for k, v in scene.items()}
    ours_in, ref_in = _with_grad(scene), _with_grad(scene)
    out = rasterize_torch(**ours_in, pixels=pixels, tile_size=tile_size)
    stats = {}
    ref_d, ref_f, ref_a = reference_render(**ref_in, pixels=pixels, stats=stats)
    assert stats.get('stopped', 0) >= min_stopped, stats
    B, C = out.depth.shape[:2]
    depth = out.depth.reshape(B, C, -1)
    feats = out.features.reshape(B, C, -1, out.features.shape[-1])
    alpha = out.alpha.reshape(B, C, -1)
    assert ref_a.max() > 0.9  # the scene is not empty: a real comparison
    torch.testing.assert_close(alpha, ref_a, atol=fwd_tol, rtol=0)
    torch.testing.assert_close(feats, ref_f, atol=fwd_tol, rtol=0)
    # depth is divided by alpha: in float32 its error is relative
    torch.testing.assert_close(depth, ref_d, atol=fwd_tol, rtol=depth_rtol)
    _loss(depth, feats, alpha).backward()
    _loss(ref_d, ref_f, ref_a).backward()
    for k in PARAMS:
        g_ours, g_ref = ours_in[k].grad, ref_in[k].grad
        assert g_ref.abs().max() > 0, k
        err = (g_ours - g_ref).abs().max() / g_ref.abs().max()
        assert err < grad_rtol, (k, float(err))
    return out


@pytest.mark.parametrize('seed,tile_size', [(0, 16), (1, 8), (2, 5)])
def test_dense_matches_reference(seed, tile_size):
    out = _compare(random_scene(seed), tile_size=tile_size)
    assert out.depth.shape == (1, 2, 30, 40) and out.features.shape == (1, 2, 30, 40, 3)
    assert out.intersections > 0


@pytest.mark.parametrize('seed', [10, 11])
def test_dense_opaque_scene_with_transmittance_stops_matches_reference(seed):
    _compare(random_scene(seed, N=120, opaque=True), tile_size=8, min_stopped=50)


def test_dense_matches_reference_batched_float32():
    scene = random_scene(3, B=2, C=3, N=40, width=33, height=21)
    _compare(scene, dtype=torch.float32, fwd_tol=1e-5, grad_rtol=2e-3, depth_rtol=3e-5)


def test_sampled_pixels_match_reference():
    scene = random_scene(4)
    g = torch.Generator().manual_seed(5)
    P = 300
    uv = torch.rand(1, 2, P, 2, generator=g, dtype=torch.float64)
    uv = uv * torch.tensor([46.0, 36.0], dtype=torch.float64) - 3.0  # some outside the image
    out = _compare(scene, pixels=uv)
    outside = (uv[..., 0] < 0) | (uv[..., 0] >= 40) | (uv[..., 1] < 0) | (uv[..., 1] >= 30)
    assert outside.any() and (out.alpha[outside] == 0).all()


def test_sampled_pixel_centres_equal_dense_render():
    scene = random_scene(6, dtype=torch.float32)
    dense = rasterize_torch(**scene)
    g = torch.Generator().manual_seed(7)
    rows = torch.randint(0, 30, (1, 2, 64), generator=g)
    cols = torch.randint(0, 40, (1, 2, 64), generator=g)
    uv = torch.stack([cols, rows], -1).float() + 0.5
    out = rasterize_torch(**scene, pixels=uv)
    b, c = torch.meshgrid(torch.arange(1), torch.arange(2), indexing='ij')
    torch.testing.assert_close(out.depth, dense.depth[b[..., None], c[..., None], rows, cols])
    torch.testing.assert_close(out.alpha, dense.alpha[b[..., None], c[..., None], rows, cols])


def test_gradcheck_tiny_float64():
    scene = random_scene(8, N=4, C=1, width=9, height=7, K=2)
    scene['means'][..., :2] *= 0.3
    scene['means'][..., 2] = 2.0 + torch.arange(4, dtype=torch.float64) * 0.7
    scene['scales'] = scene['scales'] * 0.5 + 0.1

    def f(means, quats, scales, opacities, features):
        out = rasterize_torch(means, quats, scales, opacities, features, scene['viewmats'],
                              scene['Ks'], 9, 7, tile_size=4)
        return out.depth, out.features, out.alpha

    inputs = tuple(scene[k].clone().requires_grad_(True) for k in PARAMS)
    assert f(*inputs)[2].max() > 0.5
    # fast mode: the Jacobian is probed along random directions (far fewer renders)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def _one_camera(width=41, height=31, f=40.0, dtype=torch.float32):
    viewmats = torch.eye(4, dtype=dtype)[None, None]
    # principal point at the centre of pixel (20, 15): a point on the axis projects there
    Ks = torch.tensor([[f, 0, 20.5], [0, f, 15.5], [0, 0, 1]], dtype=dtype)[None, None]
    return Cameras(viewmats=viewmats, Ks=Ks, width=width, height=height)


def _gaussians(means, opacities, features, scale=0.1):
    n = means.shape[0]
    quats = torch.tensor([1.0, 0, 0, 0]).repeat(1, n, 1)
    scales = torch.full((1, n, 3), scale)
    return Gaussians(means=means[None], quats=quats, scales=scales,
                     opacities=opacities[None], features=features[None])


def test_single_gaussian_depth_and_peak_alpha():
    renderer = MODELS.build(dict(type='TorchSplatRenderer', tile_size=8))
    gs = _gaussians(torch.tensor([[0.0, 0.0, 4.0]]), torch.tensor([0.7]),
                    torch.tensor([[2.0, -1.0]]))
    out = renderer(gs, _one_camera())
    assert out.depth.shape == (1, 1, 31, 41)
    assert abs(float(out.alpha[0, 0, 15, 20]) - 0.7) < 1e-6
    assert float(out.alpha[0, 0].max()) == pytest.approx(0.7, abs=1e-6)
    # one Gaussian: the alpha-normalised depth is its z wherever it is seen
    seen = out.alpha[0, 0] > 0
    assert seen.sum() > 1
    torch.testing.assert_close(out.depth[0, 0][seen], torch.full_like(out.depth[0, 0][seen], 4.0))
    torch.testing.assert_close(out.features[0, 0, 15, 20], torch.tensor([1.4, -0.7]))
    assert (out.depth[0, 0][~seen] == 0).all()


def test_two_gaussians_occlude_in_depth_order():
    renderer = TorchSplatRenderer()
    cam = _one_camera()
    o1, o2, z1, z2 = 0.6, 0.8, 3.0, 6.0
    means = torch.tensor([[0.0, 0.0, z2], [0.0, 0.0, z1]])  # far one first in the list
    out = renderer(_gaussians(means, torch.tensor([o2, o1]), torch.tensor([[0.0], [1.0]])), cam)
    w1, w2 = o1, o2 * (1 - o1)
    assert float(out.alpha[0, 0, 15, 20]) == pytest.approx(w1 + w2, abs=1e-6)
    expected_depth = (w1 * z1 + w2 * z2) / (w1 + w2)
    assert float(out.depth[0, 0, 15, 20]) == pytest.approx(expected_depth, abs=1e-5)
    assert float(out.features[0, 0, 15, 20, 0]) == pytest.approx(w1, abs=1e-6)
    # list order does not matter, depth order does
    out2 = renderer(_gaussians(means.flip(0), torch.tensor([o1, o2]), torch.tensor([[1.0], [0.0]])),
                    cam)
    torch.testing.assert_close(out2.depth, out.depth)
    torch.testing.assert_close(out2.features, out.features)


def test_transmittance_stop_excludes_the_gaussian_that_crosses_1e4():
    renderer = TorchSplatRenderer()
    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 6.0]])
    # 0.999 then 0.95: T would go 1 -> 1e-3 -> 5e-5 <= 1e-4, so the far one is not composited
    out = renderer(_gaussians(means, torch.tensor([0.999, 0.95]), torch.tensor([[1.0], [5.0]])),
                   _one_camera())
    assert float(out.alpha[0, 0, 15, 20]) == pytest.approx(0.999, abs=1e-6)
    assert float(out.depth[0, 0, 15, 20]) == pytest.approx(3.0, abs=1e-5)
    assert float(out.features[0, 0, 15, 20, 0]) == pytest.approx(0.999, abs=1e-6)
    # with 0.9 instead, T goes to 1e-3 * 0.1 = 1e-4 exactly... use 0.8: T = 2e-4 > 1e-4, included
    out = renderer(_gaussians(means, torch.tensor([0.999, 0.8]), torch.tensor([[1.0], [5.0]])),
                   _one_camera())
    assert float(out.alpha[0, 0, 15, 20]) == pytest.approx(1 - 0.001 * 0.2, abs=1e-6)
    assert float(out.features[0, 0, 15, 20, 0]) == pytest.approx(0.999 + 5 * 0.8 * 0.001, abs=1e-5)


def _assert_finite_forward_backward(gs_kwargs, cam):
    leaves = {k: v.clone().requires_grad_(True) for k, v in gs_kwargs.items()}
    out = TorchSplatRenderer()(Gaussians(**leaves), cam)
    for t in (out.depth, out.features, out.alpha):
        assert torch.isfinite(t).all()
    (out.depth.sum() + out.features.sum() + out.alpha.sum()).backward()
    for k, v in leaves.items():
        assert v.grad is not None and torch.isfinite(v.grad).all(), k
    return out


def test_degenerate_inputs_give_finite_outputs_and_gradients():
    cam = _one_camera()
    means = torch.tensor([[[0.0, 0.0, -2.0],  # behind the camera
                           [0.0, 0.0, 0.0],  # at the camera centre
                           [0.1, 0.0, 4.0],  # zero scale
                           [0.0, 0.1, 5.0],  # huge scale
                           [-0.2, 0.1, 3.0],  # zero quaternion
                           [0.2, -0.1, 3.5],  # unnormalised quaternion
                           [50.0, 0.0, 1.0],  # far outside the image
                           [0.0, -0.1, 6.0]]])  # scale overflowing float32 covariances
    quats = torch.tensor([[[1.0, 0, 0, 0], [1, 0, 0, 0], [0.3, 0.1, 0, 0.2], [1, 0, 0, 0],
                           [0, 0, 0, 0], [10, 3, -2, 1], [1, 0, 0, 0], [1, 0.5, 0, 0]]])
    scales = torch.tensor([[[0.2] * 3, [0.2] * 3, [0.0] * 3, [1e4] * 3, [0.2] * 3, [0.2] * 3,
                            [0.2] * 3, [1e20] * 3]])
    opac = torch.tensor([[0.9, 0.9, 0.9, 0.5, 0.9, 0.9, 0.9, 0.9]])
    feats = torch.randn(1, 8, 4)
    out = _assert_finite_forward_backward(
        dict(means=means, quats=quats, scales=scales, opacities=opac, features=feats), cam)
    assert out.alpha.max() > 0.5


def test_empty_set_of_gaussians():
    cam = _one_camera()
    z = torch.zeros(1, 0)
    out = _assert_finite_forward_backward(
        dict(means=torch.zeros(1, 0, 3), quats=torch.zeros(1, 0, 4), scales=torch.zeros(1, 0, 3),
             opacities=z, features=torch.zeros(1, 0, 5)), cam)
    assert out.features.shape == (1, 1, 31, 41, 5) and out.intersections == 0
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    pix = torch.rand(1, 1, 10, 2) * 30
    out = TorchSplatRenderer()(Gaussians(torch.zeros(1, 0, 3), torch.zeros(1, 0, 4),
                                         torch.zeros(1, 0, 3), z, torch.zeros(1, 0, 5)), cam, pix)
    assert out.depth.shape == (1, 1, 10) and (out.alpha == 0).all()


def test_all_gaussians_behind_the_camera():
    cam = _one_camera()
    _assert_finite_forward_backward(
        dict(means=torch.tensor([[[0.0, 0.0, -3.0], [1.0, 0.0, -1.0]]]),
             quats=torch.randn(1, 2, 4), scales=torch.full((1, 2, 3), 0.3),
             opacities=torch.full((1, 2), 0.9), features=torch.randn(1, 2, 3)), cam)


def test_small_chunks_and_tile_sizes_give_the_same_result():
    scene = random_scene(9, dtype=torch.float32)
    ref_in = _with_grad(scene)
    ref = rasterize_torch(**ref_in)
    _loss(ref.depth, ref.features, ref.alpha).backward()
    for kw in (dict(chunk=97), dict(tile_size=3), dict(tile_size=64)):
        ins = _with_grad(scene)
        out = rasterize_torch(**ins, **kw)
        torch.testing.assert_close(out.features, ref.features)
        torch.testing.assert_close(out.depth, ref.depth)
        assert out.intersections == ref.intersections
        _loss(out.depth, out.features, out.alpha).backward()
        for k in PARAMS:
            torch.testing.assert_close(ins[k].grad, ref_in[k].grad, rtol=1e-4, atol=1e-6)


def test_real_occ3d_frame_matches_exact_ray_cast(realdata):
    """Real data: the voxels of an Occ3D frame as Gaussians (scale half a voxel, opacity 0.9,
    one-hot classes) in the six real nuScenes cameras at 100x56 render the depth and class of
    the first voxel each pixel ray enters (exact ray cast through the same grid)."""
    import pickle

    import numpy as np
    from mmengine.config import Config

    from splattingocc.evaluation.functional.ray_casting import first_hit
    from splattingocc.paths import REPO_ROOT
    from splattingocc.geometry import rigid_inverse

    ds = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))
    sem = np.load(realdata / 'occ3d/29796060110c4163b07f06eff4af0753.labels.npz')['semantics']
    occ = sem != ds.free_label
    ijk = torch.from_numpy(np.argwhere(occ)).double()  # [N, 3]
    lo = torch.tensor(ds.point_cloud_range[:3], dtype=torch.float64)
    vs = torch.tensor(ds.voxel_size, dtype=torch.float64)
    N = ijk.shape[0]
    gs = Gaussians(means=(lo + vs * (ijk + 0.5)).float()[None],
                   quats=torch.tensor([1.0, 0, 0, 0]).repeat(1, N, 1),
                   scales=(vs / 2).float().expand(1, N, 3).clone(),
                   opacities=torch.full((1, N), 0.9),
                   features=torch.nn.functional.one_hot(torch.from_numpy(sem[occ]).long(),
                                                        ds.num_classes).float()[None])
    with open(realdata / 'nuscenes-keyframe/n015-2018-07-24-11-22-45+0800.pkl', 'rb') as f:
        info = pickle.load(f)['data_list'][0]
    C, W, H = len(ds.camera_names), 100, 56  # 1600x900 / 16
    K = torch.stack([torch.tensor(np.asarray(info['images'][n]['cam2img'])[:3, :3])
                     for n in ds.camera_names]).double()  # [C, 3, 3]
    K[:, :2] /= 16
    cam2ego = torch.stack([torch.tensor(np.asarray(info['images'][n]['cam2ego']))
                           for n in ds.camera_names]).double()  # [C, 4, 4]
    out = TorchSplatRenderer()(gs, Cameras(rigid_inverse(cam2ego).float()[None],
                                           K.float()[None], W, H))

    # exact first hit of every pixel-centre ray; camera depth = distance / |(x/z, y/z, 1)|
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5,
                          torch.arange(W, dtype=torch.float64) + 0.5, indexing='ij')
    d_cam = torch.stack([(u - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None],
                         (v - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None],
                         torch.ones(C, H, W, dtype=torch.float64)], -1)  # [C, H, W, 3]
    d_world = torch.einsum('cij,chwj->chwi', cam2ego[:, :3, :3], d_cam)
    norm = d_world.norm(dim=-1, keepdim=True)
    origins = cam2ego[:, None, None, :3, 3].expand(C, H, W, 3)
    dirs = (d_world / norm).reshape(-1, 3).numpy()
    idx, dist = first_hit(occ, origins.reshape(-1, 3).numpy(), dirs, ds.point_cloud_range,
                          ds.voxel_size)
    exact = torch.from_numpy(dist).reshape(C, H, W) / norm[..., 0]
    hits = torch.isfinite(exact)
    assert 0.3 < hits.float().mean() < 0.99
    alpha = out.alpha[0].double()
    assert alpha[hits].mean() > 0.95 and alpha[~hits].mean() < 0.3
    seen = hits & (alpha > 0.5)
    err = (out.depth[0].double() - exact).abs()[seen]
    assert err.median() < 0.4  # metres; Gaussians blur the voxel faces
    cls = torch.from_numpy(sem[tuple(idx.clip(0).T)]).reshape(C, H, W)
    assert (out.features[0].argmax(-1) == cls)[seen].float().mean() > 0.9
