"""The single registry module of SplattingOcc.

Every component registers in one of these children of mmengine's root registries. The
``locations`` make ``Registry.build`` import the package that defines a type, so a config only
has to name it (with ``default_scope='splattingocc'``).
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS,
    locations=['splattingocc.models', 'splattingocc.rendering', 'splattingocc.voxelizer',
               'splattingocc.supervision'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['splattingocc.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS,
                      locations=['splattingocc.datasets.transforms',
                                 'splattingocc.evaluation.ray_origins'])
METRICS = Registry('metric', parent=MMENGINE_METRICS,
                   locations=['splattingocc.evaluation.metrics'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['splattingocc.engine'])
# the CPU-capable DistributedDataParallel wrapper (splattingocc.engine.launch)
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS,
                          locations=['splattingocc.engine'])
# Scope children for mmengine's own component types, so that building them under
# default_scope='splattingocc' finds them without a "Failed to search registry" warning per type.
from mmengine.registry import DATA_SAMPLERS as _DATA_SAMPLERS  # noqa: E402
from mmengine.registry import EVALUATOR as _EVALUATOR  # noqa: E402
from mmengine.registry import LOG_PROCESSORS as _LOG_PROCESSORS  # noqa: E402
from mmengine.registry import LOOPS as _LOOPS  # noqa: E402
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as _OPTIM_WRAPPER_CONSTRUCTORS  # noqa: E402
from mmengine.registry import OPTIM_WRAPPERS as _OPTIM_WRAPPERS  # noqa: E402
from mmengine.registry import OPTIMIZERS as _OPTIMIZERS  # noqa: E402
from mmengine.registry import PARAM_SCHEDULERS as _PARAM_SCHEDULERS  # noqa: E402
from mmengine.registry import VISBACKENDS as _VISBACKENDS  # noqa: E402
from mmengine.registry import VISUALIZERS as _VISUALIZERS  # noqa: E402

DATA_SAMPLERS = Registry('data sampler', parent=_DATA_SAMPLERS)
EVALUATOR = Registry('evaluator', parent=_EVALUATOR)
LOG_PROCESSORS = Registry('log_processor', parent=_LOG_PROCESSORS)
LOOPS = Registry('loop', parent=_LOOPS)
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=_OPTIM_WRAPPER_CONSTRUCTORS)
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=_OPTIM_WRAPPERS)
OPTIMIZERS = Registry('optimizer', parent=_OPTIMIZERS)
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=_PARAM_SCHEDULERS)
VISBACKENDS = Registry('vis_backend', parent=_VISBACKENDS)
VISUALIZERS = Registry('visualizer', parent=_VISUALIZERS)
