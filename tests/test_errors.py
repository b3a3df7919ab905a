"""How every tool reports errors: a GSNetUserError as one line with exit status 2, its
traceback with --debug, any other exception (a bug) unchanged."""

import argparse
import errno
import logging

import pytest

from gsnet.errors import (
    USER_ERROR_STATUS,
    ConfigError,
    InputFileError,
    OutputWriteError,
    add_debug_flag,
    check_minimum,
    output_write_errors,
    reporting_user_errors,
)


def test_user_error_is_one_line_with_status_2(capsys):
    with pytest.raises(SystemExit) as raised:
        with reporting_user_errors("tool.py"):
            raise InputFileError("Image a.png is truncated: copy it again.")
    assert raised.value.code == USER_ERROR_STATUS == 2
    assert capsys.readouterr().err == "tool.py: error: Image a.png is truncated: copy it again.\n"


def test_debug_lets_the_user_error_through(capsys):
    with pytest.raises(InputFileError, match="truncated"):
        with reporting_user_errors("tool.py", debug=True):
            raise InputFileError("Image a.png is truncated.")
    assert capsys.readouterr().err == ""


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ValueError, match="not a user error"):
        with reporting_user_errors("tool.py"):
            raise ValueError("not a user error")


def test_debug_flag_and_its_environment_variable(monkeypatch):
    assert add_debug_flag(argparse.ArgumentParser()).parse_args(["--debug"]).debug
    assert not add_debug_flag(argparse.ArgumentParser()).parse_args([]).debug
    monkeypatch.setenv("GSNET_DEBUG", "1")
    assert add_debug_flag(argparse.ArgumentParser()).parse_args([]).debug


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_training_log_shows_a_user_error_without_its_traceback():
    import gsnet.training  # noqa: F401  (installs the filter on Detectron2's training logger)

    logger = logging.getLogger("detectron2.engine.train_loop")
    handler = _Records()
    logger.addHandler(handler)
    try:
        for error in (InputFileError("Image a.png is truncated."), ValueError("a bug")):
            try:
                raise error
            except Exception:
                logger.exception("Exception during training:")  # as TrainerBase.train logs
    finally:
        logger.removeHandler(handler)
    user, bug = handler.records
    assert user.getMessage() == "Exception during training: Image a.png is truncated."
    assert user.exc_info is None
    assert bug.getMessage() == "Exception during training:" and bug.exc_info is not None


def test_check_minimum_names_the_first_option_below_its_minimum(capsys):
    parser = argparse.ArgumentParser(prog="tool.py")
    args = argparse.Namespace(batch_size=4, tile_size=None, workers=0)
    check_minimum(parser, args, 1, "batch_size", "tile_size")  # None is not checked
    with pytest.raises(SystemExit) as exit_info:
        check_minimum(parser, args, 1, "batch_size", "workers")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("--workers must be at least 1, got 0")


def test_output_write_errors_name_the_file_and_keep_user_errors():
    full = OSError(errno.ENOSPC, "No space left on device", ".out.tif.partial")
    with pytest.raises(OutputWriteError) as raised, output_write_errors("Free space."):
        raise full
    assert str(raised.value) == ".out.tif.partial: No space left on device. Free space."
    with pytest.raises(OutputWriteError) as raised, output_write_errors("Retry.", path="out.tif"):
        raise full
    assert str(raised.value) == "Cannot write out.tif: No space left on device. Retry."
    with pytest.raises(ConfigError), output_write_errors("Retry."):
        raise ConfigError("already a user error")
