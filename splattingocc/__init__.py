"""SplattingOcc: 3D semantic occupancy learned from 2D labels with Gaussian splatting."""
__version__ = '0.1.0'
