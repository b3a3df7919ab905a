"""Errors a user can fix, and how the command-line tools report them.

Every error of the input is raised as a subclass of :class:`GSNetUserError` with a complete
message: what went wrong, where (the file, folder or config key) and how to fix it. The
subclasses also derive from the built-in type the error is an instance of (ValueError,
FileNotFoundError, OSError, FloatingPointError), so ``except ValueError`` keeps working.

Every tool runs its work inside :func:`reporting_user_errors`: a GSNetUserError is printed as one
line, ``tool.py: error: <message>``, and ends the tool with exit status 2 (as argparse's usage
errors); ``--debug`` (:func:`add_debug_flag`) shows its traceback instead. Any other exception
is a bug and keeps its traceback.
"""

import contextlib
import os
import sys

__all__ = [
    "USER_ERROR_STATUS",
    "CheckpointWriteError",
    "ConfigError",
    "DescriptorError",
    "GSNetUserError",
    "InputFileError",
    "MissingFileError",
    "NonFiniteLossError",
    "OutputExistsError",
    "OutputWriteError",
    "add_debug_flag",
    "check_minimum",
    "output_write_errors",
    "reporting_user_errors",
    "user_error_message",
]

# Exit status of a tool stopped by an error in its input (as argparse's usage errors).
USER_ERROR_STATUS = 2


class GSNetUserError(Exception):
    """An error the user can fix; its message says what, where and how."""


class ConfigError(GSNetUserError, ValueError):
    """The config, the command line or OUTPUT_DIR cannot be used."""


class DescriptorError(GSNetUserError, ValueError):
    """A dataset descriptor file cannot be used; the message names the file and the field."""


class InputFileError(GSNetUserError, ValueError):
    """An input file (image, label, class names, checkpoint, weights) cannot be read or does not
    fit; the message names the file."""


class MissingFileError(GSNetUserError, FileNotFoundError):
    """A file or folder the input names does not exist; the message names it."""


class CheckpointWriteError(GSNetUserError, OSError):
    """A checkpoint could not be written (disk full, permissions); earlier checkpoints are
    intact."""


class OutputExistsError(GSNetUserError, FileExistsError):
    """Writing would replace files that the tool did not write; nothing was changed."""


class OutputWriteError(GSNetUserError, OSError):
    """An output file could not be written (disk full, permissions); the outputs already
    complete are kept."""


class NonFiniteLossError(GSNetUserError, FloatingPointError):
    """The training loss is NaN or infinite; the optimizer step was not applied."""


def user_error_message(error):
    """The message of an error the user can fix, or None for a bug.

    A GSNetUserError raised in a DataLoader worker process reaches the main process as the same
    type, with the worker's traceback pasted before the message (torch's ExceptionWrapper); the
    original message is returned.

    Args:
        error (BaseException): the exception that ended a command.

    Returns:
        str or None: the message, or None when ``error`` is not a GSNetUserError.
    """
    if not isinstance(error, GSNetUserError):
        return None
    message = str(error)
    module, name = type(error).__module__, type(error).__qualname__
    # As the traceback module names the type.
    header = f"\n{name}: " if module in ("builtins", "__main__") else f"\n{module}.{name}: "
    if message.startswith("Caught ") and header in message:
        return message.rpartition(header)[2].rstrip("\n")
    return message


def add_debug_flag(parser):
    """Add ``--debug`` (show the traceback of errors in the input) to an argparse parser."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("GSNET_DEBUG") == "1",
        help="show the traceback of errors in the input (also: GSNET_DEBUG=1)",
    )
    return parser


def check_minimum(parser, args, minimum, *names):
    """``parser.error`` (exit status 2) naming the first option of ``names`` (argparse dest
    names) whose value is below ``minimum``; an option left at None is not checked."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


@contextlib.contextmanager
def output_write_errors(how_to_fix, *, path=None):
    """An OSError raised inside the block (a full disk, permissions) as an OutputWriteError:
    "Cannot write <path>: <reason>. <how_to_fix>", or, without ``path``, the same message
    naming the file the OSError names. Errors that already are GSNetUserErrors pass unchanged.
    """
    try:
        yield
    except GSNetUserError:
        raise
    except OSError as error:
        reason = error.strerror or error
        where = f"Cannot write {path}" if path is not None else error.filename or "an output file"
        raise OutputWriteError(f"{where}: {reason}. {how_to_fix}") from error


@contextlib.contextmanager
def reporting_user_errors(tool, *, debug=False):
    """Report a GSNetUserError raised inside the block as ``tool: error: <message>`` on stderr
    and exit with status 2; with ``debug`` it propagates with its traceback.

    Args:
        tool (str): the tool's file name, e.g. "train_net.py".
        debug (bool): let user errors propagate.
    """
    try:
        yield
    except GSNetUserError as error:
        if debug:
            raise
        print(f"{tool}: error: {user_error_message(error)}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_STATUS) from None
