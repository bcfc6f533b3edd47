"""Volume supervision: block-majority labels of a coarser grid, and the loss against the field
put on that grid."""
import pytest
import torch

from small_model import FREE, NUM_CLASSES, OCC_GRID, PC, PRED_GRID, random_voxel_gaussians
from splattingocc.fields import VoxelGaussianField
from splattingocc.registry import MODELS
from splattingocc.structures import NetworkOutputs
from splattingocc.supervision import Occupancy3DLoss, downsample_labels, downsample_mask


def test_downsample_labels_hand_case():
    sem = torch.full((1, 4, 2, 2), FREE)
    sem[0, 0, 0, 0] = 4  # block 0 (x 0..1): one car, seven free -> free
    sem[0, 2:, :, 0] = 11  # block 1 (x 2..3): four road, four free -> tie -> road (lower index)
    sem[0, 0:2, :, :] = torch.where(sem[0, 0:2] == FREE, 255, sem[0, 0:2])  # block 0: ignore free
    out = downsample_labels(sem, (2, 2, 2), NUM_CLASSES)
    assert out.shape == (1, 2, 1, 1)
    assert out[0, 0, 0, 0] == 4 and out[0, 1, 0, 0] == 11
    all_ignored = torch.full((1, 2, 2, 2), 255)
    assert downsample_labels(all_ignored, (2, 2, 2), NUM_CLASSES).item() == 255
    mask = torch.zeros(1, 4, 2, 2, dtype=torch.uint8)
    mask[0, 3, 1, 1] = 1
    assert downsample_mask(mask, (2, 2, 2)).flatten().tolist() == [False, True]
    with pytest.raises(ValueError, match='divisible'):
        downsample_labels(sem, (3, 2, 2), NUM_CLASSES)


@pytest.mark.parametrize('coarse', [False, True])
def test_volume_supervision_is_the_loss_of_the_field_on_the_grid(coarse):
    """The terms equal Occupancy3DLoss on ``field.to_grid`` against the (block-majority) labels,
    inside the (downsampled) mask_camera."""
    gauss = random_voxel_gaussians(K=NUM_CLASSES - 1)
    field = VoxelGaussianField(gauss, PC, PRED_GRID)
    g = torch.Generator().manual_seed(3)
    sem = torch.randint(0, NUM_CLASSES, (1, *OCC_GRID), generator=g).to(torch.uint8)
    mask = torch.rand(1, *OCC_GRID, generator=g) < 0.6
    sup = MODELS.build(dict(type='VolumeSupervision', pc_range=PC, num_classes=NUM_CLASSES,
                            free_label=FREE, grid_size=PRED_GRID if coarse else None,
                            mask_camera=True,
                            losses=[dict(type='Occupancy3DLoss', class_weight='batch')]))
    got = sup(NetworkOutputs(field=field), dict(voxel_semantics=sem, mask_camera=mask))
    grid = PRED_GRID if coarse else OCC_GRID
    labels, m = sem, mask
    if coarse:
        factors = [n // c for n, c in zip(OCC_GRID, PRED_GRID)]
        labels, m = downsample_labels(sem, factors, NUM_CLASSES), downsample_mask(mask, factors)
    density, scores = field.to_grid(PC, grid)
    occ, cls = Occupancy3DLoss(class_weight='batch').score(density, scores, labels, FREE, m)
    assert set(got) == {'loss_occ3d', 'loss_sem3d'}
    assert torch.equal(got['loss_occ3d'], occ) and torch.equal(got['loss_sem3d'], cls)
    with pytest.raises(KeyError, match='mask_camera'):
        sup(NetworkOutputs(field=field), dict(voxel_semantics=sem))
