import pytest
import torch

from splattingocc.models.backbone import ResNet
from splattingocc.models.neck import MergeNeck


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('depth,expected', [
    # torchvision's parameter counts (11,689,512 and 25,557,032) minus the fc layer
    (18, 11_689_512 - 513_000), (50, 25_557_032 - 2_049_000)])
def test_parameter_count_matches_torchvision(depth, expected):
    assert _n_params(ResNet(depth=depth)) == expected


def test_torchvision_key_names():
    keys18 = set(ResNet(depth=18).state_dict())
    for k in ['conv1.weight', 'bn1.running_mean', 'layer1.0.conv1.weight', 'layer1.1.bn2.bias',
              'layer2.0.downsample.0.weight', 'layer2.0.downsample.1.running_var',
              'layer4.1.bn2.num_batches_tracked']:
        assert k in keys18, k
    assert 'layer1.0.downsample.0.weight' not in keys18
    keys50 = set(ResNet(depth=50).state_dict())
    for k in ['layer1.0.downsample.0.weight', 'layer3.5.conv3.weight', 'layer4.2.bn3.bias']:
        assert k in keys50, k


def test_output_strides_and_channels():
    net = ResNet(depth='tiny', widths=(8, 16, 24, 32), stem_channels=8, out_indices=(1, 2, 3))
    outs = net(torch.randn(2, 3, 64, 96))
    assert [o.shape for o in outs] == [(2, 16, 8, 12), (2, 24, 4, 6), (2, 32, 2, 3)]
    assert net.out_channels == [16, 24, 32]
    neck = MergeNeck([24, 32], 12)
    assert neck(outs[1:]).shape == (2, 12, 4, 6)


def test_pretrained_roundtrip_and_errors(tmp_path):
    src = ResNet(depth='tiny', widths=(8, 16, 24, 32), stem_channels=8)
    state = src.state_dict()
    state['fc.weight'] = torch.zeros(10, 32)  # a classifier in the file is ignored
    path = tmp_path / 'r.pth'
    torch.save(state, path)
    dst = ResNet(depth='tiny', widths=(8, 16, 24, 32), stem_channels=8, pretrained=str(path))
    x = torch.randn(1, 3, 32, 32)
    src.eval(), dst.eval()
    for a, b in zip(src(x), dst(x)):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        ResNet(depth='tiny', pretrained=str(tmp_path / 'missing.pth'))
    with pytest.raises(ValueError, match='does not match'):
        ResNet(depth='tiny', widths=(8, 16, 24, 48), stem_channels=8, pretrained=str(path))


def test_frozen_stages_and_norm_eval():
    net = ResNet(depth='tiny', widths=(8, 16, 24, 32), stem_channels=8, frozen_stages=1,
                 norm_eval=True)
    net.train()
    assert not net.conv1.weight.requires_grad and not net.layer1[0].conv1.weight.requires_grad
    assert net.layer2[0].conv1.weight.requires_grad
    assert not net.bn1.training and not net.layer3[0].bn1.training
    mean_before = net.layer3[0].bn1.running_mean.clone()
    net(torch.randn(2, 3, 64, 64)).__len__()
    assert torch.equal(net.layer3[0].bn1.running_mean, mean_before)
    with pytest.raises(KeyError, match='depth'):
        ResNet(depth=19)
