"""Occ3D mIoU: hand-computed confusion matrices, real frames, errors."""
import numpy as np
import pytest

from splattingocc.evaluation.functional.occ_miou import (confusion_matrix, confusion_matrix_pair,
                                                         geometry_iou_from_confusion,
                                                         miou_from_confusion,
                                                         occ_scores_from_confusion, per_class_iou)

# 4 classes: 0, 1, 2 occupied, 3 = free (a small stand-in for Occ3D's 18)
GT = np.array([0, 0, 1, 1, 3, 3, 255, 2], dtype=np.uint8).reshape(2, 2, 2)
PRED = np.array([0, 1, 1, 1, 3, 0, 2, 3], dtype=np.uint8).reshape(2, 2, 2)
MASK = np.array([1, 1, 1, 1, 1, 1, 1, 0], dtype=np.uint8).reshape(2, 2, 2)


def test_hand_computed_confusion_with_mask_ignore_free_and_absent_class():
    hist = confusion_matrix(PRED, GT, MASK, num_classes=4, ignore_label=255)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = 1  # rows = gt, cols = pred
    expected[0, 1] = 1
    expected[1, 1] = 2
    expected[3, 3] = 1
    expected[3, 0] = 1  # free predicted as class 0: a false positive of class 0
    # the 255 voxel and the masked-out voxel are not counted
    np.testing.assert_array_equal(hist, expected)
    iou = per_class_iou(hist)
    np.testing.assert_allclose(iou[[0, 1, 3]], [1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(iou[2])  # class 2 appears in neither gt nor prediction (inside the mask)
    assert miou_from_confusion(hist, free_label=3) == pytest.approx(0.5)  # mean of 1/3, 2/3
    # occupied: tp 4, gt occupied 4, predicted occupied 5
    assert geometry_iou_from_confusion(hist, free_label=3) == pytest.approx(4 / 5)
    scores = occ_scores_from_confusion(hist, ['a', 'b', 'c', 'free'], free_label=3)
    assert set(scores['per_class_iou']) == {'a', 'b', 'c'}
    assert scores['miou'] == pytest.approx(0.5)


def test_no_mask_counts_every_voxel_except_ignore():
    hist = confusion_matrix(PRED, GT, None, num_classes=4, ignore_label=255)
    assert hist.sum() == 7 and hist[2, 3] == 1
    iou = per_class_iou(hist)
    assert iou[2] == 0.0  # now class 2 is in the gt and missed
    assert miou_from_confusion(hist, 3) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert geometry_iou_from_confusion(hist, 3) == pytest.approx(4 / 6)


def test_pair_equals_two_separate_matrices(realdata):
    hm, hn = confusion_matrix_pair(PRED, GT, MASK, num_classes=4)
    np.testing.assert_array_equal(hm, confusion_matrix(PRED, GT, MASK, 4))
    np.testing.assert_array_equal(hn, confusion_matrix(PRED, GT, None, 4))
    d = np.load(realdata / 'occ3d' / 'occupancy-vis-demo.labels.npz')
    gt, cam = d['semantics'], d['mask_camera']
    pred = np.roll(gt, 3, axis=2)
    hm, hn = confusion_matrix_pair(pred, gt.astype(np.int64), cam)
    np.testing.assert_array_equal(hm, confusion_matrix(pred, gt, cam))
    np.testing.assert_array_equal(hn, confusion_matrix(pred, gt, None))
    bad = gt.copy()
    bad[0, 0, 0] = 40
    with pytest.raises(ValueError, match=r'ground truth for p: class index out of range \[40\]'):
        confusion_matrix_pair(pred, bad, cam, name='p')


def test_dataset_accumulation_is_not_a_mean_of_frame_scores():
    rng = np.random.default_rng(0)
    frames = []
    for n in (50, 500):
        gt = rng.integers(0, 4, n).astype(np.uint8)
        pred = np.where(rng.random(n) < 0.6, gt, rng.integers(0, 4, n)).astype(np.uint8)
        frames.append((pred, gt))
    total = sum(confusion_matrix(p, g, None, 4) for p, g in frames)
    whole = confusion_matrix(np.concatenate([p for p, _ in frames]),
                             np.concatenate([g for _, g in frames]), None, 4)
    np.testing.assert_array_equal(total, whole)
    per_frame = np.mean([miou_from_confusion(confusion_matrix(p, g, None, 4), 3)
                         for p, g in frames])
    assert abs(miou_from_confusion(total, 3) - per_frame) > 1e-3


def _independent_miou(pred, gt, mask, n_cls=18, free=17):
    """Per-class counting with boolean masks (no confusion matrix)."""
    valid = mask.astype(bool) & (gt != 255)
    ious = []
    for c in range(n_cls):
        g, p = (gt == c) & valid, (pred == c) & valid
        union = (g | p).sum()
        ious.append((g & p).sum() / union if union else np.nan)
    ious = np.array(ious)
    occ_g, occ_p = (gt != free) & valid, (pred != free) & valid
    geo = (occ_g & occ_p).sum() / (occ_g | occ_p).sum()
    return ious, np.nanmean(ious[:free]), geo


@pytest.mark.parametrize('fname', ['29796060110c4163b07f06eff4af0753.labels.npz',
                                   'occupancy-vis-demo.labels.npz'])
def test_real_frame_against_itself_and_perturbed(realdata, fname):
    d = np.load(realdata / 'occ3d' / fname)
    gt, cam = d['semantics'], d['mask_camera']
    hist = confusion_matrix(gt, gt, cam)
    assert hist.sum() == cam.astype(bool).sum()
    assert miou_from_confusion(hist, 17) == pytest.approx(1.0)
    assert geometry_iou_from_confusion(hist, 17) == pytest.approx(1.0)
    present = np.unique(gt[cam.astype(bool)])
    iou = per_class_iou(hist)
    assert np.all(np.isnan(np.delete(iou, present)))  # absent classes are NaN, not 0

    rng = np.random.default_rng(1)
    pred = gt.copy()
    flip = rng.random(gt.shape) < 0.1
    pred[flip] = rng.integers(0, 18, flip.sum())
    pred = np.roll(pred, 1, axis=0)  # also shift by one voxel
    for mask in (cam, np.ones_like(cam)):
        hist = confusion_matrix(pred, gt, mask)
        ious, miou, geo = _independent_miou(pred, gt, mask)
        np.testing.assert_allclose(per_class_iou(hist), ious, equal_nan=True)
        assert miou_from_confusion(hist, 17) == pytest.approx(miou)
        assert geometry_iou_from_confusion(hist, 17) == pytest.approx(geo)
        assert 0.05 < miou < 0.95  # a non-trivial score


def test_errors_name_the_prediction():
    gt = np.zeros((2, 2, 2), dtype=np.uint8)
    bad = np.zeros((2, 2, 2), dtype=np.uint8)
    bad[0, 0, 0] = 18
    with pytest.raises(ValueError, match=r'pred_x\.npz.*out of range \[18\]'):
        confusion_matrix(bad, gt, None, 18, name='pred_x.npz')
    with pytest.raises(ValueError, match='shape'):
        confusion_matrix(np.zeros((2, 2, 3), np.uint8), gt, None, 18, name='p')
    with pytest.raises(ValueError, match='integers'):
        confusion_matrix(gt.astype(np.float32), gt, None, 18, name='p')
    with pytest.raises(ValueError, match='ground truth.*out of range \\[20\\]'):
        confusion_matrix(gt, np.full((2, 2, 2), 20, np.uint8), None, 18, name='p')
    neg = np.zeros((2, 2, 2), dtype=np.int64)
    neg[1, 1, 1] = -1
    with pytest.raises(ValueError, match='out of range \\[-1\\]'):
        confusion_matrix(neg, gt, None, 18, name='p')


def test_empty_mask_gives_zero_matrix_and_nan_miou():
    gt = np.zeros((2, 2, 2), dtype=np.uint8)
    hist = confusion_matrix(gt, gt, np.zeros_like(gt), 18)
    assert hist.shape == (18, 18) and hist.sum() == 0
    assert np.isnan(miou_from_confusion(hist, 17))
