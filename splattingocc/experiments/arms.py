"""Ablation arms: the base config with one thing changed, as ``--cfg-options`` overrides.

Named arms (:data:`NAMED_ARMS`, all defined in the "named arms" block below):

* ``splat``: the base as it is (its ray supervision must render with a splatting renderer);
* ``nerf``: RenderOcc (``docs/renderocc-fidelity.md``): the head, the supervision list and
  the read-out threshold replaced by those of the base's ``renderocc`` variable (as
  ``configs/renderocc/*.py``, which apply the same variable);
* ``3d``: the base's ``volume_supervision`` and the lift's depth loss, every label a class and
  the argmax read-out (as ``splattingocc-tiny-synthetic-3d.py``);
* ``2d3d``: the base's supervision plus its ``volume_supervision`` (as
  ``splattingocc-tiny-synthetic-2d3d.py``);
* ``seed``: the head replaced by the base's ``seed_head``, fixed isotropic Gaussians (as
  ``splattingocc-tiny-synthetic-seed.py``);
* ``sparse``: the head replaced by the base's ``sparse_head``, a budget of Gaussians with free
  means (as ``splattingocc-tiny-synthetic-sparse.py``);
* ``3d+render``: the ``3d`` arm plus the base's ``render_consistency`` supervision, GaussRender's
  render-consistency loss (as ``splattingocc-tiny-synthetic-3d-render.py``).

Arm names are letters, digits, ``_``, ``+`` and ``-``, starting with a letter or digit: each is a
folder name of the ablation's output (``OUT/<budget>/<arm>/seed<k>``) and a label in its report,
and none of these characters needs quoting in a POSIX shell or a path.

Any other knob is an arm ``name=key=value[,key=value...]``, e.g.
``uniform=model.supervision.0.pixel_sampler.mode=uniform``,
``rays6k=model.supervision.0.pixel_sampler.num_rays=6144``,
``aux1=train_dataloader.dataset.num_adjacent=1``,
``l1=model.supervision.0.losses.0._delete_=True,model.supervision.0.losses.0.type=L1DepthLoss``,
``iso=model.head.isotropic=True,model.head.max_scale=0.4``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from mmengine.config import Config

from splattingocc.errors import UserError

from .overrides import (apply_overrides, check_override_keys, cli_value, config_diff,
                        describe_overrides, parse_cli_value, short_value, split_top_level)

_ARM_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_+-]*$')


@dataclass
class Arm:
    """One arm: a name and the ``--cfg-options`` overrides applied to the base config.

    ``raw`` keeps the value strings a user typed for custom arms (used as they are on the
    command line); ``description`` says what the arm changes.
    """
    name: str
    overrides: Dict[str, Any]
    description: str = ''
    raw: Dict[str, str] = field(default_factory=dict)

    def cli_tokens(self) -> Optional[List[str]]:
        """``key=value`` tokens, or None when some value has no command-line form."""
        tokens = []
        for key, value in self.overrides.items():
            text = self.raw.get(key)
            if text is None:
                text = cli_value(value)
            if text is None:
                return None
            tokens.append(f'{key}={text}')
        return tokens


# ----------------------------------------------------------------------------------------------
# named arms: one builder per name, (base config, its model dict) -> Arm
# ----------------------------------------------------------------------------------------------

#: renderer types that splat Gaussians (splattingocc/rendering)
SPLAT_RENDERERS = ('TorchSplatRenderer', 'GsplatRenderer', 'SplatRenderer')


def _ray_supervision(name: str, base: Config, model: dict) -> int:
    """Index of the base's RaySupervision in ``model.supervision`` (the one that renders)."""
    sup = model.get('supervision') or []
    found = [i for i, s in enumerate(sup) if isinstance(s, dict)
             and s.get('type') == 'RaySupervision']
    if len(found) != 1:
        raise UserError(f'--arms {name}: the base config {base.filename} has {len(found)} '
                        "RaySupervision entries in model.supervision; the arm needs exactly one "
                        '(the rendering to switch)')
    return found[0]


def _splat_arm(base: Config, model: dict) -> Arm:
    i = _ray_supervision('splat', base, model)
    rtype = (model['supervision'][i].get('renderer') or {}).get('type')
    if rtype not in SPLAT_RENDERERS:
        raise UserError(
            f'--arms splat: the base config {base.filename} renders with {rtype}, not a '
            f'splatting renderer ({", ".join(SPLAT_RENDERERS)}); use a SplattingOcc base '
            'config (e.g. configs/splattingocc/splattingocc-tiny-synthetic.py) or define the '
            'arm yourself with --arms name=key=value,...')
    return Arm('splat', {}, f'the base config as it is (splatting renderer {rtype})')


def _nerf_arm(base: Config, model: dict) -> Arm:
    # RenderOcc: the base's ``renderocc`` variable (head, supervision list, read-out threshold),
    # as configs/renderocc/*.py apply it
    ro = base.get('renderocc')
    if not isinstance(ro, dict) or not {'head', 'supervision', 'readout_threshold'} <= set(ro):
        raise UserError(f'--arms nerf: the base config {base.filename} defines no renderocc = '
                        "dict(head=..., supervision=[...], readout_threshold=...) (as "
                        'configs/_base_/models/splattingocc_tiny.py does)')
    ro = Config(dict(r=ro)).to_dict()['r']  # plain lists and dicts
    overrides = {'model.head._delete_': True}
    overrides.update({f'model.head.{k}': v for k, v in ro['head'].items()})
    overrides['model.supervision'] = ro['supervision']
    overrides['model.readout.threshold'] = ro['readout_threshold']
    return Arm('nerf', overrides, 'RenderOcc: its head (density grid at the Occ3D resolution), '
               'volume renderer, loss set and read-out threshold in place of the Gaussians (as '
               'configs/renderocc/*.py)')


def _pipeline_3d(name: str, base: Config) -> list:
    """The base's ``train_pipeline_3d`` (plain lists and dicts)."""
    pipeline = base.get('train_pipeline_3d')
    if pipeline is None:
        raise UserError(
            f'--arms {name}: the base config {base.filename} has no train_pipeline_3d (the '
            'training pipeline with LoadOcc3DLabels that 3D supervision needs); define it as '
            'configs/_base_/datasets/occ3d_nuscenes_data.py does')
    return Config(dict(p=pipeline)).to_dict()['p']  # plain lists and dicts


def _volume_supervision(name: str, base: Config) -> dict:
    """The base's ``volume_supervision`` variable (plain dicts)."""
    vol = base.get('volume_supervision')
    if not isinstance(vol, dict):
        raise UserError(f'--arms {name}: the base config {base.filename} defines no '
                        "volume_supervision (e.g. dict(type='VolumeSupervision', ...), as "
                        'configs/_base_/models/splattingocc_tiny.py does)')
    return Config(dict(v=vol)).to_dict()['v']


def _num_classes(name: str, base: Config) -> int:
    if base.get('num_classes') is None:
        raise UserError(f'--arms {name}: the base config {base.filename} has no num_classes '
                        '(configs/_base_/datasets/occ3d_nuscenes.py defines it)')
    return int(base.num_classes)


def _3d_overrides(name: str, base: Config, model: dict) -> Dict[str, Any]:
    # the bound: 3D labels through the base's volume supervision, the lift's depth loss kept,
    # every label (free included) a class, the argmax read-out
    # (as configs/splattingocc/splattingocc-tiny-synthetic-3d.py)
    sup = Config(dict(s=model.get('supervision') or [])).to_dict()['s']
    lift = [s for s in sup if isinstance(s, dict) and s.get('type') == 'LSSDepthLoss']
    return {'model.head.num_classes': _num_classes(name, base),
            'model.readout.threshold': None,
            'model.supervision': [_volume_supervision(name, base)] + lift,
            'train_dataloader.dataset.pipeline': _pipeline_3d(name, base)}


def _3d_arm(base: Config, model: dict) -> Arm:
    return Arm('3d', _3d_overrides('3d', base, model),
               "Occ3D (3D) labels only through the base's volume supervision (LSS depth loss "
               'kept), all 18 labels classes, argmax read-out')


def _3d_render_arm(base: Config, model: dict) -> Arm:
    # the 3d arm plus GaussRender's render-consistency loss, the base's render_consistency
    # (as configs/splattingocc/splattingocc-tiny-synthetic-3d-render.py)
    rc = _base_dict(base, '3d+render', 'render_consistency',
                    "dict(type='RenderConsistencySupervision', ...)")
    overrides = _3d_overrides('3d+render', base, model)
    overrides['model.supervision'] = overrides['model.supervision'] + [
        Config(dict(r=rc)).to_dict()['r']]
    return Arm('3d+render', overrides, "the 3d arm plus the base's render-consistency loss "
               '(GaussRender: predicted and ground-truth occupancy rendered into a camera and a '
               "bird's-eye view, L1 on semantics and depth)")


def _2d3d_arm(base: Config, model: dict) -> Arm:
    sup = Config(dict(s=model.get('supervision') or [])).to_dict()['s']
    overrides = {'model.head.num_classes': _num_classes('2d3d', base),
                 'model.readout.threshold': None,
                 'model.supervision': sup + [_volume_supervision('2d3d', base)],
                 'train_dataloader.dataset.pipeline': _pipeline_3d('2d3d', base)}
    return Arm('2d3d', overrides, "2D labels plus the 3d arm's volume (3D) supervision, argmax "
               'read-out')


def _base_dict(base: Config, arm: str, var: str, example: str) -> dict:
    """The base config's variable ``var`` (a dict) that arm ``arm`` is built from; a UserError
    naming it where the base has none."""
    value = base.get(var)
    if not isinstance(value, dict):
        raise UserError(f'--arms {arm}: the base config {base.filename} defines no {var} (e.g. '
                        f'{example}, as configs/_base_/models/splattingocc_tiny.py does)')
    return value


def _head_overrides(head: dict) -> dict:
    """Overrides that replace (not merge into) the model's head with ``head``."""
    overrides = {'model.head._delete_': True}
    overrides.update({f'model.head.{k}': v
                      for k, v in Config(dict(h=head)).to_dict()['h'].items()})
    return overrides


def _seed_arm(base: Config, model: dict) -> Arm:
    head = _base_dict(base, 'seed', 'seed_head', "dict(type='FixedGaussianHead', ...)")
    return Arm('seed', _head_overrides(head), "the seed code's variant: fixed isotropic "
               'Gaussians at the voxel centres, only opacity and classes learned (as *-seed.py)')


def _sparse_arm(base: Config, model: dict) -> Arm:
    head = _base_dict(base, 'sparse', 'sparse_head',
                      "dict(type='SparseGaussianHead', num_gaussians=4000, ...)")
    return Arm('sparse', _head_overrides(head),
               f"sparse Gaussians: a budget of {head.get('num_gaussians')} with free means, "
               'refined from the volume (as *-sparse.py)')


#: name -> builder of every named arm
NAMED_ARMS: Dict[str, Callable[[Config, dict], Arm]] = {
    'splat': _splat_arm,
    'nerf': _nerf_arm,
    '3d': _3d_arm,
    '2d3d': _2d3d_arm,
    'seed': _seed_arm,
    'sparse': _sparse_arm,
    '3d+render': _3d_render_arm,
}

# ----------------------------------------------------------------------------------------------
# end of the named arms
# ----------------------------------------------------------------------------------------------


def named_arm(name: str, base: Config) -> Arm:
    """The overrides of a named arm (:data:`NAMED_ARMS`) for ``base``."""
    model = base.get('model')
    if not isinstance(model, dict):
        raise UserError(f'{base.filename}: no model=dict(...) in the base config')
    builder = NAMED_ARMS.get(name)
    if builder is None:
        raise UserError(f'--arms: unknown arm {name!r}; named arms are {", ".join(NAMED_ARMS)}, '
                        'others are written name=key=value[,key=value...]')
    return builder(base, model)


def parse_arms(specs: Sequence[str], base: Config) -> List[Arm]:
    """``--arms`` values -> arms, checked against ``base``.

    Items are separated by commas (outside brackets) or given as separate arguments: a named arm
    (``nerf``), the start of a custom arm (``name=key=value``) or a further override of the custom
    arm before it (``key=value``).
    """
    arms: List[Arm] = []
    current: Optional[Arm] = None
    for spec in specs:
        for token in split_top_level(spec):
            token = token.strip()
            if not token:
                continue
            if '=' not in token:
                arms.append(named_arm(token, base))
                current = None
                continue
            head, rest = token.split('=', 1)
            if '=' in rest and _ARM_NAME.match(head) and '.' not in head:
                key, text = rest.split('=', 1)
                current = Arm(head, {}, 'custom')
                arms.append(current)
            elif current is None:
                raise UserError(f'--arms: {token!r} needs an arm name first: write '
                                f'name={token} (e.g. '
                                'uniform=model.supervision.0.pixel_sampler.mode=uniform)')
            else:
                key, text = head, rest
            key = key.strip()
            if not key:
                raise UserError(f'--arms: empty key in {token!r}')
            current.overrides[key] = parse_cli_value(text)
            current.raw[key] = text
    if not arms:
        raise UserError('--arms: no arm given (e.g. --arms splat,nerf)')
    names = [a.name for a in arms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f'--arms: arm names must be unique, {dup} given twice')
    for arm in arms:
        if not _ARM_NAME.match(arm.name):
            raise UserError(f'--arms: arm name {arm.name!r} must be letters, digits, _, + or '
                            '-, starting with a letter or digit')
        check_override_keys(base, arm.overrides, f'--arms {arm.name}')
        if arm.description == 'custom':
            arm.description = describe_overrides(arm.overrides)
    return arms


def _get_path(root: Any, key: str) -> Any:
    node = root
    for part in key.split('.'):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return '<absent>'
    return node


def arm_changes(base: Config, arm: Arm) -> dict:
    """What applying ``arm`` to ``base`` changes.

    Returns ``changed_keys`` (every flattened key whose value differs) and ``changes``
    (``{override key: [base value, arm value]}`` in short form, for the override keys that change
    something; ``k._delete_`` is reported as ``k``).
    """
    cfg = apply_overrides(base, arm.overrides)
    diff = config_diff(base, cfg)
    roots = list(dict.fromkeys(k[:-len('._delete_')] if k.endswith('._delete_') else k
                               for k in arm.overrides))
    # an override replaced by a parent's _delete_ is shown under the parent
    roots = [r for r in roots if not any(r != o and r.startswith(o + '.') for o in roots)]
    before, after = base.to_dict(), cfg.to_dict()
    changes = {}
    for root in roots:
        if any(k == root or k.startswith(root + '.') for k in diff):
            changes[root] = [short_value(_get_path(before, root)),
                             short_value(_get_path(after, root))]
    return dict(changed_keys=sorted(diff), changes=changes)
