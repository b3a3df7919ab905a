"""Fixtures of the tool tests: load a script of tools/ as a module."""

import importlib.util
from pathlib import Path

import pytest

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def load_tool():
    """Call with a script name (without .py) to import tools/<name>.py."""

    def load(name):
        spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
