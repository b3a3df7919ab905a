"""Errors a user can fix, and which exceptions the command-line tools report without a traceback.

A :class:`GSNetUserError` carries a complete message: what went wrong, where (the file, folder or
config key) and how to fix it. The subclasses also derive from the built-in type that the
error is an instance of (ValueError, OSError, FloatingPointError), so ``except ValueError``
keeps working.

:func:`user_error_message` decides what the command-line tools print as one line
(``train_net.py: error: <message>``, exit status 2) instead of a traceback:

- a :class:`GSNetUserError`;
- a ValueError, KeyError or OSError (FileNotFoundError, PermissionError, a full disk, ...)
  raised by GSNet's own code (``gsnet/`` or ``tools/``): the library raises these with complete
  messages for bad inputs (dataset folders, class-name files, weight files, configs);
- either of the above raised in a DataLoader worker process, which PyTorch re-raises in the
  main process with the worker's traceback pasted into the message: the original message is
  recovered.

Anything else (an exception raised inside PyTorch, NumPy, Detectron2, ... or an AssertionError)
is treated as a bug and keeps its traceback.
"""

import re
from pathlib import Path

__all__ = [
    "CheckpointWriteError",
    "ConfigError",
    "DescriptorError",
    "GSNetUserError",
    "InputFileError",
    "NonFiniteLossError",
    "user_error_message",
]

# The folders whose built-in exceptions are the library's deliberate, user-facing errors.
_OWN_CODE = tuple(
    str(Path(__file__).resolve().parents[1] / name) + "/" for name in ("gsnet", "tools")
)
_OWN_ERROR_TYPES = (ValueError, KeyError, OSError)
# How PyTorch re-raises an exception of a DataLoader worker (torch/_utils.py, ExceptionWrapper).
_WORKER_ERROR = re.compile(
    r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal (Traceback .*)$", re.DOTALL
)
_FRAME = re.compile(r'^\s*File "(.+)", line \d+')


class GSNetUserError(Exception):
    """An error the user can fix; its message says what, where and how."""


class ConfigError(GSNetUserError, ValueError):
    """The config, the command line or OUTPUT_DIR cannot be used."""


class DescriptorError(GSNetUserError, ValueError):
    """A dataset descriptor file cannot be used; the message names the file and the field."""


class InputFileError(GSNetUserError, ValueError):
    """An input file (image, label, checkpoint, weights) cannot be read or does not fit; the
    message names the file."""


class CheckpointWriteError(GSNetUserError, OSError):
    """A checkpoint could not be written (disk full, permissions); earlier checkpoints are
    intact."""


class NonFiniteLossError(GSNetUserError, FloatingPointError):
    """The training loss is NaN or infinite; the optimizer step was not applied."""


def _is_own_code(filename):
    return filename is not None and str(Path(filename).resolve()).startswith(_OWN_CODE)


def _innermost_frame_file(error):
    traceback = error.__traceback__
    if traceback is None:
        return None
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame.f_code.co_filename


def _exception_header(exc_type):
    """The type name as Python's traceback module prints it ("ValueError",
    "gsnet.errors.InputFileError")."""
    if exc_type.__module__ in ("builtins", "__main__"):
        return exc_type.__qualname__
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


def _unwrap_worker_error(error):
    """(original message, file of the raising frame) of an exception re-raised from a
    DataLoader worker, or None when ``error`` is not one."""
    match = _WORKER_ERROR.match(str(error.args[0]) if error.args else "")
    if match is None:
        return None
    lines = match.group(1).rstrip("\n").split("\n")
    header = _exception_header(type(error))
    starts = [i for i, line in enumerate(lines) if line == header or line.startswith(header + ": ")]
    if not starts:
        return None
    start = starts[-1]
    frames = [m.group(1) for m in map(_FRAME.match, lines[:start]) if m]
    message = "\n".join(lines[start:])[len(header) + 2 :]
    return message, frames[-1] if frames else None


def user_error_message(error):
    """The message to show for an error the user can fix, or None for what looks like a bug.

    Args:
        error (BaseException): the exception that ended a command.

    Returns:
        str or None: the message (for an error of a DataLoader worker, the worker's original
        message), or None when the traceback should be shown.
    """
    unwrapped = _unwrap_worker_error(error)
    if unwrapped is not None:
        message, origin = unwrapped
    else:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        origin = _innermost_frame_file(error)
    if isinstance(error, GSNetUserError):
        return message
    if isinstance(error, _OWN_ERROR_TYPES) and _is_own_code(origin):
        return message
    return None
