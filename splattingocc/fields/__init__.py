"""Scene fields: what a head predicts, behind one interface (``base.SceneField``).

* ``GaussianField`` / ``VoxelGaussianField``: 3D Gaussians with class logits (any means / one
  per voxel of a grid);
* ``SparseGaussianField``: free-mean Gaussians with exact point queries (``gaussian_fields_at``:
  a hash grid of the Gaussians' cutoff boxes);
* ``DensityGridField``: a NeRF-style density grid with class logits;
* ``RenderOccField``: RenderOcc's raw density grid with class logits (the faithful NeRF arm).
"""
from .base import SceneField, opacity_of_density
from .density_grid import DensityGridField, density_grid_at, density_grid_to_voxels
from .gaussians import GaussianField, VoxelGaussianField
from .renderocc import RenderOccField, opacity_threshold
from .sparse_gaussians import SparseGaussianField, gaussian_fields_at

__all__ = ['SceneField', 'GaussianField', 'VoxelGaussianField', 'DensityGridField',
           'density_grid_at', 'density_grid_to_voxels', 'opacity_of_density', 'RenderOccField',
           'opacity_threshold', 'SparseGaussianField', 'gaussian_fields_at']
