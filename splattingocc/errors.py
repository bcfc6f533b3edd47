"""The error types of mistakes a user can fix (a path, an option, a config key, a data file).

Every tool runs through :func:`splattingocc.engine.launch.run_main`, which prints any
:class:`UserError` (and its subclasses below) as one line ``error: <message>`` and exits with 2.
The message names the file or key, what is wrong with it and what to do.

The subclasses keep the built-in type a caller may already catch: :class:`DataError` is a
``ValueError``, :class:`CorruptFileError` also an ``OSError``, :class:`OutputExistsError` a
``FileExistsError``.
"""


class UserError(Exception):
    """An error the user can fix; the tools print it as one line, without a traceback."""


class DataError(UserError, ValueError):
    """A data file (info pkl, camera image, label file, ground truth, prediction) is missing
    something or holds something it must not: the message names the file and the fix."""


class CorruptFileError(DataError, OSError):
    """A data file that cannot be read or decoded completely (truncated, corrupt)."""


class OutputExistsError(UserError, FileExistsError):
    """An output folder or file that is already there and would be overwritten."""


class UnsafePickleError(DataError):
    """A pickle file that asks for a Python object an info file never holds (it could run code
    when loaded): refused before anything is created."""


class TrainingDivergedError(UserError, RuntimeError):
    """A loss term or a weight became NaN/inf during training: the message names it, the last
    checkpoint whose tensors are all finite, and what to try."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line.

    An error raised inside a DataLoader worker comes back to the main process as the same type
    with the worker's whole traceback as its message (``Caught X in DataLoader worker process
    N. Original Traceback ... module.X: message``): the original message is its last line.
    A multi-line message otherwise keeps its lines, joined with ' | '.
    """
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if 'Original Traceback' in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name = type(err).__name__
        for prefix in (f'{type(err).__module__}.{name}: ', f'{name}: '):
            if last.startswith(prefix):
                last = last[len(prefix):]
                break
        text = last
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return ' | '.join(lines)


__all__ = ['UserError', 'DataError', 'CorruptFileError', 'OutputExistsError',
           'UnsafePickleError', 'TrainingDivergedError', 'one_line']
