"""Differentiable renderers: Gaussian splatting (torch / gsplat backends) and volume rendering.

Importing this package registers the renderers in ``splattingocc.registry.MODELS``.
"""
from .base import BaseSplatRenderer
from .projection import project_gaussians, quat_scale_to_covar
from .torch_renderer import TorchSplatRenderer, rasterize_torch
from .gsplat_renderer import GsplatRenderer, SplatRenderer, gsplat_available
from .volume_renderer import VolumeRenderer
from .renderocc_renderer import RawDensityGrid, RenderOccRenderer

__all__ = ['BaseSplatRenderer', 'project_gaussians', 'quat_scale_to_covar',
           'TorchSplatRenderer', 'rasterize_torch', 'GsplatRenderer', 'SplatRenderer',
           'gsplat_available', 'VolumeRenderer', 'RawDensityGrid', 'RenderOccRenderer']
