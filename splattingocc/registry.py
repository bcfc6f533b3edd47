"""The single registry module of SplattingOcc.

Every component registers in one of these children of mmengine's root registries. The
``locations`` make ``Registry.build`` import the package that defines a type, so a config only
has to name it (with ``default_scope='splattingocc'``).
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS,
    locations=['splattingocc.models', 'splattingocc.rendering', 'splattingocc.voxelizer',
               'splattingocc.losses'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['splattingocc.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS,
                      locations=['splattingocc.datasets.transforms'])
METRICS = Registry('metric', parent=MMENGINE_METRICS,
                   locations=['splattingocc.evaluation.metrics'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['splattingocc.engine'])
