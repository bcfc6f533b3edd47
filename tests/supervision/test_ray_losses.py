"""The field terms of the ray supervision (free space, surface points, open sky) against
per-pixel, per-point references."""
import math

import pytest
import torch

from small_model import PC, PRED_GRID, gaussian_head, random_batch
from splattingocc.geometry import pixel_centres, quat_to_rotmat, rigid_inverse
from splattingocc.registry import MODELS
from splattingocc.structures import Cameras
from splattingocc.supervision import FreeSpaceLoss, SurfaceLoss, open_sky_mask, sample_mask_pixels


def _scene_and_labels(seed=0):
    """A Gaussian field whose point queries cover the whole grid (window 17: exact sums), and
    one frame of 4 x 8 label maps."""
    torch.manual_seed(seed)
    head = MODELS.build(gaussian_head(query_window=17)).eval()
    batch = random_batch(F=1, H=8, W=16, ds=2)
    with torch.no_grad():
        field = head(torch.randn(1, 8, *PRED_GRID))
    cams = Cameras(viewmats=batch['render_viewmats'], Ks=batch['render_Ks'], width=8, height=4)
    C, h, w = batch['gt_depth'].shape[1:]
    pixels = pixel_centres(h, w).expand(1, C, h * w, 2)
    return field, cams, pixels, batch


def _kernels(g):
    """p -> the N Gaussians' terms o_i exp(-0.5 m_i(p)^2) at world point p [3] (sample 0)."""
    R = quat_to_rotmat(g.quats[0])
    prec = torch.linalg.inv(R @ torch.diag_embed(g.scales[0].square()) @ R.mT)  # [N, 3, 3]

    def at(p):
        d = p - g.means[0]
        return g.opacities[0] * torch.exp(-0.5 * torch.einsum('ni,nij,nj->n', d, prec, d))
    return at


def _pixels(batch):
    """Every label pixel of sample 0, one by one: (flat ray index, class, depth, world direction
    R K^-1 [u, v, 1] (camera z = 1), camera centre)."""
    depth, sem = batch['gt_depth'], batch['gt_semantics']
    C, h, w = depth.shape[1:]
    for c in range(C):
        Kinv = torch.linalg.inv(batch['render_Ks'][0, c])
        cam2world = rigid_inverse(batch['render_viewmats'][0, c])
        for i in range(h):
            for j in range(w):
                ray = cam2world[:3, :3] @ (Kinv @ torch.tensor([j + 0.5, i + 0.5, 1.0]))
                yield ((c * h + i) * w + j, int(sem[0, c, i, j]), float(depth[0, c, i, j]), ray,
                       cam2world[:3, 3])


def _in_box(p):
    return all(PC[a] <= p[a] < PC[a + 3] for a in range(3))


@pytest.mark.parametrize('flat', [False, True])
def test_free_space_term_matches_a_per_point_reference(flat):
    """Weighted mean over the in-box points before each labelled depth of the density of all
    Gaussians, points at the stratum centres in eval mode, back-projected pixel by pixel here;
    the stop depth relative (flat=False) or per class (flat=True: ground classes 11..14 stop
    0.4 m above the hit, others 0.8 m before it)."""
    field, cams, pixels, batch = _scene_and_labels()
    extra = dict(flat_classes=[11, 12, 13, 14], flat_margin=0.4, margin=0.8) if flat else {}
    loss = FreeSpaceLoss(samples_per_ray=3, near=0.5, rel_margin=0.2, **extra).eval()
    depth, sem = batch['gt_depth'], batch['gt_semantics']  # [1, C, 4, 8]
    weight = torch.rand(depth.numel())
    with torch.no_grad():
        got = loss.along_rays(field, cams, pixels, depth, weight, sem)
    kernels = _kernels(field.gaussians)
    num = den = 0.0
    for r, lab, d, ray, origin in _pixels(batch):
        far = 0.8 * d
        if flat and 11 <= lab <= 14:
            far = d - 0.4 / float(-ray[2]) if ray[2] < 0 else 0.0
        elif flat:
            far = d - 0.8 / float(ray.norm())
        if d <= 0 or far <= 0.5:
            continue
        for k in range(3):
            p = origin + ray * (0.5 + (far - 0.5) * (k + 0.5) / 3)
            if _in_box(p):
                num += float(weight[r] * kernels(p).sum())
                den += float(weight[r])
    assert den > 0
    assert torch.allclose(got, torch.tensor(num / den), rtol=1e-4)


@pytest.mark.parametrize('behind', [0.0, 0.3])
def test_surface_term_matches_a_per_pixel_reference(behind):
    """At each labelled pixel back-projected with its depth (+ behind metres along the ray) and
    inside the box, the density and class scores of all Gaussians, computed pixel by pixel here;
    BCE against occupied and CE of the normalised scores, both weighted by the ray weights."""
    field, cams, pixels, batch = _scene_and_labels()
    loss = SurfaceLoss(behind=behind, class_weight=None).eval()
    depth, sem = batch['gt_depth'], batch['gt_semantics']
    weight = torch.rand(depth.numel())
    with torch.no_grad():
        got = loss.at_hits(field, cams, pixels, depth, sem, weight)
    kernels = _kernels(field.gaussians)
    probs = field.gaussians.features[0].softmax(-1)
    occ_num = sem_num = den = sem_den = 0.0
    for r, lab, d, ray, origin in _pixels(batch):
        p = origin + ray * d + behind * ray / ray.norm()
        if d <= 0 or not _in_box(p):
            continue
        dens = kernels(p)  # [N]
        occ_num += float(weight[r]) * -math.log(1 - math.exp(-float(dens.sum())) + 1e-6)
        den += float(weight[r])
        if lab != 255:
            s = (dens[:, None] * probs).sum(0)
            sem_num += float(weight[r]) * -math.log(float(s[lab] / s.sum()) + 1e-6)
            sem_den += float(weight[r])
    assert den > 0 and sem_den > 0
    assert torch.allclose(got['loss_surface_occ'], torch.tensor(occ_num / den), rtol=1e-4)
    assert torch.allclose(got['loss_surface_sem'], torch.tensor(sem_num / sem_den), rtol=1e-4)


def test_sky_free_space_term():
    """loss_free_sky = the free-space term on the drawn sky pixels with far = sky_depth (the same
    random draw replayed), adjacent-frame cameras weighted aux_weight."""
    field, cams, _, batch = _scene_and_labels()
    loss = FreeSpaceLoss(sky_rays=5, sky_depth=10.0, samples_per_ray=16).eval()
    depth = batch['gt_depth'].clone()
    depth[:, :, :2] = 0  # the two top rows unlabelled: sky where the columns have labels
    offset = torch.zeros(1, depth.shape[1], dtype=torch.long)
    offset[0, -1] = 1
    with torch.no_grad():
        torch.manual_seed(5)
        got = loss.sky(field, cams, depth, offset, 0.3)
        torch.manual_seed(5)
        pixels, ok = sample_mask_pixels(open_sky_mask(depth), 5)
        assert ok.any()
        w = (ok * torch.where(offset == 0, 1.0, 0.3)[:, :, None]).reshape(-1)
        far = torch.full(ok.shape, 10.0)
        want = loss.along_rays(field, cams, pixels, far, w, far=far)
    assert got > 0 and torch.allclose(got, want)
    with pytest.raises(ValueError, match='sky_rays'):
        FreeSpaceLoss(sky_rays=-1)
