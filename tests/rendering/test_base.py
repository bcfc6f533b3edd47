"""BaseSplatRenderer.prepare: pruning of faint Gaussians is exact; the opacity power."""
import pytest
import torch

from small_model import random_batch
from splattingocc.rendering import TorchSplatRenderer
from splattingocc.structures import Cameras, Gaussians


def test_render_pruning_is_exact():
    """Leaving out Gaussians with opacity < 1/255 changes neither the render nor the gradients."""
    g = torch.Generator().manual_seed(1)
    B, N = 2, 300
    means = (torch.rand(B, N, 3, generator=g) - 0.5) * torch.tensor([14.0, 14.0, 3.0])
    opac = torch.rand(B, N, generator=g)
    opac[:, ::2] = opac[:, ::2] / 300  # half of them below 1/255
    leaves = [means, torch.randn(B, N, 4, generator=g),
              0.2 + torch.rand(B, N, 3, generator=g), opac,
              torch.randn(B, N, 17, generator=g).softmax(-1)]
    batch = random_batch(B=B)
    cams = Cameras(batch['render_viewmats'], batch['render_Ks'], 32, 16)
    outs, grads = [], []
    for renderer in (TorchSplatRenderer(min_opacity=0.0), TorchSplatRenderer()):
        ps = [t.clone().requires_grad_(True) for t in leaves]
        scene = Gaussians(*ps)
        if renderer.min_opacity > 0:
            assert renderer.prepare(scene).num_gaussians < N
        out = renderer(scene, cams)
        # the Gaussians per sample the render used: the largest count at or above the threshold
        expected = N if renderer.min_opacity == 0 else \
            int((opac >= renderer.min_opacity).sum(1).max())
        assert out.primitives == expected and (renderer.min_opacity == 0 or expected < N)
        (out.depth.square().sum() + (out.features * torch.arange(17.0)).sum()).backward()
        outs.append(out)
        grads.append([p.grad for p in ps])
    assert outs[0].alpha.max() > 0.5  # something was rendered
    assert torch.allclose(outs[0].depth, outs[1].depth, atol=1e-5)
    assert torch.allclose(outs[0].features, outs[1].features, atol=1e-5)
    for a, b in zip(grads[0], grads[1]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_render_opacity_power():
    """The render uses opacity ** power; the Gaussians themselves are untouched; power > 0."""
    g = torch.Generator().manual_seed(2)
    B, N = 1, 50
    opac = torch.rand(B, N, generator=g) * 0.9 + 0.05
    scene = Gaussians(torch.randn(B, N, 3, generator=g), torch.randn(B, N, 4, generator=g),
                      0.2 + torch.rand(B, N, 3, generator=g), opac,
                      torch.randn(B, N, 17, generator=g))
    rendered = TorchSplatRenderer(opacity_power=2.0).prepare(scene)
    assert torch.allclose(rendered.opacities, opac.square())
    assert torch.equal(scene.opacities, opac)
    assert torch.equal(TorchSplatRenderer().prepare(scene).opacities, opac)
    with pytest.raises(ValueError, match='opacity_power'):
        TorchSplatRenderer(opacity_power=0.0)
    with pytest.raises(ValueError, match='min_opacity'):
        TorchSplatRenderer(min_opacity=1.0)
