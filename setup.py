"""Installs the ``splattingocc`` package: ``pip install -e .``."""
from setuptools import find_packages, setup

setup(
    name='splattingocc',
    version='0.1.0',
    description='3D semantic occupancy from 2D labels with Gaussian splatting',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['splattingocc', 'splattingocc.*']),
    install_requires=[
        # torch 2.13.0 is the CPU build; any torch >= 2.1 works (CUDA builds for gsplat).
        'torch>=2.1',
        'gsplat==1.5.3',
        'mmengine==0.10.7',
        'nuscenes-devkit>=1.1.11',
        'einops>=0.7',
        'numpy>=1.22,<2',  # nuscenes-devkit 1.2 requires numpy < 2
        'matplotlib>=3.6',
        'scipy>=1.7',  # Student-t intervals of tools/ablate.py; binary dilation of the synthetic data
        'tqdm',
    ],
    extras_require={
        # TensorBoard for watching runs (default_hooks.watch.tensorboard=True)
        'tb': ['tensorboard>=2.14'],
        # the tests read TensorBoard event files with tensorboard's own reader
        'test': ['pytest>=7', 'tensorboard>=2.14'],
    },
)
