import math

import pytest
import torch

from splattingocc.supervision import (FreeSpaceLoss, ImageSemanticLoss, L1DepthLoss,
                                      Occupancy3DLoss, OpacitySparsityLoss, RayDistortionLoss,
                                      RenderedCELoss, SemanticVoxelCELoss, SILogLoss, SurfaceLoss)
from splattingocc.supervision.functional import (auxiliary_ray_weights, class_balanced_weights,
                                                 free_space_loss, image_semantic_ce,
                                                 l1_depth_loss, lss_depth_loss,
                                                 occupancy_3d_losses, opacity_entropy,
                                                 ray_position_variance, rendered_semantic_ce,
                                                 silog_loss, surface_losses,
                                                 voxel_semantic_ce)


def test_silog_hand_computed():
    pred = torch.tensor([2.0, 4.0, 7.0])
    gt = torch.tensor([1.0, 1.0, 0.0])  # the third ray has no label
    d1, d2 = math.log(2.0), math.log(4.0)
    mean_d2 = (d1 ** 2 + d2 ** 2) / 2
    mean_d = (d1 + d2) / 2
    expected = math.sqrt(mean_d2 - 0.85 * mean_d ** 2 + 1e-6)
    assert silog_loss(pred, gt).item() == pytest.approx(expected, rel=1e-6)
    # weights: E[.] becomes a weighted mean
    w = torch.tensor([3.0, 1.0, 5.0])
    mean_d2 = (3 * d1 ** 2 + d2 ** 2) / 4
    mean_d = (3 * d1 + d2) / 4
    expected_w = math.sqrt(mean_d2 - 0.85 * mean_d ** 2 + 1e-6)
    assert silog_loss(pred, gt, w).item() == pytest.approx(expected_w, rel=1e-6)
    got = SILogLoss(loss_weight=2.0).score(pred, gt, w).item()
    assert got == pytest.approx(2 * expected_w, rel=1e-6)


def test_silog_properties():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(50, generator=g) * 40 + 1
    pred = gt * torch.exp(torch.randn(50, generator=g) * 0.1)
    # lambda = 1: invariant to a global scale of the prediction
    a = silog_loss(pred, gt, lam=1.0)
    b = silog_loss(pred * 3.7, gt, lam=1.0)
    assert a.item() == pytest.approx(b.item(), rel=1e-4)
    # perfect prediction: sqrt(eps), finite gradient
    p = gt.clone().requires_grad_(True)
    loss = silog_loss(p, gt)
    loss.backward()
    assert loss.item() == pytest.approx(1e-3, rel=1e-3)
    assert torch.isfinite(p.grad).all()
    # zero / negative predicted depth (nothing hit) stays finite
    p = torch.tensor([0.0, 5.0], requires_grad=True)
    loss = silog_loss(p, torch.tensor([2.0, 4.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all()
    # no labelled ray: 0 with a graph
    p = torch.ones(3, requires_grad=True)
    z = silog_loss(p, torch.zeros(3))
    z.backward()
    assert z.item() == 0 and p.grad.abs().sum() == 0


def test_l1_hand_computed():
    pred = torch.tensor([1.0, 5.0, 2.0, 9.0])
    gt = torch.tensor([2.0, 3.0, 0.0, 10.0])
    w = torch.tensor([1.0, 1.0, 1.0, 2.0])
    assert l1_depth_loss(pred, gt).item() == pytest.approx((1 + 2 + 1) / 3)
    assert l1_depth_loss(pred, gt, w).item() == pytest.approx((1 + 2 + 2 * 1) / 4)
    assert L1DepthLoss(0.5).score(pred, gt).item() == pytest.approx(0.5 * 4 / 3)


def test_rendered_ce_hand_computed_with_class_weights_and_ignore():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.1], [0.9, 0.05, 0.05]])
    labels = torch.tensor([0, 2, 255])
    cw = torch.tensor([1.0, 1.0, 2.0])
    eps = 1e-6
    expected = (-math.log(0.5 + eps) - 2 * math.log(0.1 + eps)) / 3
    assert rendered_semantic_ce(probs, labels, cw).item() == pytest.approx(expected, rel=1e-6)
    # ray weights multiply the class weights (torch's weighted-mean convention)
    w = torch.tensor([0.3, 1.0, 1.0])
    expected = (-0.3 * math.log(0.5 + eps) - 2 * math.log(0.1 + eps)) / (0.3 + 2)
    assert rendered_semantic_ce(probs, labels, cw, w).item() == pytest.approx(expected, rel=1e-6)
    assert RenderedCELoss(class_weight=[1, 1, 2]).score(probs, labels, w).item() == \
        pytest.approx(expected, rel=1e-6)
    # composited probabilities below 1 (alpha < 1) are not renormalised
    assert rendered_semantic_ce(probs[1:2], torch.tensor([0])).item() == \
        pytest.approx(-math.log(0.1 + eps), rel=1e-6)
    with pytest.raises(ValueError, match='class index 3'):
        rendered_semantic_ce(probs, torch.tensor([0, 3, 255]))


def test_class_balanced_weights():
    labels = torch.tensor([0, 0, 0, 1, 255])
    w = class_balanced_weights(labels, 3, power=1.0)
    assert torch.allclose(w, torch.tensor([4 / 6, 2.0, 0.0]))
    w = class_balanced_weights(labels, 3, power=0.5)
    assert torch.allclose(w, torch.tensor([(4 / 6) ** 0.5, 2 ** 0.5, 0.0]))
    # 'batch' mode of the module uses these
    probs = torch.full((4, 3), 0.25)
    lab = torch.tensor([0, 0, 0, 1])
    a = RenderedCELoss(class_weight='batch', power=1.0).score(probs, lab)
    b = rendered_semantic_ce(probs, lab, torch.tensor([4 / 6, 2.0, 0.0]))
    assert a.item() == pytest.approx(b.item())


def test_lss_depth_loss_hand_case():
    prob = torch.zeros(1, 1, 3, 1, 2)
    prob[0, 0, :, 0, 0] = torch.tensor([0.2, 0.5, 0.3])
    prob[0, 0, :, 0, 1] = torch.tensor([0.6, 0.2, 0.2])
    target = torch.tensor([[[[1, -1]]]])
    assert lss_depth_loss(prob, target).item() == pytest.approx(-math.log(0.5 + 1e-6), rel=1e-6)
    target = torch.tensor([[[[2, 0]]]])
    expected = -(math.log(0.3 + 1e-6) + math.log(0.6 + 1e-6)) / 2
    assert lss_depth_loss(prob, target).item() == pytest.approx(expected, rel=1e-6)


def test_opacity_entropy():
    assert opacity_entropy(torch.tensor([0.5, 0.5])).item() == pytest.approx(math.log(2), rel=1e-5)
    assert opacity_entropy(torch.tensor([0.0, 1.0])).item() < 1e-4


def test_occupancy_3d_losses_hand_case():
    density = torch.tensor([0.5, 2.0, 0.1, 1.0]).reshape(1, 4, 1, 1)
    scores = torch.tensor([[1.0, 3.0], [2.0, 2.0], [1.0, 1.0], [0.0, 4.0]]).reshape(1, 4, 1, 1, 2)
    sem = torch.tensor([1, 0, 2, 255]).reshape(1, 4, 1, 1)  # free label 2; last voxel ignored
    loss_occ, loss_sem = occupancy_3d_losses(density, scores, sem, free_label=2)
    q = [1 - math.exp(-0.5), 1 - math.exp(-2.0), 1 - math.exp(-0.1)]
    expected_occ = -(math.log(q[0]) + math.log(q[1]) + math.log(1 - q[2])) / 3
    expected_sem = -(math.log(3 / 4 + 1e-6) + math.log(2 / 4 + 1e-6)) / 2
    assert loss_occ.item() == pytest.approx(expected_occ, rel=1e-5)
    assert loss_sem.item() == pytest.approx(expected_sem, rel=1e-5)
    # a mask keeps only the first voxel
    mask = torch.tensor([1, 0, 0, 0]).reshape(1, 4, 1, 1)
    loss_occ, loss_sem = occupancy_3d_losses(density, scores, sem, 2, mask)
    assert loss_occ.item() == pytest.approx(-math.log(q[0]), rel=1e-5)
    assert loss_sem.item() == pytest.approx(-math.log(0.75 + 1e-6), rel=1e-5)
    a, b = Occupancy3DLoss(occ_weight=2.0, sem_weight=0.5).score(density, scores, sem, 2,
                                                              mask)
    assert a.item() == pytest.approx(-2 * math.log(q[0]), rel=1e-5)
    assert b.item() == pytest.approx(-0.5 * math.log(0.75 + 1e-6), rel=1e-5)


def test_occupancy_3d_balanced_bce_hand_case():
    # voxels: class 1 (rho 0.5), class 0 (rho 2.0), free (rho 0.1), free (rho 0.3), ignored
    density = torch.tensor([0.5, 2.0, 0.1, 0.3, 1.0]).reshape(1, 5, 1, 1)
    scores = torch.ones(1, 5, 1, 1, 2)
    sem = torch.tensor([1, 0, 2, 2, 255]).reshape(1, 5, 1, 1)
    pos = [-math.log(1 - math.exp(-0.5)), -math.log(1 - math.exp(-2.0))]
    neg = [0.1, 0.3]  # -log(1 - q) = rho
    loss, _ = occupancy_3d_losses(density, scores, sem, 2, balance=True)
    assert loss.item() == pytest.approx(0.5 * (sum(pos) / 2 + sum(neg) / 2), rel=1e-5)
    cw = torch.tensor([1.0, 3.0])  # class 1 weighs three times class 0
    loss, _ = occupancy_3d_losses(density, scores, sem, 2, class_weight=cw, balance=True)
    assert loss.item() == pytest.approx(
        0.5 * ((3 * pos[0] + pos[1]) / 4 + sum(neg) / 2), rel=1e-5)
    # unbalanced: one mean over the four used voxels
    loss, _ = occupancy_3d_losses(density, scores, sem, 2, class_weight=cw)
    assert loss.item() == pytest.approx((sum(pos) + sum(neg)) / 4, rel=1e-5)
    a, _ = Occupancy3DLoss(class_weight=[1.0, 3.0], balance=True).score(density, scores, sem,
                                                                        2)
    assert a.item() == pytest.approx(0.5 * ((3 * pos[0] + pos[1]) / 4 + sum(neg) / 2), rel=1e-5)


def test_auxiliary_ray_weights():
    offset = torch.tensor([[0, -1, 1]])  # current camera, previous frame, next frame
    labels = torch.tensor([[[4, 11, 255], [4, 11, 255], [7, 15, 4]]])  # 4 car, 7 pedestrian
    w = auxiliary_ray_weights(offset, labels, aux_weight=0.3, dynamic_classes=(2, 3, 4, 7))
    expected = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.3, 0.3], [0.0, 0.3, 0.0]]])
    assert torch.allclose(w, expected)
    # no dynamic classes: only the down-weighting
    w = auxiliary_ray_weights(offset, labels, aux_weight=0.5)
    assert torch.allclose(w, torch.tensor([1.0, 0.5, 0.5])[None, :, None].expand(1, 3, 3))


def test_ray_position_variance_hand_case():
    # ray 0: weights 0.3 at (0, 0, 2) and 0.5 at (0, 0, 6): alpha 0.8, E[z] = (0.6 + 3) / 0.8 = 4.5,
    # E[z^2] = (1.2 + 18) / 0.8 = 24 -> variance 24 - 20.25 = 3.75
    # ray 1: one contribution 0.9 at (1, 2, 3): variance 0; ray 2: alpha 0 -> skipped
    pos = torch.tensor([[0.0, 0, 0.3 * 2 + 0.5 * 6], [0.9, 1.8, 2.7], [0, 0, 0]])
    sq = torch.tensor([0.3 * 4 + 0.5 * 36, 0.9 * 14, 0.0])
    alpha = torch.tensor([0.8, 0.9, 0.0])
    assert ray_position_variance(pos, sq, alpha).item() == pytest.approx(3.75 / 2, rel=1e-5)
    w = torch.tensor([1.0, 3.0, 1.0])
    assert ray_position_variance(pos, sq, alpha, w).item() == pytest.approx(3.75 / 4, rel=1e-5)
    got = RayDistortionLoss(0.1).score(pos, sq, alpha).item()
    assert got == pytest.approx(0.1 * 3.75 / 2, rel=1e-5)


def test_opacity_sparsity_hand_case():
    o = torch.tensor([[0.0, 0.5, 1.0, 0.25]])
    got = OpacitySparsityLoss(loss_weight=0.2).score(o)
    assert torch.isclose(got, torch.tensor(0.2 * 1.75 / 4))


def test_free_space_loss_hand_case_and_sampling():
    """Weighted mean of the densities over valid points; depths stratified in
    [near, (1 - rel_margin) d] (stratum centres in eval mode)."""
    rho = torch.tensor([[0.1, 0.3], [0.5, 0.7], [2.0, 4.0]])
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    w = torch.tensor([1.0, 3.0, 5.0])
    # (1 * 0.1 + 1 * 0.3 + 3 * 0.5) / (1 + 1 + 3)
    assert torch.isclose(free_space_loss(rho, valid, w), torch.tensor(1.9 / 5))
    assert free_space_loss(rho, torch.zeros_like(valid), w) == 0
    loss = FreeSpaceLoss(loss_weight=2.0, samples_per_ray=4, near=1.0, rel_margin=0.5)
    loss.eval()
    z, ok = loss.sample_depths(torch.tensor([10.0, 0.0, 1.5]))
    # ray 0: [1, 5] in 4 strata -> centres 1.5, 2.5, 3.5, 4.5; ray 1: no label;
    # ray 2: far 0.75 < near
    assert torch.allclose(z[0], torch.tensor([1.5, 2.5, 3.5, 4.5]))
    assert ok.tolist() == [[True] * 4, [False] * 4, [False] * 4]
    loss.train()
    g = torch.Generator().manual_seed(0)
    z, _ = loss.sample_depths(torch.full((1000, ), 10.0), generator=g)
    lo = 1.0 + torch.arange(4) * 1.0
    assert ((z >= lo) & (z <= lo + 1.0)).all()  # one draw inside each stratum
    assert torch.isclose(loss.score(rho, valid, w), torch.tensor(2.0 * 1.9 / 5))
    with pytest.raises(ValueError, match='rel_margin'):
        FreeSpaceLoss(rel_margin=1.0)


def test_free_space_far_depths_per_class():
    """Flat classes stop flat_margin above the hit (horizontal ground), other classes margin
    before it along the ray, unlabelled rays at the nearer of the two."""
    loss = FreeSpaceLoss(flat_classes=[11, 13], flat_margin=0.4, margin=0.8, ignore_index=255)
    depth = torch.tensor([15.0, 10.0, 15.0, 15.0])
    sem = torch.tensor([11, 4, 255, 13])
    dirs = torch.tensor([[1.0, 0.0, -0.1], [0.0, 1.0, 0.0], [1.0, 0.0, -0.1], [1.0, 0.0, 0.05]])
    far = loss.far_depths(depth, sem, dirs)
    norm0 = math.sqrt(1.01)
    want = [15 - 0.4 / 0.1, 10 - 0.8, min(15 - 0.4 / 0.1, 15 - 0.8 / norm0), 0.0]
    assert torch.allclose(far, torch.tensor(want))
    with pytest.raises(ValueError, match='flat_classes needs'):
        loss.far_depths(depth)


def test_surface_losses_hand_case():
    """Occupancy: weighted mean of -log(1 - exp(-rho)) over valid rays; semantics: weighted CE
    of the normalised scores (class weights multiply the ray weights)."""
    rho = torch.tensor([1.0, 2.0, 0.5, 3.0])
    scores = torch.tensor([[0.75, 0.25], [0.5, 1.5], [0.25, 0.25], [1.0, 2.0]])
    labels = torch.tensor([0, 1, 255, 0])
    valid = torch.tensor([True, True, True, False])
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    occ, sem = surface_losses(rho, scores, labels, valid, w, eps=0.0)
    l = [-math.log(1 - math.exp(-r)) for r in (1.0, 2.0, 0.5)]
    assert torch.isclose(occ, torch.tensor((l[0] + 2 * l[1] + 3 * l[2]) / 6))
    # ray 2 has no class, ray 3 is not valid: CE over rays 0 (p = 0.75) and 1 (p = 0.75)
    assert torch.isclose(sem, torch.tensor(-math.log(0.75)))
    _, sem_cw = surface_losses(rho, scores, labels, valid, w, torch.tensor([3.0, 1.0]), eps=0.0)
    want = (1 * 3 * -math.log(0.75) + 2 * 1 * -math.log(0.75)) / (3 + 2)
    assert torch.isclose(sem_cw, torch.tensor(want))
    scores2 = torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.25, 0.25], [1.0, 2.0]])
    _, sem2 = surface_losses(rho, scores2, labels, valid, w, eps=0.0)
    assert torch.isclose(sem2, torch.tensor((-math.log(0.5) - 2 * math.log(0.25)) / 3))
    none = surface_losses(rho, scores, labels, torch.zeros_like(valid), w)
    assert none[0] == 0 and none[1] == 0
    module = SurfaceLoss(occ_weight=2.0, sem_weight=0.5, class_weight=None, eps=0.0)
    out = module.score(rho, scores, labels, valid, w)
    assert torch.isclose(out['loss_surface_occ'], 2 * occ)
    assert torch.isclose(out['loss_surface_sem'], 0.5 * sem)
    no_sem = SurfaceLoss(sem_weight=0.0).score(rho, scores, labels, valid, w)
    assert 'loss_surface_sem' not in no_sem
    with pytest.raises(ValueError, match='behind'):
        SurfaceLoss(behind=-1.0)


def test_surface_losses_hinge():
    """occ_target t: weighted mean of max(t - rho, 0) over valid rays."""
    rho = torch.tensor([0.25, 2.0, 0.5, 0.0])
    valid = torch.tensor([True, True, True, False])
    w = torch.tensor([1.0, 2.0, 1.0, 4.0])
    occ, _ = surface_losses(rho, None, None, valid, w, occ_target=1.0)
    assert torch.isclose(occ, torch.tensor((0.75 + 0.0 + 0.5) / 4))
    module = SurfaceLoss(occ_weight=3.0, sem_weight=0.0, occ_target=1.0)
    assert torch.isclose(module.score(rho, None, None, valid, w)['loss_surface_occ'], 3 * occ)


def test_surface_losses_hinge_class_weighted():
    """occ_class_weight: ray weights times the class weight of the ray's label (1 without one)."""
    rho = torch.tensor([0.25, 2.0, 0.5, 0.0])
    labels = torch.tensor([0, 1, 255, 0])
    valid = torch.tensor([True, True, True, False])
    w = torch.tensor([1.0, 2.0, 1.0, 4.0])
    cw = torch.tensor([3.0, 0.5])
    occ, _ = surface_losses(rho, None, labels, valid, w, cw, occ_target=1.0,
                            occ_class_weight=True)
    # weights 1*3, 2*0.5, 1*1 (no label); ray 3 not valid
    assert torch.isclose(occ, torch.tensor((3 * 0.75 + 1 * 0.0 + 1 * 0.5) / 5))
    with pytest.raises(ValueError, match='occ_class_weight'):
        surface_losses(rho, None, labels, valid, w, None, occ_target=1.0, occ_class_weight=True)
    with pytest.raises(ValueError, match='occ_class_weight'):
        SurfaceLoss(class_weight=None, occ_class_weight=True)
    # the module with 'batch' weights (power 0.5): valid labels 0, 0, 1 -> class 0 weight
    # (3 / (2 * 2)) ** 0.5, class 1 weight (3 / (2 * 1)) ** 0.5
    labels2 = torch.tensor([0, 1, 0, 0])
    scores = torch.ones(4, 2)
    m = SurfaceLoss(occ_weight=1.0, sem_weight=1.0, occ_target=1.0, occ_class_weight=True)
    c0, c1 = math.sqrt(0.75), math.sqrt(1.5)
    want = (1 * c0 * 0.75 + 2 * c1 * 0.0 + 1 * c0 * 0.5) / (1 * c0 + 2 * c1 + 1 * c0)
    got = m.score(rho, scores, labels2, valid, w)['loss_surface_occ']
    assert torch.isclose(got, torch.tensor(want, dtype=got.dtype))
    # without class scores there are no batch weights: a clear error, not a silent fallback
    with pytest.raises(ValueError, match='occ_class_weight'):
        m.score(rho, None, labels2, valid, w)


def test_free_space_surface_samples():
    """surface_samples extra points stratified in [max(near, far - surface_range), far]."""
    loss = FreeSpaceLoss(samples_per_ray=2, near=1.0, rel_margin=0.5, surface_samples=2,
                         surface_range=2.0)
    loss.eval()
    z, ok = loss.sample_depths(torch.tensor([10.0, 4.0]))
    # ray 0: far 5 -> strata [1, 3], [3, 5] and [3, 4], [4, 5]; ray 1: far 2, start max(1, 0)
    assert torch.allclose(z, torch.tensor([[2.0, 4.0, 3.5, 4.5], [1.25, 1.75, 1.25, 1.75]]))
    assert ok.all()
    with pytest.raises(ValueError, match='surface_samples'):
        FreeSpaceLoss(surface_samples=-1)


def test_image_semantic_ce_hand_computed_bilinear_case():
    # one camera, a 1 x 2 cell map of logits a, b upsampled to 1 x 4 labels: with
    # align_corners=False the 4 pixel centres sit at -0.25, 0.25, 0.75, 1.25 cells, so the
    # logits are a, 0.75 a + 0.25 b, 0.25 a + 0.75 b, b (the ends clamp)
    a, b = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([-1.0, 1.0, 0.0])
    logits = torch.stack([a, b], dim=-1).reshape(1, 1, 3, 1, 2)
    labels = torch.tensor([0, 255, 1, 2]).reshape(1, 1, 1, 4)
    rows = [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b]
    nll = [-torch.log_softmax(r, 0)[c] for r, c in zip(rows, [0, 255, 1, 2]) if c != 255]
    assert torch.allclose(image_semantic_ce(logits, labels), torch.stack(nll).mean())
    # class weights: torch's weighted mean over the labelled pixels
    cw = torch.tensor([1.0, 3.0, 0.5])
    ref = (nll[0] * 1.0 + nll[1] * 3.0 + nll[2] * 0.5) / 4.5
    assert torch.allclose(image_semantic_ce(logits, labels, cw), ref)
    loss = ImageSemanticLoss(class_weight=[1.0, 3.0, 0.5], loss_weight=2.0)
    assert torch.allclose(loss.score(logits, labels), 2 * ref)
    # 'batch': one pixel of each class -> equal weights -> the plain mean
    assert torch.allclose(ImageSemanticLoss().score(logits, labels), torch.stack(nll).mean())


def test_image_semantic_ce_no_labels_and_bad_labels():
    logits = torch.randn(1, 2, 3, 2, 2, requires_grad=True)
    none = torch.full((1, 2, 4, 4), 255)
    loss = image_semantic_ce(logits, none)
    assert float(loss.detach()) == 0.0
    loss.backward()  # stays in the graph
    with pytest.raises(ValueError, match='class index 3'):
        image_semantic_ce(logits, torch.full((1, 2, 4, 4), 3))


@pytest.mark.parametrize('weighted', [False, True])
def test_voxel_semantic_ce_matches_the_normalise_then_rendered_ce_form(weighted):
    """voxel_semantic_ce forms only the label's probability; the former form normalised every
    scored voxel's scores and called rendered_semantic_ce: same loss and gradient."""
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(2, 5, 4, 3, 6, generator=g, dtype=torch.float64)
    scores[0, 1, 2, 0] = 0  # a voxel with no score at all (the eps clamp)
    sem = torch.randint(0, 6, (2, 5, 4, 3), generator=g)
    sem[1, 0, 0] = 255  # ignored
    mask = torch.rand(2, 5, 4, 3, generator=g) < 0.7
    cw = torch.rand(6, generator=g, dtype=torch.float64) + 0.1 if weighted else None

    def former(sc):
        use = (sem != 255) & mask
        s = sc[use]
        p = s / s.sum(-1, keepdim=True).clamp_min(1e-6)
        return rendered_semantic_ce(p, sem[use], class_weight=cw)

    a = scores.clone().requires_grad_(True)
    b = scores.clone().requires_grad_(True)
    got, ref = voxel_semantic_ce(a, sem, mask, cw), former(b)
    got.backward()
    ref.backward()
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    assert b.grad.abs().max() > 0
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-14)


def test_voxel_semantic_ce_hand_case():
    """Two scored voxels (a third outside the mask, a fourth ignored): CE of the normalised
    scores, class-weighted as torch's weighted CE."""
    scores = torch.tensor([[1.0, 3.0, 0.0], [2.0, 2.0, 4.0], [5.0, 0.0, 0.0],
                           [0.0, 1.0, 0.0]]).reshape(1, 4, 1, 1, 3)
    sem = torch.tensor([1, 2, 0, 255]).reshape(1, 4, 1, 1)
    mask = torch.tensor([True, True, False, True]).reshape(1, 4, 1, 1)
    nll = [-math.log(0.75 + 1e-6), -math.log(0.5 + 1e-6)]
    got = voxel_semantic_ce(scores, sem, mask)
    assert got.item() == pytest.approx(sum(nll) / 2, rel=1e-6)
    cw = torch.tensor([1.0, 2.0, 3.0])
    got = voxel_semantic_ce(scores, sem, mask, class_weight=cw)
    assert got.item() == pytest.approx((2 * nll[0] + 3 * nll[1]) / 5, rel=1e-6)
    module = SemanticVoxelCELoss(class_weight=[1.0, 2.0, 3.0], loss_weight=0.5)
    assert module.score(scores, sem, mask).item() == pytest.approx(0.5 * got.item(), rel=1e-6)
    with pytest.raises(ValueError, match='class index 7'):
        voxel_semantic_ce(scores, torch.tensor([7, 0, 0, 0]).reshape(1, 4, 1, 1))
