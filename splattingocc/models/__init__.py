"""The SplattingOcc network: backbone, neck, view transform, volume encoder, heads, detector."""
from .backbone import ResNet
from .detector import SplattingOcc
from .gaussian_head import GaussianHead
from .neck import MergeNeck
from .view_transform import LSSViewTransform
from .volume_encoder import BEVVolumeEncoder, VolumeEncoder3D

__all__ = ['ResNet', 'MergeNeck', 'LSSViewTransform', 'VolumeEncoder3D', 'BEVVolumeEncoder',
           'GaussianHead', 'SplattingOcc']
