"""The SplattingOcc network: backbone, neck, view transform, volume encoder, heads, read-out."""
from .backbone import ResNet
from .heads import DensityGridHead, FixedGaussianHead, GaussianHead
from .neck import MergeNeck
from .network import SplattingOcc
from .readout import OccupancyReadout
from .renderocc_head import RenderOccHead
from .sparse_head import SparseGaussianHead
from .view_transform import LSSViewTransform
from .volume_encoder import BEVVolumeEncoder, VolumeEncoder3D

__all__ = ['ResNet', 'MergeNeck', 'LSSViewTransform', 'VolumeEncoder3D', 'BEVVolumeEncoder',
           'GaussianHead', 'FixedGaussianHead', 'DensityGridHead', 'RenderOccHead',
           'SparseGaussianHead',
           'OccupancyReadout', 'SplattingOcc']
