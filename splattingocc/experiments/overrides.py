"""Config overrides as ``--cfg-options`` writes them: load, merge, format, parse, diff, check.

An override is a flat key (``model.renderer.type``, ``param_scheduler.1.end``) and a value,
merged with the ``Config.merge_from_dict`` call that ``tools/train.py --cfg-options`` uses. A
value's command-line form is the string mmengine's ``DictAction`` parses back to the same value
(:func:`cli_value`); dicts, and lists of dicts such as pipelines, have none.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

from splattingocc.engine.launch import merge_cfg_options
from splattingocc.errors import UserError

_MISSING = object()


def load_base_config(path: str) -> Config:
    """The config file ``path`` (a UserError naming ``--base`` if there is none)."""
    if not osp.isfile(path):
        raise UserError(f'base config {path} not found: pass e.g. --base '
                        'configs/splattingocc/splattingocc-tiny-synthetic.py')
    return Config.fromfile(path)


def apply_overrides(cfg: Config, overrides: Dict[str, Any]) -> Config:
    """A copy of ``cfg`` with ``overrides`` merged exactly as ``--cfg-options`` merges them
    (``engine.launch.merge_cfg_options``)."""
    out = copy.deepcopy(cfg)
    if overrides:
        merge_cfg_options(out, copy.deepcopy(overrides))
    return out


def parse_cli_value(text: str) -> Any:
    """A ``--cfg-options`` value string as ``tools/train.py`` reads it (mmengine DictAction)."""
    return DictAction._parse_iterable(text)


def cli_value(value: Any) -> Optional[str]:
    """``value`` as a ``--cfg-options`` string that parses back to it, or None if there is none."""
    text = _format_cli(value)
    if text is None:
        return None
    try:
        back = parse_cli_value(text)
    except (AssertionError, ValueError):
        return None
    return text if _same(back, value) else None


def _format_cli(value: Any) -> Optional[str]:
    if value is None:
        return 'None'
    if isinstance(value, bool):
        return 'True' if value else 'False'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        parts = [_format_cli(v) for v in value]
        if any(p is None for p in parts):
            return None
        inner = ','.join(parts)
        return f'({inner})' if isinstance(value, tuple) else f'[{inner}]'
    return None  # dicts and other objects have no command-line form


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b and type(a) is type(b)
    return type(a) is type(b) and a == b


def cli_tokens(overrides: Dict[str, Any]) -> Optional[List[str]]:
    """``key=value`` tokens for ``--cfg-options`` (None: a value has no command-line form)."""
    tokens = []
    for key, value in overrides.items():
        text = cli_value(value)
        if text is None:
            return None
        tokens.append(f'{key}={text}')
    return tokens


def short_value(value: Any, limit: int = 120) -> str:
    """A one-line, human-readable form of an override value (pipelines as their type names)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        text = '[' + ', '.join(str(v.get('type', '{...}')) for v in value) + ']'
    elif isinstance(value, dict):
        text = 'dict(' + ', '.join(f'{k}={short_value(v, limit)}' for k, v in value.items()) + ')'
    else:
        text = cli_value(value) or repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def describe_overrides(overrides: Dict[str, Any]) -> str:
    """``key=value key=value`` (empty overrides: ``(base as is)``)."""
    if not overrides:
        return '(base as is)'
    return ' '.join(f'{k}={short_value(v)}' for k, v in overrides.items())


def flatten_config(obj: Any, prefix: str = '') -> Dict[str, Any]:
    """Nested dicts (and lists of dicts, by index) -> ``{'a.b.0.c': leaf}``."""
    out: Dict[str, Any] = {}
    if isinstance(obj, Config):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        if not obj and prefix:
            out[prefix] = {}
        for k, v in obj.items():
            out.update(flatten_config(v, f'{prefix}.{k}' if prefix else str(k)))
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, dict) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten_config(v, f'{prefix}.{i}'))
    else:
        out[prefix] = obj
    return out


def config_diff(base: Any, other: Any) -> Dict[str, Tuple[Any, Any]]:
    """``{flat key: (base value, other value)}`` where they differ; ``None``-less absence is
    reported as the string ``'<absent>'``."""
    a, b = flatten_config(base), flatten_config(other)
    diff = {}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va is _MISSING or vb is _MISSING or not _same(_plain(va), _plain(vb)):
            diff[key] = ('<absent>' if va is _MISSING else va,
                         '<absent>' if vb is _MISSING else vb)
    return diff


def _plain(v):
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    return v


def check_override_keys(base: Config, overrides: Dict[str, Any], what: str) -> List[str]:
    """Raise if an override's parent path is not in ``base`` (a typo); return new leaf keys."""
    root = base.to_dict()
    deleted = {k[:-len('._delete_')] for k in overrides if k.endswith('._delete_')}
    added = []
    for key in overrides:
        parts = key.split('.')
        if parts[-1] == '_delete_':
            parts = parts[:-1]
            need_leaf = True
        else:
            need_leaf = False
        node: Any = root
        for depth, part in enumerate(parts):
            path = '.'.join(parts[:depth + 1])
            parent = '.'.join(parts[:depth]) or '<top level>'
            is_leaf = depth == len(parts) - 1
            if any(path == d or path.startswith(d + '.') for d in deleted) and not need_leaf:
                break  # under a replaced dict: anything goes
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif is_leaf and not need_leaf and isinstance(node, dict):
                added.append(key)
                break
            else:
                raise UserError(
                    f'{what}: key {key!r} does not match the base config {base.filename} '
                    f'({part!r} is not in {parent}); check its spelling against the config')
    return added


def split_top_level(text: str, sep: str = ',') -> List[str]:
    """Split at ``sep`` outside brackets: ``'a=[1,2],b'`` -> ``['a=[1,2]', 'b']``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in '([':
            depth += 1
        elif ch in ')]':
            depth -= 1
            if depth < 0:
                raise UserError(f'--arms: unbalanced brackets in {text!r}')
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise UserError(f'--arms: unbalanced brackets in {text!r}')
    parts.append(text[start:])
    return parts


def parse_cfg_options(tokens: Sequence[str]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """``key=value`` strings -> (parsed values, raw value strings)."""
    parsed, raw = {}, {}
    for token in tokens or []:
        if '=' not in token:
            raise UserError(f'--cfg-options: {token!r} is not key=value')
        key, text = token.split('=', 1)
        parsed[key] = parse_cli_value(text)
        raw[key] = text
    return parsed, raw
