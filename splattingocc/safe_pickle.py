"""The one way this package reads pickle files (info pkls): a restricted unpickler.

A pickle can name any importable callable and call it while it is being loaded (``os.system``,
``builtins.exec``, ``subprocess.Popen``...), so ``pickle.load`` on a downloaded info file runs
whatever code came with it. :func:`load_pickle` admits only what info files hold (written by
``datasets/nuscenes_converter.py``, ``tools/create_data.py``, and mmdetection3d / BEVDet info
files): the built-in containers and scalars, which pickle encodes without naming any callable,
plus numeric numpy arrays, dtypes and scalars, ``collections.OrderedDict``, ``set`` /
``frozenset``, ``bytes`` / ``bytearray`` of data and ``_codecs.encode`` with the latin-1 codec
(how protocols 0-2 store bytes). Anything else is refused with :class:`~splattingocc.errors.UnsafePickleError`
before it is called, so nothing it asks for runs.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
from typing import Any, Callable, Dict, Tuple

import numpy as np

from .errors import CorruptFileError, UnsafePickleError

__all__ = ['load_pickle', 'loads_pickle', 'allowed_pickle_globals']

#: numpy dtype kinds an info file may hold: bool, integers, floats, complex, str and bytes
#: (no object 'O' or void/structured 'V' dtypes, whose contents are arbitrary objects)
_DTYPE_KINDS = frozenset('biufcUS')


def _checked_dtype(obj, *args):
    """``numpy.dtype`` of a numeric (or str/bytes) type only."""
    dtype = np.dtype(obj, *args)
    if dtype.kind not in _DTYPE_KINDS or dtype.hasobject:
        raise pickle.UnpicklingError(f'a numpy dtype {dtype}')
    return dtype


def _latin1_encode(text, encoding='latin1', errors='strict'):
    """``_codecs.encode`` as protocol 2 uses it for bytes: latin-1 only."""
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise pickle.UnpicklingError(f'a _codecs.encode call with encoding {encoding!r}')
    return text.encode('latin1', errors)


def _bytes(*args):
    """``bytes`` as protocols 0-2 use it (``bytes()`` for an empty buffer); no ``bytes(n)``."""
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError('a bytes(n) call')
    return bytes(*args)


def _bytearray(*args):
    """``bytearray`` of in-band protocol 5 buffers; no ``bytearray(n)``."""
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError('a bytearray(n) call')
    return bytearray(*args)


def allowed_pickle_globals() -> Dict[Tuple[str, str], Callable]:
    """{(module, name): object} of every global :func:`load_pickle` resolves."""
    array_rebuild = np.zeros(1).__reduce__()[0]  # numpy.core.multiarray._reconstruct
    scalar_rebuild = np.float64(0).__reduce__()[0]  # numpy.core.multiarray.scalar
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numpy.core.numeric._frombuffer
    allowed = {
        ('builtins', 'set'): set, ('builtins', 'frozenset'): frozenset,
        ('__builtin__', 'set'): set, ('__builtin__', 'frozenset'): frozenset,
        ('builtins', 'bytes'): _bytes, ('__builtin__', 'bytes'): _bytes,
        ('builtins', 'bytearray'): _bytearray, ('__builtin__', 'bytearray'): _bytearray,
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('_codecs', 'encode'): _latin1_encode,
        ('numpy', 'dtype'): _checked_dtype,
        ('numpy', 'ndarray'): np.ndarray,
    }
    # numpy 1.x pickles numpy.core.*, numpy 2.x numpy._core.*: admit both spellings
    for package in ('numpy.core', 'numpy._core'):
        allowed[(f'{package}.multiarray', '_reconstruct')] = array_rebuild
        allowed[(f'{package}.multiarray', 'scalar')] = scalar_rebuild
        allowed[(f'{package}.numeric', '_frombuffer')] = frombuffer
    return allowed


class _InfoUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` knows only :func:`allowed_pickle_globals`."""

    _allowed = None

    def find_class(self, module: str, name: str):
        if _InfoUnpickler._allowed is None:
            _InfoUnpickler._allowed = allowed_pickle_globals()
        try:
            return _InfoUnpickler._allowed[(module, name)]
        except KeyError:
            raise _Forbidden(f'{module}.{name}') from None


class _Forbidden(pickle.UnpicklingError):
    """A global outside the allow-list (the name is the message)."""


def _load(f, source: str, what: str, fix: str) -> Any:
    try:
        return _InfoUnpickler(f).load()
    except _Forbidden as e:
        raise UnsafePickleError(
            f'{source}: refused, this {what} asks for {e}, which could run code while loading '
            '(info files hold only dicts, lists, strings, numbers and numeric numpy arrays); do '
            f'not use it, {fix}') from None
    except pickle.UnpicklingError as e:
        if str(e).startswith('a '):  # what a wrapper above refused
            raise UnsafePickleError(
                f'{source}: refused, this {what} holds {e}, which info files never hold; do '
                f'not use it, {fix}') from None
        raise CorruptFileError(f'{source}: not a readable {what} ({e}); the file is corrupt or '
                               f'truncated, {fix}') from e
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as e:
        raise CorruptFileError(f'{source}: not a readable {what} ({type(e).__name__}: {e}); the '
                               f'file is corrupt or truncated, {fix}') from e


def load_pickle(path, what: str = 'info file',
                fix: str = 're-create it with tools/create_data.py') -> Any:
    """Unpickle ``path`` admitting only the types of info files (module docstring).

    Raises:
        FileNotFoundError: no such file (the message names it).
        UnsafePickleError: the file names a global outside the allow-list; nothing was called.
        CorruptFileError: a truncated or otherwise unreadable file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path} (create it with `python '
                                'tools/create_data.py nuscenes|synthetic ...` or pass the right '
                                'path)')
    with open(path, 'rb') as f:
        return _load(f, path, what, fix)


def loads_pickle(data: bytes, source: str = '<bytes>', what: str = 'info file',
                 fix: str = 're-create it with tools/create_data.py') -> Any:
    """:func:`load_pickle` of bytes (``source`` names them in errors)."""
    return _load(io.BytesIO(data), source, what, fix)
