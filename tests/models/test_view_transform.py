import itertools
import math

import pytest
import torch

from splattingocc.geometry import (camera_rays, depth_labels_min_pool, frustum_points,
                                   voxel_flat_index)
from splattingocc.models.view_transform import LSSViewTransform, depth_bin_centres, voxel_pool

PC_RANGE = (-10.0, -10.0, -2.0, 10.0, 10.0, 2.0)  # 2 m x 2 m x 1 m voxels
GRID = (10, 10, 4)


def _front_camera():
    """A camera looking along ego +x, 1.5 m up, 1 m forward (OpenCV axes)."""
    K = torch.tensor([[20.0, 0, 32], [0, 20.0, 16], [0, 0, 1]])
    cam2ego = torch.eye(4)
    # columns: camera x -> ego -y, camera y -> ego -z, camera z -> ego +x
    cam2ego[:3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    cam2ego[:3, 3] = torch.tensor([1.0, 0, 1.5])
    return K[None, None], cam2ego[None, None]


def test_frustum_point_hand_computed():
    K, cam2ego = _front_camera()
    depths = depth_bin_centres((1.0, 11.0, 1.0))  # 10 bins, centres 1.5 .. 10.5
    assert torch.allclose(depths, torch.arange(10) + 1.5)
    pts = frustum_points(K, cam2ego, (2, 4), (32, 64), depths)
    assert pts.shape == (1, 1, 10, 2, 4, 3)
    # cell (row 1, col 2): centre u = 2.5 * 16 = 40, v = 1.5 * 16 = 24 -> ray (0.4, 0.4, 1);
    # bin 4 -> depth 5.5 -> camera (2.2, 2.2, 5.5) -> ego (5.5 + 1, -2.2, -2.2 + 1.5)
    assert torch.allclose(pts[0, 0, 4, 1, 2], torch.tensor([6.5, -2.2, -0.7]), atol=1e-5)
    # -> voxel (floor(16.5 / 2), floor(7.8 / 2), floor(1.3 / 1)) = (8, 3, 1)
    flat = voxel_flat_index(pts[0, 0, 4, 1, 2], PC_RANGE, GRID)
    assert int(flat) == (8 * 10 + 3) * 4 + 1


def test_lift_places_feature_in_hand_computed_voxel():
    K, cam2ego = _front_camera()
    vt = LSSViewTransform(in_channels=8, out_channels=5, depth_bins=(1.0, 11.0, 1.0),
                          pc_range=PC_RANGE, grid_size=GRID)
    pts = frustum_points(K, cam2ego, (2, 4), (32, 64), vt.depths)
    depth = torch.zeros(1, 1, 10, 2, 4)
    depth[0, 0, 4, 1, 2] = 0.75  # all other cells / bins carry nothing
    ctx = torch.randn(1, 1, 2, 4, 5)
    vol = vt._splat(pts, depth, ctx)
    assert vol.shape == (1, 5, 10, 10, 4)
    assert torch.allclose(vol[0, :, 8, 3, 1], 0.75 * ctx[0, 0, 1, 2])
    vol[0, :, 8, 3, 1] = 0
    assert vol.abs().max() == 0


def test_splat_matches_brute_force_and_drops_outside_points():
    g = torch.Generator().manual_seed(0)
    B, N, D, Hf, Wf, C = 2, 2, 6, 3, 4, 3
    vt = LSSViewTransform(4, C, (1.0, 13.0, 2.0), PC_RANGE, GRID)
    pts = (torch.rand(B, N, D, Hf, Wf, 3, generator=g) - 0.5) * torch.tensor([26.0, 26.0, 5.0])
    depth = torch.rand(B, N, D, Hf, Wf, generator=g)
    ctx = torch.randn(B, N, Hf, Wf, C, generator=g)
    vol = vt._splat(pts, depth, ctx)
    ref = torch.zeros(B, C, *GRID)
    n_out = 0
    for b, n, d, i, j in itertools.product(range(B), range(N), range(D), range(Hf), range(Wf)):
        p = pts[b, n, d, i, j].tolist()
        idx = [int((p[a] - PC_RANGE[a]) // ((PC_RANGE[a + 3] - PC_RANGE[a]) / GRID[a]))
               for a in range(3)]
        if not all(0 <= idx[a] < GRID[a] for a in range(3)):
            n_out += 1
            continue
        ref[b, :, idx[0], idx[1], idx[2]] += depth[b, n, d, i, j] * ctx[b, n, i, j]
    assert n_out > 0  # the case exercises dropping
    assert torch.allclose(vol, ref, atol=1e-5)
    # the generic pooling function agrees
    feats = (depth[..., None] * ctx[:, :, None]).reshape(B, -1, C)
    assert torch.allclose(voxel_pool(pts.reshape(B, -1, 3), feats, PC_RANGE, GRID), ref, atol=1e-5)


def test_depth_labels_min_pool_hand_case():
    gt = torch.zeros(1, 1, 4, 8)
    gt[0, 0, 0, 0] = 5.0
    gt[0, 0, 1, 1] = 3.0  # same 2x2 cell as (0, 0): min is 3
    gt[0, 0, 3, 7] = 7.0  # cell (1, 3)
    out = depth_labels_min_pool(gt, (2, 4))
    expected = torch.zeros(1, 1, 2, 4)
    expected[0, 0, 0, 0] = 3.0
    expected[0, 0, 1, 3] = 7.0
    assert torch.equal(out, expected)
    # a label map at a finer, non-integer ratio still maps every pixel to the cell of its centre
    gt2 = torch.zeros(1, 1, 3, 5)
    gt2[0, 0, 2, 4] = 2.0  # centre (4.5 / 5, 2.5 / 3) of the image -> cell (1, 3) of 2 x 4
    assert depth_labels_min_pool(gt2, (2, 4))[0, 0, 1, 3] == 2.0


def test_depth_bin_index():
    vt = LSSViewTransform(4, 3, (1.0, 5.0, 0.5), PC_RANGE, GRID)
    assert vt.num_bins == 8
    d = torch.tensor([0.0, 0.9, 1.0, 1.49, 1.5, 4.99, 5.0])
    assert vt.depth_bin_index(d).tolist() == [-1, -1, 0, 0, 1, 7, -1]


def test_view_transform_forward_shapes_and_gradients():
    K, cam2ego = _front_camera()
    vt = LSSViewTransform(8, 5, (1.0, 11.0, 1.0), PC_RANGE, GRID)
    feats = torch.randn(1, 1, 8, 2, 4, requires_grad=True)
    vol, depth = vt(feats, K, cam2ego, (32, 64))
    assert vol.shape == (1, 5, 10, 10, 4)
    assert depth.shape == (1, 1, 10, 2, 4)
    assert torch.allclose(depth.sum(2), torch.ones(1, 1, 2, 4))
    vol.square().sum().backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    with pytest.raises(AssertionError):
        vt(torch.randn(1, 1, 7, 2, 4), K, cam2ego, (32, 64))


@pytest.mark.parametrize('depth_convs, reach', [(1, 1), (3, 3)])
def test_depth_net_receptive_field_grows_with_depth_convs(depth_convs, reach):
    # each 3x3 layer widens the depth net's view by one cell per side: a change in one feature
    # cell moves the depth distribution exactly `reach` cells away, and not reach + 1
    torch.manual_seed(0)
    vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, mid_channels=6,
                          depth_convs=depth_convs).eval()
    assert sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
               for m in vt.depth_net.modules()) == depth_convs
    K, cam2ego = _front_camera()
    feats = torch.randn(1, 1, 4, 1, 9)
    _, d0 = vt(feats, K, cam2ego, (16, 144))
    feats[..., 0] += 5.0  # change the first column only
    _, d1 = vt(feats, K, cam2ego, (16, 144))
    moved = (d1 - d0).abs().amax(dim=(0, 1, 2, 3)) > 1e-6  # per column
    assert moved[:reach + 1].all() and not moved[reach + 1:].any()


def test_depth_convs_must_be_positive():
    with pytest.raises(ValueError, match='depth_convs'):
        LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, depth_convs=0)


def _constant_depth_net(vt, bin_k, ctx_value):
    """Make the depth net's output constant: all depth mass in bin ``bin_k``, context
    ``ctx_value`` [C] in every cell."""
    last = vt.depth_net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-30.0)
        last.bias[bin_k] = 30.0
        last.bias[vt.num_bins:] = ctx_value


def test_lift_upsample_casts_s_by_s_rays_per_cell_hand_computed():
    # one camera, a 2 x 4 feature map of a 32 x 64 image, all depth in bin 4 (5.5 m): with
    # lift_upsample=2 the lift casts the rays of a 4 x 8 map (cell centres every 8 px), each
    # carrying 1/4 of its cell's context, into the voxels computed by hand below
    K, cam2ego = _front_camera()
    c = torch.tensor([1.0, -2.0, 0.5])
    vols = {}
    for s in (1, 2):
        vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, lift_upsample=s).eval()
        _constant_depth_net(vt, 4, c)
        vol, depth = vt(torch.randn(1, 1, 4, 2, 4), K, cam2ego, (32, 64))
        assert depth.shape == (1, 1, 10, 2 * s, 4 * s)
        vols[s] = vol
    ref = torch.zeros(1, 3, *GRID)
    for i, j in itertools.product(range(4), range(8)):
        u, v = (j + 0.5) * 8, (i + 0.5) * 8
        x_cam, y_cam = (u - 32) / 20 * 5.5, (v - 16) / 20 * 5.5  # depth 5.5 m
        ego = (5.5 + 1.0, -x_cam, -y_cam + 1.5)
        idx = [int((ego[a] - PC_RANGE[a]) // [2.0, 2.0, 1.0][a]) for a in range(3)]
        if all(0 <= idx[a] < GRID[a] for a in range(3)):
            ref[0, :, idx[0], idx[1], idx[2]] += c / 4
    assert torch.allclose(vols[2], ref, atol=1e-5)
    # more voxels are reached than with one ray per cell; the mass is the same
    assert (vols[2][0, 0] != 0).sum() > (vols[1][0, 0] != 0).sum()
    assert torch.allclose(vols[2].sum(), vols[1].sum(), atol=1e-4)


def test_lift_upsample_depth_is_the_bilinear_upsampling_and_trains():
    torch.manual_seed(0)
    K, cam2ego = _front_camera()
    vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, lift_upsample=3).eval()
    feats = torch.randn(1, 1, 4, 2, 4, requires_grad=True)
    vol, depth = vt(feats, K, cam2ego, (32, 64))
    logits = torch.nn.functional.interpolate(vt.depth_net(feats[0])[:, :vt.num_bins],
                                             scale_factor=3, mode='bilinear',
                                             align_corners=False)
    assert torch.allclose(depth[0], logits.softmax(1), atol=1e-6)
    vol.square().sum().backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


@pytest.mark.parametrize('bad', [0, 1.5, -2])
def test_lift_upsample_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match='lift_upsample'):
        LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, lift_upsample=bad)


@pytest.mark.parametrize('s', [1, 2])
def test_points_per_voxel_matches_a_loop_over_the_frustum(s):
    K, cam2ego = _front_camera()
    K2, e2 = K.expand(2, 2, 3, 3).clone(), cam2ego.expand(2, 2, 4, 4).clone()
    e2[1, 1, 1, 3] += 3.0  # the second sample's second camera moved 3 m to the left
    vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, lift_upsample=s)
    counts = vt.points_per_voxel(K2, e2, (2 * s, 4 * s), (32, 64))
    assert counts.shape == (2, *GRID)
    pts = frustum_points(K2, e2, (2 * s, 4 * s), (32, 64), vt.depths)
    ref = torch.zeros(2, *GRID, dtype=torch.long)
    for b in range(2):
        for p in pts[b].reshape(-1, 3).tolist():
            idx = [int((p[a] - PC_RANGE[a]) // [2.0, 2.0, 1.0][a]) for a in range(3)]
            if all(0 <= idx[a] < GRID[a] for a in range(3)):
                ref[b, idx[0], idx[1], idx[2]] += 1
    assert torch.equal(counts, ref)
    assert not torch.equal(counts[0], counts[1])


def test_camera_rays_hand_computed_and_ground_depth():
    K, cam2ego = _front_camera()
    rays = camera_rays(K, cam2ego, (2, 4), (32, 64))
    assert rays.shape == (1, 1, 2, 4, 3)
    # cell (1, 2): K^-1 [40, 24, 1] = (0.4, 0.4, 1) -> ego (1, -0.4, -0.4)
    assert torch.allclose(rays[0, 0, 1, 2], torch.tensor([1.0, -0.4, -0.4]), atol=1e-6)
    # 1.5 m above the ground: the ground is at camera depth -1.5 / -0.4 = 3.75, and the frustum
    # point at that depth has ego z = 0
    pts = frustum_points(K, cam2ego, (2, 4), (32, 64), torch.tensor([3.75]))
    assert torch.allclose(pts[0, 0, 0, 1, 2], torch.tensor([4.75, -1.5, 0.0]), atol=1e-6)


def test_ray_inputs_make_the_depth_depend_on_where_the_camera_looks():
    # the same image features seen by the same camera pitched down by 10 degrees: without ray
    # inputs the depth distribution cannot change, with them it does
    torch.manual_seed(0)
    K, cam2ego = _front_camera()
    a = math.radians(10.0)
    pitch = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    tilted = cam2ego.clone()
    tilted[0, 0, :3, :3] = pitch @ cam2ego[0, 0, :3, :3]  # ego-frame rotation about y
    feats = torch.randn(1, 1, 4, 2, 4)
    for ray_inputs in (False, True):
        vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID,
                              ray_inputs=ray_inputs).eval()
        assert vt.depth_net[0][0].in_channels == 4 + 3 * ray_inputs
        _, d0 = vt(feats, K, cam2ego, (32, 64))
        _, d1 = vt(feats, K, tilted, (32, 64))
        assert torch.equal(d0, d1) != ray_inputs


def test_semantic_lift_hand_computed_class_mass():
    # all depth mass in bin 4 (5.5 m), context c, class logits z in every cell: each voxel the
    # 2 x 4 rays reach gets (number of rays) x [c, softmax(z)]; the logits come back per cell
    K, cam2ego = _front_camera()
    c = torch.tensor([1.0, -2.0, 0.5])
    z = torch.tensor([2.0, 0.0, -1.0, 0.5])
    vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, semantic_classes=4).eval()
    assert vt.volume_channels == 7
    _constant_depth_net(vt, 4, torch.cat([c, z]))
    vol, depth, logits = vt(torch.randn(1, 1, 4, 2, 4), K, cam2ego, (32, 64))
    assert vol.shape == (1, 7, *GRID) and depth.shape == (1, 1, 10, 2, 4)
    assert logits.shape == (1, 1, 4, 2, 4)
    assert torch.allclose(logits[0, 0, :, 1, 2], z, atol=1e-5)
    p = torch.exp(z) / torch.exp(z).sum()
    ref = torch.zeros(1, 7, *GRID)
    for i, j in itertools.product(range(2), range(4)):
        u, v = (j + 0.5) * 16, (i + 0.5) * 16
        ego = (5.5 + 1.0, -(u - 32) / 20 * 5.5, -(v - 16) / 20 * 5.5 + 1.5)
        idx = [int((ego[a] - PC_RANGE[a]) // [2.0, 2.0, 1.0][a]) for a in range(3)]
        if all(0 <= idx[a] < GRID[a] for a in range(3)):
            ref[0, :, idx[0], idx[1], idx[2]] += torch.cat([c, p])
    assert ref[0, 3:].sum() > 0
    assert torch.allclose(vol, ref, atol=1e-5)


def test_semantic_lift_keeps_the_context_and_carries_the_depth_mass():
    # random depth net: the first C channels are the lift without classes (same weights), and
    # the K class channels sum, per voxel, to the depth probability landing there
    torch.manual_seed(0)
    K, cam2ego = _front_camera()
    vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, semantic_classes=5).eval()
    plain = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID).eval()
    state = {k: v[:13] if k.startswith('depth_net.1.') else v
             for k, v in vt.state_dict().items()}
    plain.load_state_dict(state)
    feats = torch.randn(1, 1, 4, 2, 4)
    vol, depth, _ = vt(feats, K, cam2ego, (32, 64))
    vol0, depth0 = plain(feats, K, cam2ego, (32, 64))
    assert torch.allclose(depth, depth0) and torch.allclose(vol[:, :3], vol0, atol=1e-6)
    pts = frustum_points(K, cam2ego, (2, 4), (32, 64), vt.depths)
    flat = voxel_flat_index(pts, PC_RANGE, GRID).reshape(-1)
    ok = flat >= 0
    mass = torch.zeros(math.prod(GRID)).index_add(0, flat[ok], depth.reshape(-1)[ok])
    assert torch.allclose(vol[0, 3:].sum(0).reshape(-1), mass, atol=1e-6)


@pytest.mark.parametrize('bad', [-1, 2.5])
def test_semantic_classes_must_be_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match='semantic_classes'):
        LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, semantic_classes=bad)


def test_oracle_depth_lifts_labelled_cells_at_their_label_bin():
    # predicted: all mass in bin 0 (1.5 m) everywhere; one label of 5.7 m in cell (row 1, col 2)
    # (label map 4 x 8: pixel (2..3, 4..5) belong to that cell; the cell's nearest label wins)
    K, cam2ego = _front_camera()
    c = torch.tensor([1.0, -2.0, 0.5])
    vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID).eval()
    _constant_depth_net(vt, 0, c)
    feats = torch.randn(1, 1, 4, 2, 4)
    labels = torch.zeros(1, 1, 4, 8)
    labels[0, 0, 2, 4] = 5.7
    labels[0, 0, 3, 5] = 8.2
    vol_pred, depth = vt(feats, K, cam2ego, (32, 64))
    vol, depth_o = vt.lift(feats, K, cam2ego, (32, 64), oracle_depth=labels)
    assert torch.equal(depth, depth_o)  # the returned depth stays the prediction
    # the cell's bin-0 point (ego (2.5, -0.6, 0.9) -> voxel (6, 4, 2)) loses c, its bin-4 point
    # at 5.5 m (ego (6.5, -2.2, -0.7) -> voxel (8, 3, 1), as in the test above) gains it
    diff = vol - vol_pred
    assert torch.allclose(diff[0, :, 6, 4, 2], -c, atol=1e-5)
    assert torch.allclose(diff[0, :, 8, 3, 1], c, atol=1e-5)
    diff[0, :, 6, 4, 2] = 0
    diff[0, :, 8, 3, 1] = 0
    assert diff.abs().max() < 1e-5
    # no labels: the prediction
    vol_none, _ = vt.lift(feats, K, cam2ego, (32, 64), oracle_depth=torch.zeros(1, 1, 4, 8))
    assert torch.allclose(vol_none, vol_pred)


def test_hard_lift_puts_each_cells_context_at_its_most_probable_bin_only():
    K, cam2ego = _front_camera()
    torch.manual_seed(0)
    vt = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, lift_mode='hard').eval()
    feats = torch.randn(1, 1, 4, 2, 4)
    vol, depth = vt(feats, K, cam2ego, (32, 64))
    assert depth.max() < 0.99  # the returned distribution is the soft prediction
    # reference: one point per cell (its argmax bin's centre) carrying the cell's full context
    with torch.no_grad():
        ctx = vt.depth_net(feats[0])[0, vt.num_bins:]  # [C, 2, 4]
    k = depth[0, 0].argmax(0)  # [2, 4]
    pts = frustum_points(K, cam2ego, (2, 4), (32, 64), vt.depths)[0, 0]  # [D, 2, 4, 3]
    p = pts.gather(0, k[None, :, :, None].expand(1, 2, 4, 3))[0]  # [2, 4, 3]
    ref = voxel_pool(p.reshape(1, -1, 3), ctx.permute(1, 2, 0).reshape(1, -1, 3), PC_RANGE,
                     GRID)
    assert torch.allclose(vol, ref, atol=1e-6)
    soft = LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID).eval()
    soft.load_state_dict(vt.state_dict())
    assert not torch.allclose(soft(feats, K, cam2ego, (32, 64))[0], vol, atol=1e-3)
    # with the oracle: a labelled cell takes its label's bin (as the soft lift does), the others
    # keep their argmax
    full = torch.full((1, 1, 4, 8), 5.7)
    assert torch.allclose(vt.lift(feats, K, cam2ego, (32, 64), oracle_depth=full)[0],
                          soft.lift(feats, K, cam2ego, (32, 64), oracle_depth=full)[0], atol=1e-6)
    none = torch.zeros(1, 1, 4, 8)
    assert torch.allclose(vt.lift(feats, K, cam2ego, (32, 64), oracle_depth=none)[0], vol)
    # no gradient through the choice: the depth logits' output weights get none from the volume
    vt.train()
    vt(feats, K, cam2ego, (32, 64))[0].square().sum().backward()
    g = vt.depth_net[-1].weight.grad  # [D + C, mid, 1, 1]
    assert g[:vt.num_bins].abs().max() == 0 and g[vt.num_bins:].abs().max() > 0


def test_lift_mode_must_be_soft_or_hard():
    with pytest.raises(ValueError, match="lift_mode must be 'soft' or 'hard'"):
        LSSViewTransform(4, 3, (1.0, 11.0, 1.0), PC_RANGE, GRID, lift_mode='argmax')


def test_ground_contact_scan_hand_computed():
    from splattingocc.models.view_transform import ground_contact_scan
    # one column, rows top to bottom; ground depth 50, 20, 15, 10
    ground = torch.tensor([50.0, 20.0, 15.0, 10.0])[:, None]
    g = torch.tensor([0.0, 1.0, 0.0, 1.0])[:, None]
    # bottom row: its own ground depth; row 2 (not ground) carries 10; row 1 is ground (20);
    # row 0 carries 20
    assert ground_contact_scan(ground, g)[:, 0].tolist() == [20.0, 20.0, 10.0, 10.0]
    g = torch.tensor([0.0, 0.0, 0.5, 0.0])[:, None]
    # row 2 half ground: 0.5 * 15 + 0.5 * 10 = 12.5, carried up
    assert ground_contact_scan(ground, g)[:, 0].tolist() == [12.5, 12.5, 12.5, 10.0]


def _gaussian_over_bins(centres, d, sigma):
    w = torch.exp(-0.5 * ((centres - d) / sigma) ** 2)
    return w / w.sum()


def test_ground_contact_prior_hand_computed():
    """_front_camera (f = 20, horizon at v = 16, 1.5 m up), 8 x 4 cells of a 32 x 64 image:
    rows 4..7 (v = 18, 22, 26, 30) see the ground at 1.5 * 20 / (v - 16) = 15, 5, 3, 2.14 m."""
    K, cam2ego = _front_camera()
    vt = LSSViewTransform(4, 3, (1.0, 21.0, 1.0), PC_RANGE, GRID, ground_contact=True,
                          contact_sigma=0.7)
    D = vt.num_bins
    ground = [None, None, None, None, 15.0, 5.0, 3.0, 30.0 / 14.0]
    depth = torch.zeros(1, D, 8, 4)
    for r in range(8):
        # rows 5..7 put their mass at their ground bin (ground); rows 0..4 at bin 18 (19.5 m:
        # row 4's ground is at 15 m, more than a bin away, so it is not read as ground)
        k = 18 if r < 5 else int(ground[r] - 1.0)
        depth[0, k, r] = 1.0
    centres = depth_bin_centres((1.0, 21.0, 1.0))
    for m in (0.0, 1.0, 0.25):
        gate = torch.full((1, 8, 4), m)
        out = vt._mix_contact_prior(depth, gate, K, cam2ego, (32, 64))
        for r in range(8):
            contact = 5.0 if r < 5 else ground[r]  # rows above row 5 stand on row 5's ground
            q = _gaussian_over_bins(centres, contact, 0.7)
            want = m * q + (1 - m) * depth[0, :, r, 0]
            for c in range(4):
                assert torch.allclose(out[0, :, r, c], want, atol=1e-5), (m, r, c)
    with pytest.raises(ValueError, match='contact_sigma'):
        LSSViewTransform(4, 3, (1.0, 21.0, 1.0), PC_RANGE, GRID, ground_contact=True,
                         contact_sigma=0.0)


def test_ground_contact_gate_is_one_more_output_and_trains():
    K, cam2ego = _front_camera()
    plain = LSSViewTransform(4, 3, (1.0, 21.0, 1.0), PC_RANGE, GRID)
    vt = LSSViewTransform(4, 3, (1.0, 21.0, 1.0), PC_RANGE, GRID, ground_contact=True)
    assert vt.depth_net[-1].out_channels == plain.depth_net[-1].out_channels + 1
    feats = torch.randn(1, 1, 4, 8, 4)
    volume, depth = vt(feats, K, cam2ego, (32, 64))
    assert torch.allclose(depth.sum(2), torch.ones(1, 1, 8, 4), atol=1e-5)
    (-torch.log(depth[:, :, 5] + 1e-6).mean()).backward()
    # the gate (the last output channel) receives a gradient
    assert vt.depth_net[-1].weight.grad[-1].abs().sum() > 0


def test_keep_labels_at_random():
    from splattingocc.models.view_transform import keep_labels_at_random
    bins = torch.full((4000,), 3)
    bins[::2] = -1  # half unlabelled
    assert keep_labels_at_random(bins, 1.0) is bins
    torch.manual_seed(0)
    kept = keep_labels_at_random(bins, 0.3)
    assert bool((kept[::2] == -1).all())  # no label appears where there was none
    assert set(kept[1::2].tolist()) == {-1, 3}
    # 2,000 labels kept with p = 0.3: 600 expected, sd 20.5
    assert abs(int((kept == 3).sum()) - 600) < 100
    assert bool((keep_labels_at_random(bins, 0.0) == -1).all())
