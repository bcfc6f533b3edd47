"""What a model is trained against: a list of supervision modules, built from ``model.supervision``.

* ``RaySupervision`` (``rays.py``): renders the field into the label cameras at sampled pixels
  (``pixels.py``) and scores the render with ray loss terms (``ray_losses.py``);
* ``LSSDepthLoss``, ``ImageSemanticLoss`` (``lift.py``): the lift's depth distribution and class
  logits against the 2D labels;
* ``OpacitySparsityLoss``, ``OpacityEntropyLoss`` (``priors.py``): priors on the elements;
* ``VolumeSupervision`` (``volume.py``): the field on a voxel grid against the Occ3D labels;
* ``RenderConsistencySupervision`` (``render_consistency.py``): the predicted and the
  ground-truth occupancy rendered into the same views and compared (GaussRender).

The loss maths are pure functions in ``functional.py``. Importing this package registers the
modules in ``splattingocc.registry.MODELS``.
"""
from .base import Supervision, class_weight_setting, merge_terms, require_keys
from .lift import ImageSemanticLoss, LSSDepthLoss
from .pixels import (PixelSample, PixelSampler, open_sky_mask, sample_mask_pixels,
                     sample_pixels)
from .priors import OpacityEntropyLoss, OpacitySparsityLoss
from .ray_losses import (FreeSpaceLoss, L1DepthLoss, RayDistortionLoss, RayLoss, RenderedCELoss,
                         SILogLoss, SurfaceLoss)
from .rays import RayBatch, RaySupervision
from .render_consistency import RenderConsistencySupervision
from .renderocc_losses import (RenderOccDepthLoss, RenderOccDistortionLoss, RenderOccEntropyLoss,
                               RenderOccSemanticLoss)
from .volume import (Occupancy3DLoss, SemanticVoxelCELoss, VolumeBatch, VolumeSupervision,
                     downsample_labels, downsample_mask)

__all__ = [
    'Supervision', 'class_weight_setting', 'merge_terms', 'require_keys', 'ImageSemanticLoss',
    'LSSDepthLoss', 'PixelSample', 'PixelSampler', 'open_sky_mask', 'sample_mask_pixels',
    'sample_pixels', 'OpacityEntropyLoss', 'OpacitySparsityLoss', 'FreeSpaceLoss', 'L1DepthLoss',
    'RayDistortionLoss', 'RayLoss', 'RenderedCELoss', 'SILogLoss', 'SurfaceLoss', 'RayBatch',
    'RaySupervision', 'Occupancy3DLoss', 'SemanticVoxelCELoss', 'VolumeBatch', 'VolumeSupervision',
    'downsample_labels', 'downsample_mask', 'RenderOccSemanticLoss', 'RenderOccDepthLoss',
    'RenderOccEntropyLoss', 'RenderOccDistortionLoss', 'RenderConsistencySupervision'
]
