"""Per-class diagnostics (splattingocc/evaluation/diagnostics.py) on hand-computed cases."""
import numpy as np
import pytest
import torch

from splattingocc.evaluation.diagnostics import (ClassDiagnostics, cells_to_grid,
                                                 histogram_median, lift_statistics,
                                                 nearest_label_per_cell, val_pipeline_with_labels)

NAMES = [f'c{i}' for i in range(17)] + ['free']


def test_histogram_median_hand_cases():
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert histogram_median([0, 3, 0, 2], edges) == 1.5  # rank 3 of 5 lies in bin 1
    assert histogram_median([2, 2, 0, 0], edges) == 0.5  # even count: the lower median
    assert histogram_median([0, 0, 0, 1], edges) == 3.5
    assert histogram_median([0, 0, 0, 0], edges) is None


def test_voxel_statistics_hand_case():
    d = ClassDiagnostics(NAMES, free_label=17)
    gt = np.array([0, 17, 4, 4, 4]).reshape(5, 1, 1)
    pred = np.array([0, 4, 17, 0, 4]).reshape(5, 1, 1)
    dens = np.array([0.203, 0.903, 0.053, 0.512, 3.0]).reshape(5, 1, 1)
    mask = np.array([1, 1, 1, 1, 0]).reshape(5, 1, 1)  # the last voxel is not counted
    d.add_voxels(gt, pred, dens, mask)
    s = d.summary()
    assert s['c0']['gt_voxels'] == 1 and s['c0']['occupied'] == 100.0 and s['c0']['right'] == 100.0
    assert s['free']['gt_voxels'] == 1 and s['free']['occupied'] == 100.0  # predicted c4
    assert s['free']['right'] == 0.0
    # c4: two voxels, one predicted free, one predicted c0
    assert s['c4']['gt_voxels'] == 2 and s['c4']['occupied'] == 50.0 and s['c4']['right'] == 0.0
    assert s['c4']['median_density'] == pytest.approx(0.055)  # lower median 0.053, 0.01 bins
    assert s['c0']['predicted_voxels'] == 2 and s['c4']['predicted_voxels'] == 1
    assert s['free']['predicted_voxels'] == 1
    assert s['c3']['gt_voxels'] == 0 and s['c3']['occupied'] is None
    assert s['c3']['median_density'] is None
    # a second frame adds up
    d.add_voxels(gt, pred, dens, None)
    assert d.summary()['c4']['gt_voxels'] == 5
    assert d.summary()['c4']['right'] == pytest.approx(100 / 5)


def test_lift_reach_hand_case_and_cells_to_grid():
    d = ClassDiagnostics(NAMES, free_label=17)
    gt = np.array([4, 4, 4, 11, 17]).reshape(5, 1, 1)
    reached = np.array([1, 0, 1, 0, 1]).reshape(5, 1, 1)
    mask = np.array([1, 1, 1, 1, 0]).reshape(5, 1, 1)
    d.add_voxels(gt, gt, np.zeros(gt.shape), mask, reached)
    s = d.summary()
    assert s['c4']['lift_reach'] == pytest.approx(200 / 3) and s['c11']['lift_reach'] == 0.0
    assert s['free']['lift_reach'] is None  # its one voxel is outside the mask
    d.add_voxels(gt, gt, np.zeros(gt.shape), None)  # reach not known: not counted
    assert d.summary()['c4']['lift_reach'] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match='reached'):
        d.add_voxels(gt, gt, np.zeros(gt.shape), None, reached[:4])
    cells = torch.tensor([[[[True, False]], [[False, True]]]])  # [1, 2, 1, 2]
    grid = cells_to_grid(cells, (4, 2, 4))
    assert grid.shape == (1, 4, 2, 4)
    assert grid[0, :2, :, :2].all() and not grid[0, :2, :, 2:].any()
    assert grid[0, 2:, :, 2:].all() and not grid[0, 2:, :, :2].any()
    with pytest.raises(ValueError, match='divide'):
        cells_to_grid(cells, (3, 2, 4))


def test_pixel_statistics_hand_case():
    d = ClassDiagnostics(NAMES, free_label=17)
    d.add_pixels(labels=np.array([4, 4, 11, 0]), depth=np.array([10.0, 10.0, 5.0, 3.0]),
                 pred=np.array([4, -1, 11, 4]), pred_depth=np.array([12.0, 10.0, 5.23, 3.0]))
    s = d.summary()
    assert s['c4']['pixels'] == 2 and s['c4']['pixels_right'] == 50.0
    assert s['c4']['pixels_none'] == 50.0
    assert s['c4']['median_depth_error'] == pytest.approx(0.025)  # errors 0 and 2: lower median
    assert s['c11']['pixels_right'] == 100.0
    assert s['c11']['median_depth_error'] == pytest.approx(0.225)  # 0.23 m in the 0.05 m bins
    assert s['c0']['pixels_right'] == 0.0 and s['c0']['pixels_none'] == 0.0
    assert len(d.table()) == len(NAMES) + 1


def test_lift_statistics_hand_case():
    d = ClassDiagnostics(NAMES, free_label=17)
    d.add_lift(labels=np.array([4, 4, 11]), near_mass=np.array([0.2, 0.6, 0.9]),
               abs_error=np.array([3.0, 1.0, 0.12]))
    s = d.summary()
    assert s['c4']['cells'] == 2 and s['c4']['lift_near'] == pytest.approx(40.0)
    assert s['c4']['lift_depth_error'] == pytest.approx(1.025)  # lower median 1.0, 0.05 m bins
    assert s['c11']['lift_near'] == pytest.approx(90.0)
    assert s['c0']['cells'] == 0 and s['c0']['lift_near'] is None
    with pytest.raises(ValueError, match='add_lift'):
        d.add_lift(np.array([4]), np.array([0.1, 0.2]), np.array([1.0]))


def test_nearest_label_per_cell_and_lift_statistics_hand_case():
    # one camera, a 2 x 4 label map, 1 x 2 feature cells (each cell = 2 x 2 label pixels)
    depth = torch.tensor([[[[5.0, 0.0, 9.0, 3.0],
                            [7.0, 0.0, 3.0, 0.0]]]])
    sem = torch.tensor([[[[4, 0, 15, 11],
                          [11, 0, 16, 0]]]])
    target, cls = nearest_label_per_cell(depth, sem, (1, 2))
    assert target.tolist() == [[[[5.0, 3.0]]]]
    assert cls.tolist() == [[[[4, 16]]]]  # tie at 3.0 m between 11 and 16: the larger class

    class VT:  # bins of 1 m from 1 m: centres 1.5 .. 9.5
        depths = torch.arange(9, dtype=torch.float32) + 1.5

        @staticmethod
        def depth_bin_index(d):
            k = torch.floor(d - 1.0).long()
            return torch.where((d > 0) & (k >= 0) & (k < 9), k, torch.full_like(k, -1))

    prob = torch.zeros(1, 1, 9, 1, 2)
    prob[0, 0, 4, 0, 0] = 0.5  # cell 0: label 5.0 m -> bin 4; mass 0.5 there, 0.5 at bin 8
    prob[0, 0, 8, 0, 0] = 0.5
    prob[0, 0, 0, 0, 1] = 1.0  # cell 1: label 3.0 m -> bin 2; all mass at bin 0 (two bins off)
    c, near, err = lift_statistics(VT, prob, depth, sem)
    assert c.tolist() == [4, 16]
    assert near.tolist() == pytest.approx([0.5, 0.0])
    assert err.tolist() == pytest.approx([abs(0.5 * 5.5 + 0.5 * 9.5 - 5.0), 1.5])


def test_bad_input_is_a_clear_error():
    d = ClassDiagnostics(NAMES, free_label=17)
    with pytest.raises(ValueError, match='shapes differ'):
        d.add_voxels(np.zeros((2, 2, 1)), np.zeros((2, 2, 2)), np.zeros((2, 2, 1)))
    with pytest.raises(ValueError, match='outside'):
        d.add_voxels(np.full((1, 1, 1), 18), np.zeros((1, 1, 1)), np.zeros((1, 1, 1)))
    with pytest.raises(ValueError, match='one shape'):
        d.add_pixels(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match='free_label'):
        ClassDiagnostics(NAMES, free_label=18)


def test_pipeline_gets_the_2d_labels():
    pipe = [dict(type='LoadMultiViewImages', camera_names=['A', 'B']),
            dict(type='LoadOcc3DLabels'), dict(type='PackOccInputs')]
    out = val_pipeline_with_labels(pipe)
    assert [t['type'] for t in out] == ['LoadMultiViewImages', 'LoadLabels2D',
                                       'LoadOcc3DLabels', 'PackOccInputs']
    assert out[1]['camera_names'] == ['A', 'B'] and out[1]['load_adjacent'] is False
    assert len(pipe) == 3  # the config's list is left as it was
    from splattingocc.errors import UserError
    with pytest.raises(UserError, match='LoadOcc3DLabels'):
        val_pipeline_with_labels(pipe[:1])
