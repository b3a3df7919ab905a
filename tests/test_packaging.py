"""The package imports what it declares: setup.py's INSTALL_REQUIRES covers every third-party
module that ``import gsnet`` imports, optional features are extras, and ``import gsnet`` works
without the geospatial extra (rasterio)."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Not on PyPI in a usable form: installed by scripts/install_detectron2.py (see setup.py).
NOT_DECLARED = {"detectron2"}


def _setup_lists():
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    lists = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE")
    }
    return lists["INSTALL_REQUIRES"], lists["EXTRAS_REQUIRE"]


def _distribution(requirement):
    return re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports():
    """{distribution: imported at module level (True) or only inside functions (False)}."""
    module_distributions = importlib.metadata.packages_distributions()
    found = {}
    for path in (REPO_ROOT / "gsnet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names:
                    continue
                for distribution in module_distributions[top]:
                    name = distribution.lower().replace("_", "-")
                    found[name] = found.get(name, False) or node.col_offset == 0
    return found


def test_every_imported_package_is_declared():
    install_requires, extras = _setup_lists()
    required = {_distribution(r) for r in install_requires}
    optional = {_distribution(r) for group in extras.values() for r in group}
    for distribution, at_import in _third_party_imports().items():
        if distribution in NOT_DECLARED:
            continue
        if at_import:
            assert distribution in required, f"import gsnet needs {distribution}: add it"
        else:
            assert distribution in required | optional, f"gsnet uses {distribution}: declare it"
    assert "rasterio" in optional and "rasterio" not in required


def test_gsnet_imports_and_reads_png_without_rasterio(tmp_path):
    # A None entry in sys.modules makes "import rasterio" raise ImportError.
    script = f"""
import sys
sys.modules["rasterio"] = None
import numpy as np
from PIL import Image
import gsnet
from gsnet.errors import InputFileError
from gsnet.predictor import Predictor, read_image
Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save({str(tmp_path / "a.png")!r})
assert read_image({str(tmp_path / "a.png")!r}).pixels.shape == (4, 5, 3)
open({str(tmp_path / "a.tif")!r}, "wb").write(b"II*\\0")
try:
    read_image({str(tmp_path / "a.tif")!r})
except InputFileError as error:
    print(error)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "pip install -e '.[geo]'" in done.stdout
