"""Geometry shared by the package: label ranges by back-projection, depth bins, pixel centres."""
import torch

from small_model import ring_cameras
from splattingocc.geometry import depth_bin_index, labels_in_range, pixel_centres, rigid_inverse


def test_labels_in_range_hand_case():
    """Camera = world frame, f = 2, principal point (1, 1), 2 x 2 labels: pixel (row i, col j)
    at depth d back-projects to ((j + 0.5 - 1) d / 2, (i + 0.5 - 1) d / 2, d)."""
    depth = torch.tensor([[4.0, 0.0], [8.0, 2.0]]).reshape(1, 1, 2, 2)
    K = torch.tensor([[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]]).reshape(1, 1, 3, 3)
    V = torch.eye(4).reshape(1, 1, 4, 4)
    # points: (0,0): (-1, -1, 4); (0,1): no depth; (1,0): (-2, 2, 8); (1,1): (0.5, 0.5, 2)
    box = [-1.5, -1.5, 0.0, 1.5, 1.5, 5.0]
    got = labels_in_range(depth, V, K, box)
    assert got.tolist() == [[[[True, False], [False, True]]]]
    got = labels_in_range(depth, V, K, [-3.0, -3.0, 0.0, 3.0, 3.0, 5.0])  # (1,0): z = 8 > 5
    assert got.tolist() == [[[[True, False], [False, True]]]]
    got = labels_in_range(depth, V, K, [-3.0, -3.0, 0.0, 3.0, 3.0, 9.0])
    assert got.tolist() == [[[[True, False], [True, True]]]]


def test_labels_in_range_matches_a_per_pixel_loop():
    """Rotated, translated cameras: the same answer as back-projecting pixel by pixel."""
    g = torch.Generator().manual_seed(3)
    cam2ego = ring_cameras(3)
    cam2ego[:, :3, 3] += torch.tensor([1.0, -2.0, 0.3])
    V = rigid_inverse(cam2ego)[None]
    K = torch.tensor([[5.0, 0, 4], [0, 5.0, 3], [0, 0, 1]]).expand(1, 3, 3, 3)
    depth = 1 + 12 * torch.rand(1, 3, 6, 8, generator=g)
    depth[torch.rand(depth.shape, generator=g) < 0.2] = 0
    box = [-6.0, -5.0, -1.0, 7.0, 6.0, 2.5]
    got = labels_in_range(depth, V, K, box)
    want = torch.zeros_like(got)
    for c in range(3):
        for i in range(6):
            for j in range(8):
                d = float(depth[0, c, i, j])
                if d <= 0:
                    continue
                p_cam = torch.tensor([(j + 0.5 - 4) / 5 * d, (i + 0.5 - 3) / 5 * d, d, 1.0])
                p = (cam2ego[c].double() @ p_cam.double())[:3]
                want[0, c, i, j] = bool(all(box[a] <= p[a] < box[a + 3] for a in range(3)))
    assert got.any() and not got.all()
    assert torch.equal(got, want)



def test_depth_bin_index_hand_case():
    bins = (1.0, 9.0, 2.0)  # 4 bins: [1, 3), [3, 5), [5, 7), [7, 9)
    d = torch.tensor([0.0, 0.5, 1.0, 2.9, 3.0, 8.99, 9.0])
    assert depth_bin_index(d, bins).tolist() == [-1, -1, 0, 0, 1, 3, -1]


def test_pixel_centres_row_major():
    c = pixel_centres(2, 3)
    assert c.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5]]
    assert pixel_centres(2, 3, dtype=torch.float64).dtype == torch.float64
