"""Pixel sampling: determinism, labelled pixels only, class-weighted frequencies, short cameras."""
import math

import numpy as np
import pytest
import torch

from splattingocc.registry import MODELS
from splattingocc.supervision.pixels import (PixelSampler, class_weights_from_histogram,
                                             label_histogram, open_sky_mask, sample_mask_pixels,
                                             sample_pixels)

IGN = 255


def random_labels(B=2, C=3, h=20, w=30, num_classes=5, unlabelled=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, num_classes, (B, C, h, w), generator=g)
    lab[torch.rand(B, C, h, w, generator=g) < unlabelled] = IGN
    depth = torch.rand(B, C, h, w, generator=g) * 50 + 1
    depth[lab == IGN] = 0
    return lab, depth


@pytest.mark.parametrize('mode', ['uniform', 'class_weighted'])
def test_deterministic_under_seed_and_seed_dependent(mode):
    lab, depth = random_labels()
    kw = dict(mode=mode, num_rays=60, num_classes=5)
    a = sample_pixels(lab, depth, generator=torch.Generator().manual_seed(11), **kw)
    b = sample_pixels(lab, depth, generator=torch.Generator().manual_seed(11), **kw)
    c = sample_pixels(lab, depth, generator=torch.Generator().manual_seed(12), **kw)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.semantics, b.semantics)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.depth, b.depth)
    assert not torch.equal(a.index, c.index)


@pytest.mark.parametrize('mode', ['uniform', 'class_weighted'])
def test_only_labelled_pixels_with_their_labels(mode):
    lab, depth = random_labels()
    B, C, h, w = lab.shape
    s = sample_pixels(lab, depth, mode=mode, num_rays=60, num_classes=5,
                      generator=torch.Generator().manual_seed(0))
    assert s.pixels.shape == (B, C, 20, 2) and s.mask.shape == (B, C, 20)
    assert s.mask.all()  # every camera has far more than 20 labelled pixels
    # pixel centres: integer + 0.5, inside the image
    frac = s.pixels - s.pixels.floor()
    assert torch.all(frac == 0.5)
    cols, rows = s.pixels[..., 0].long(), s.pixels[..., 1].long()
    assert cols.min() >= 0 and cols.max() < w and rows.min() >= 0 and rows.max() < h
    for b in range(B):
        for c in range(C):
            assert torch.equal(s.semantics[b, c], lab[b, c, rows[b, c], cols[b, c]])
            assert torch.equal(s.depth[b, c], depth[b, c, rows[b, c], cols[b, c]])
            assert (s.semantics[b, c] != IGN).all()
            # without replacement: no pixel twice
            assert s.index[b, c].unique().numel() == s.index.shape[-1]
            assert torch.equal(s.index[b, c], rows[b, c] * w + cols[b, c])


def test_dense_mode_returns_every_pixel_centre():
    lab, depth = random_labels(B=1, C=2, h=3, w=4)
    s = sample_pixels(lab, depth, mode='dense')
    assert s.pixels.shape == (1, 2, 12, 2)
    assert s.pixels[0, 0, :5].tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [3.5, 0.5],
                                           [0.5, 1.5]]
    assert torch.equal(s.mask, lab.flatten(2) != IGN)
    assert torch.equal(s.semantics, lab.flatten(2))
    assert torch.equal(s.depth, depth.flatten(2))


def _stripes(counts, C=1):
    """A label map [1, C, 1, sum(counts)] holding counts[k] pixels of class k (IGN: unlabelled)."""
    row = torch.cat([torch.full((n,), k) for k, n in counts.items()])
    return row.view(1, 1, 1, -1).expand(1, C, 1, row.numel()).clone()


@pytest.mark.parametrize('rule,kw', [('renderocc', dict(beta=0.005)),
                                     ('renderocc', dict(beta=0.05)),
                                     ('inverse_frequency', dict(power=0.5)),
                                     ('inverse_frequency', dict(power=1.0)),
                                     ('fixed', dict(class_weights=[1.0, 3.0, 0.0, 0.5]))])
def test_class_weighted_frequencies_follow_the_rule(rule, kw):
    # class counts 2000, 300, 50, 5 (+ 1000 unlabelled); draws with replacement are independent,
    # each class with probability w_c n_c / sum_k w_k n_k
    counts = {0: 2000, 1: 300, 2: 50, 3: 5, IGN: 1000}
    lab = _stripes(counts)
    n = np.array([2000, 300, 50, 5], dtype=np.float64)
    if rule == 'renderocc':
        wc = np.exp(kw['beta'] * (n.max() / n - 1))
    elif rule == 'inverse_frequency':
        wc = (n.sum() / n) ** kw['power']
    else:
        wc = np.array(kw['class_weights'])
    p = wc * n / (wc * n).sum()
    N = 100_000
    s = sample_pixels(lab, mode='class_weighted', num_rays=N, num_classes=4, weight_rule=rule,
                      replacement=True, generator=torch.Generator().manual_seed(5), **kw)
    assert s.mask.all()
    freq = np.bincount(s.semantics.flatten().numpy(), minlength=4)[:4] / N
    assert (s.semantics != IGN).all()
    sigma = np.sqrt(p * (1 - p) / N)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12), (freq, p, sigma)
    if rule == 'fixed':
        assert freq[2] == 0  # class weight 0: never drawn


def test_without_replacement_is_sequential_weighted_sampling():
    # 20,000 cameras of 3 labelled pixels with class weights 1, 2, 3 (fixed); drawing 2 without
    # replacement picks the pair {i, j} with probability p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j)
    C = 20_000
    lab = torch.tensor([0, 1, 2]).view(1, 1, 1, 3).expand(1, C, 1, 3).clone()
    wts = np.array([1.0, 2.0, 3.0])
    p = wts / wts.sum()
    s = sample_pixels(lab, mode='class_weighted', num_rays=2 * C, num_classes=3,
                      weight_rule='fixed', class_weights=wts.tolist(),
                      generator=torch.Generator().manual_seed(9))
    assert s.mask.all()
    pairs = s.index[0].sort(dim=1).values.numpy()  # [C, 2]
    assert np.all(pairs[:, 0] != pairs[:, 1])
    for (i, j) in [(0, 1), (0, 2), (1, 2)]:
        expect = p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
        got = np.mean((pairs[:, 0] == i) & (pairs[:, 1] == j))
        assert abs(got - expect) <= 5 * math.sqrt(expect * (1 - expect) / C), (i, j, got, expect)
    # the first key (largest) is a single weighted draw: P(first = k) = p_k
    first = s.index[0, :, 0].numpy()
    for k in range(3):
        got = np.mean(first == k)
        assert abs(got - p[k]) <= 5 * math.sqrt(p[k] * (1 - p[k]) / C)


def test_short_cameras_are_padded_with_a_mask():
    lab = torch.full((1, 3, 4, 5), IGN)
    lab[0, 0] = 1  # 20 labelled pixels
    lab[0, 1, 2, [0, 3, 4]] = 2  # 3 labelled pixels
    # camera 2: none labelled
    depth = torch.where(lab != IGN, 7.0, 0.0)
    s = sample_pixels(lab, depth, mode='uniform', num_rays=30, generator=torch.Generator())
    assert s.mask.shape == (1, 3, 10)
    assert s.mask[0, 0].all()
    assert s.mask[0, 1].sum() == 3 and s.mask[0, 2].sum() == 0
    # the short camera returns all of its labelled pixels
    got = sorted(s.index[0, 1][s.mask[0, 1]].tolist())
    assert got == [2 * 5 + 0, 2 * 5 + 3, 2 * 5 + 4]
    assert (s.semantics[0, 1][s.mask[0, 1]] == 2).all()
    assert (s.semantics[~s.mask] == IGN).all() and (s.depth[~s.mask] == 0).all()
    assert (s.depth[s.mask] == 7.0).all()
    # with replacement every slot of a camera with a labelled pixel is filled
    r = sample_pixels(lab, depth, mode='uniform', num_rays=30, replacement=True,
                      generator=torch.Generator().manual_seed(1))
    assert r.mask[0, 0].all() and r.mask[0, 1].all() and not r.mask[0, 2].any()
    assert set(r.index[0, 1].tolist()) <= {10, 13, 14}


def test_require_depth_excludes_pixels_without_depth():
    lab, depth = random_labels(B=1, C=1, h=10, w=10, unlabelled=0.0)
    depth[0, 0, :, :5] = 0  # no depth on the left half
    s = sample_pixels(lab, depth, mode='uniform', num_rays=200, require_depth=True,
                      generator=torch.Generator())
    assert s.mask.sum() == 50 and (s.depth[s.mask] > 0).all()


def test_class_weights_hand_computed():
    counts = torch.tensor([10, 0, 1000, 90])
    w = class_weights_from_histogram(counts, 'renderocc', beta=0.01)
    expect = [math.exp(0.01 * (1000 / 10 - 1)), 0.0, 1.0, math.exp(0.01 * (1000 / 90 - 1))]
    assert w.tolist() == pytest.approx(expect)
    w = class_weights_from_histogram(counts, 'inverse_frequency', power=0.5)
    assert w.tolist() == pytest.approx([math.sqrt(110), 0.0, math.sqrt(1.1), math.sqrt(1100 / 90)])
    assert label_histogram(torch.tensor([[0, 2, 255], [2, 2, 3]]), 4).tolist() == [1, 0, 3, 1]


def test_histogram_scope_sample_vs_batch():
    # sample 0 has class 0 rare, sample 1 has it common: per-sample weights differ from batch ones
    lab = torch.zeros(2, 1, 1, 110, dtype=torch.long)
    lab[0, 0, 0, :100] = 1  # sample 0: 10 of class 0, 100 of class 1
    lab[1, 0, 0, :10] = 1  # sample 1: 100 of class 0, 10 of class 1
    kw = dict(mode='class_weighted', num_rays=20_000, num_classes=2, weight_rule='fixed',
              replacement=True)
    # 'fixed' ignores the histogram: both scopes equal
    a = sample_pixels(lab, class_weights=[1.0, 1.0], histogram='sample',
                      generator=torch.Generator().manual_seed(0), **kw)
    b = sample_pixels(lab, class_weights=[1.0, 1.0], histogram='batch',
                      generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a.index, b.index)
    kw.update(weight_rule='inverse_frequency', power=1.0)
    s = sample_pixels(lab, histogram='sample', generator=torch.Generator().manual_seed(0), **kw)
    # per sample, inverse-frequency weights with power 1 make both classes equally likely
    for bi in range(2):
        frac0 = (s.semantics[bi] == 0).float().mean().item()
        assert abs(frac0 - 0.5) < 5 * math.sqrt(0.25 / 20_000)
    t = sample_pixels(lab, histogram='batch', generator=torch.Generator().manual_seed(0), **kw)
    # over the batch both classes have 110 pixels: weights equal, frequencies follow the counts
    frac0 = (t.semantics[0] == 0).float().mean().item()
    assert abs(frac0 - 10 / 110) < 5 * math.sqrt((10 / 110) * (100 / 110) / 20_000)


def test_errors_and_registry():
    lab, _ = random_labels(num_classes=5)
    with pytest.raises(ValueError, match='class 4'):
        sample_pixels(lab, num_classes=4, generator=torch.Generator())
    with pytest.raises(ValueError, match='num_classes'):
        sample_pixels(lab, mode='class_weighted')
    with pytest.raises(ValueError, match='mode'):
        sample_pixels(lab, mode='everything')
    with pytest.raises(ValueError, match='num_rays'):
        sample_pixels(lab, mode='uniform', num_rays=2)
    with pytest.raises(ValueError, match='class_weights'):
        PixelSampler(num_classes=5, weight_rule='fixed', class_weights=[1.0])
    sampler = MODELS.build(dict(type='PixelSampler', mode='class_weighted', num_rays=60,
                                num_classes=5))
    assert isinstance(sampler, PixelSampler)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    a = sampler(lab, generator=g1)
    b = sample_pixels(lab, mode='class_weighted', num_rays=60, num_classes=5, generator=g2)
    assert torch.equal(a.index, b.index) and a.depth is None


def test_open_sky_mask_hand_case():
    """Rows above the highest label of the column (window 1) or of the column and its
    neighbours (window 3), minus a margin; a window with an unlabelled column gives no sky."""
    d = torch.zeros(1, 1, 6, 7)
    for row, col in ((3, 0), (4, 1), (2, 3), (5, 4), (4, 5), (4, 6)):  # column 2: no label
        d[0, 0, row, col] = 5.0
    tops1 = [3, 4, -1, 2, 5, 4, 4]  # highest labelled row per column (-1: none)
    tops3 = [3, -1, -1, -1, 2, 4, 4]  # min over the column and its neighbours
    for window, margin, tops in ((1, 1, tops1), (3, 0, tops3)):
        want = torch.zeros(6, 7, dtype=torch.bool)
        for col, top in enumerate(tops):
            want[:max(top - margin, 0), col] = top >= 0
        got = open_sky_mask(d, column_window=window, margin_rows=margin)[0, 0]
        assert torch.equal(got, want), (window, got.int())


def test_sample_mask_pixels_draws_inside_the_mask():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 3, 5, 6, generator=g) < 0.3
    pixels, ok = sample_mask_pixels(mask, 4, generator=g)
    assert pixels.shape == (2, 3, 4, 2)
    for b in range(2):
        for c in range(3):
            n = int(mask[b, c].sum())
            assert int(ok[b, c].sum()) == min(n, 4)
            picked = {(int(v), int(u)) for (u, v), k in zip(pixels[b, c] - 0.5, ok[b, c]) if k}
            assert len(picked) == min(n, 4)  # no pixel twice
            assert all(bool(mask[b, c, r, col]) for r, col in picked)
