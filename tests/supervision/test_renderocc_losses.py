"""RenderOcc's loss terms: the pure functions on hand cases (the distortion loss in O(N) against
its O(N^2) definition), the label rule, and the ray loss terms on a hand-made RayBatch."""
import math

import pytest
import torch
import torch.nn.functional as F

from splattingocc.registry import MODELS
from splattingocc.structures import Cameras, RenderOutput
from splattingocc.supervision.rays import RayBatch
from splattingocc.supervision.renderocc_losses import (
    RENDEROCC_CLASS_FREQUENCIES, binary_entropy, distortion_per_ray, renderocc_class_weights,
    renderocc_ray_mask, renderocc_semantic_ce, renderocc_silog)

DT = torch.float64


def test_class_weights_are_one_over_log_frequency():
    cw = renderocc_class_weights()
    assert len(cw) == 17 and len(RENDEROCC_CLASS_FREQUENCIES) == 18
    assert cw[0] == pytest.approx(1 / math.log(1163161.001))  # others
    assert cw[11] == pytest.approx(1 / math.log(214411435.001))  # driveable surface
    assert cw[2] == max(cw) and cw[11] == min(cw)  # rarest and commonest of the 17


def test_label_rule_depth_in_0_52():
    depth = torch.tensor([0.0, 10.0, 52.0, 52.5, 3.0])
    weight = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    assert renderocc_ray_mask(depth, weight).tolist() == [False, True, True, False, False]


def test_semantic_ce_on_composited_logits_hand_case():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [9.0, 9.0, 9.0]], dtype=DT)
    labels = torch.tensor([0, 2, 255])
    cw = torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
    ce1 = -math.log(1 / (2 * math.exp(0.5) + 1))
    want = (1 * ce0 + 3 * ce1) / (1 + 3)  # torch's weighted mean, label 255 ignored
    assert renderocc_semantic_ce(logits, labels, cw).item() == pytest.approx(want)
    assert renderocc_semantic_ce(logits, labels, cw).item() == pytest.approx(
        F.cross_entropy(logits, labels, weight=cw, ignore_index=255).item())
    # ray weights multiply the class weights
    w = torch.tensor([0.5, 1.0, 1.0], dtype=DT)
    assert renderocc_semantic_ce(logits, labels, cw, w).item() == pytest.approx(
        (0.5 * ce0 + 3 * ce1) / 3.5)


def test_silog_hand_case():
    gt = torch.tensor([2.0, 5.0, 20.0, 0.0], dtype=DT)
    # the same log ratio c everywhere: sqrt(c^2 - 0.85 c^2) = sqrt(0.15) |c|
    pred = gt * math.exp(0.3)
    assert renderocc_silog(pred, gt).item() == pytest.approx(math.sqrt(0.15) * 0.3)
    # two rays, log ratios a and b: E[d^2] - 0.85 E[d]^2
    pred = torch.tensor([2.0 * math.exp(0.2), 5.0 * math.exp(-0.4), 1.0, 1.0], dtype=DT)
    gt2 = torch.tensor([2.0, 5.0, 0.0, -1.0], dtype=DT)
    want = math.sqrt((0.04 + 0.16) / 2 - 0.85 * ((0.2 - 0.4) / 2) ** 2)
    assert renderocc_silog(pred, gt2).item() == pytest.approx(want)
    # eps is added to the prediction, nothing is clamped
    assert renderocc_silog(torch.zeros(1, dtype=DT), torch.ones(1, dtype=DT), eps=1e-3).item() \
        == pytest.approx(math.sqrt(0.15) * -math.log(1e-3))


def test_entropy_of_last_transmittance():
    p = torch.tensor([0.5, 0.0, 1.0, 0.25], dtype=DT)
    e = binary_entropy(p)
    q = 1e-6
    edge = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    assert e.tolist() == pytest.approx([math.log(2), edge, edge,
                                        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))])


def distortion_quadratic(w, m, interval):
    """Mip-NeRF 360's definition, O(N^2) per ray."""
    pairs = (w[:, :, None] * w[:, None, :] * (m[:, :, None] - m[:, None, :]).abs()).sum((1, 2))
    return pairs + (w.square() * interval).sum(-1) / 3


def test_distortion_hand_case_and_against_the_quadratic_definition():
    w = torch.tensor([[0.5, 0.5]], dtype=DT)
    m = torch.tensor([[0.0, 1.0]], dtype=DT)
    # pairs: 2 * 0.25 * 1 = 0.5; own: (0.25 + 0.25) * 0.1 / 3
    assert distortion_per_ray(w, m, 0.1).item() == pytest.approx(0.5 + 0.5 * 0.1 / 3)
    g = torch.Generator().manual_seed(0)
    w = torch.rand(5, 40, generator=g, dtype=DT)
    m = torch.sort(torch.rand(5, 40, generator=g, dtype=DT), dim=-1).values
    w[:, 30:] = 0  # padding: zero weights, anything as midpoints
    m_pad = m.clone()
    m_pad[:, 30:] = -7.0
    for interval in (0.01, torch.rand(5, 40, generator=g, dtype=DT)):
        assert torch.allclose(distortion_per_ray(w, m_pad, interval),
                              distortion_quadratic(w, m, interval))
    # gradients as the definition's
    wg = w.clone().requires_grad_()
    mg = m.clone().requires_grad_()
    distortion_per_ray(wg, mg, 0.01).sum().backward()
    wr = w.clone().requires_grad_()
    mr = m.clone().requires_grad_()
    distortion_quadratic(wr, mr, 0.01).sum().backward()
    assert torch.allclose(wg.grad, wr.grad) and torch.allclose(mg.grad[:, :30], mr.grad[:, :30])


def ray_batch(depth, semantics, weight, render):
    """A RayBatch of B samples x 1 camera x P rays with the given labels and render."""
    B, P = depth.shape
    cams = Cameras(torch.eye(4).expand(B, 1, 4, 4), torch.eye(3).expand(B, 1, 3, 3), 4, 4)
    d, s = depth.view(B, 1, P), semantics.view(B, 1, P)
    return RayBatch(field=None, cameras=cams, pixels=torch.zeros(B, 1, P, 2), depth=d,
                    semantics=s, all_depth=d, all_semantics=s, weight=weight.reshape(-1),
                    render=render, class_probs=render.features.reshape(B * P, -1),
                    positions=None, position_sq=None, gt_depth=torch.zeros(B, 1, 2, 2),
                    frame_offset=torch.zeros(B, 1, dtype=torch.long), aux_weight=0.3)


def test_loss_terms_per_sample_with_the_label_rule():
    depth = torch.tensor([[10.0, 60.0, 5.0], [20.0, 0.0, 30.0]])
    sem = torch.tensor([[1, 2, 0], [2, 1, 1]])
    weight = torch.ones(2, 3)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 1, 3, 3, generator=g)
    wts = torch.rand(2, 1, 3, 4, generator=g)
    wts[..., 3] = 0
    s = torch.sort(torch.rand(2, 1, 3, 4, generator=g), dim=-1).values
    n = torch.tensor([[[3.0, 2.0, 3.0]], [[3.0, 1.0, 2.0]]])
    last = torch.tensor([[[0.5, 0.9, 1e-4]], [[0.2, 0.3, 0.99]]])
    render = RenderOutput(depth=torch.tensor([[[8.0, 7.0, 6.0]], [[15.0, 1.0, 25.0]]]),
                          features=feats, alpha=torch.ones(2, 1, 3),
                          extras=dict(last_transmittance=last, weights=wts, s=s, samples=n,
                                      expected_z=torch.tensor([[[9.0, 1.0, 4.0]],
                                                               [[18.0, 1.0, 33.0]]])))
    rays = ray_batch(depth, sem, weight, render)
    keep = [[0, 2], [0, 2]]  # 60 m is beyond 52 m, 0 has no label
    cw = torch.tensor([1.0, 2.0, 3.0])
    out = MODELS.build(dict(type='RenderOccSemanticLoss', class_weight=[1.0, 2.0, 3.0]))(rays)
    want = sum(F.cross_entropy(feats[b, 0, keep[b]], sem[b, keep[b]], weight=cw)
               for b in range(2)) / 2
    assert out['loss_render_semantic'].item() == pytest.approx(want.item(), rel=1e-6)
    out = MODELS.build(dict(type='RenderOccDepthLoss', radius=39.0))(rays)
    eps = 39e-7 + 1e-7
    want = sum(renderocc_silog(render.depth[b, 0, keep[b]] + eps, depth[b, keep[b]])
               for b in range(2)) / 2
    assert out['loss_render_depth'].item() == pytest.approx(want.item(), rel=1e-6)
    # the variant on the camera depth sum_i w_i z_i
    out = MODELS.build(dict(type='RenderOccDepthLoss', source='expected_z'))(rays)
    z = render.extras['expected_z']
    want = sum(renderocc_silog(z[b, 0, keep[b]] + eps, depth[b, keep[b]]) for b in range(2)) / 2
    assert out['loss_render_depth'].item() == pytest.approx(want.item(), rel=1e-6)
    out = MODELS.build(dict(type='RenderOccEntropyLoss'))(rays)
    want = 0.01 * sum(binary_entropy(last[b, 0, keep[b]]).mean() for b in range(2)) / 2
    assert out['loss_sdf_entropy'].item() == pytest.approx(want.item(), rel=1e-6)
    out = MODELS.build(dict(type='RenderOccDistortionLoss'))(rays)
    # interval 1 / (composited samples of the counted rays of the sample): 1/6 and 1/5
    want = 0.01 * sum(distortion_quadratic(wts[b, 0, keep[b]], s[b, 0, keep[b]],
                                           1 / float(n[b, 0, keep[b]].sum())).mean()
                      for b in range(2)) / 2
    assert out['loss_sdf_distortion'].item() == pytest.approx(want.item(), rel=1e-6)


def test_terms_without_a_counted_ray_are_zero_and_need_the_renderocc_render():
    render = RenderOutput(depth=torch.ones(1, 1, 2), features=torch.zeros(1, 1, 2, 3),
                          alpha=torch.ones(1, 1, 2))
    rays = ray_batch(torch.tensor([[0.0, 70.0]]), torch.tensor([[1, 1]]), torch.ones(1, 2),
                     render)
    assert MODELS.build(dict(type='RenderOccSemanticLoss'))(rays)['loss_render_semantic'] == 0
    assert MODELS.build(dict(type='RenderOccDepthLoss'))(rays)['loss_render_depth'] == 0
    with pytest.raises(ValueError, match='RenderOccRenderer'):
        MODELS.build(dict(type='RenderOccEntropyLoss'))(rays)
