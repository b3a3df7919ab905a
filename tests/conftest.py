"""Shared fixtures: the toy GSNet configuration (same code paths as the paper model)."""

import os

import numpy as np
import pytest
import rasterio
import torch
from detectron2.config import get_cfg
from PIL import Image
from rasterio.transform import from_origin

from gsnet import add_gsnet_config
from gsnet.checkpoint import GSNetCheckpointer
from gsnet.data.datasets import dataset_root_from_env, register_gsnet_datasets
from gsnet.data.toy_datasets import make_toy_datasets

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy_cfg(*opts):
    cfg = get_cfg()
    add_gsnet_config(cfg)
    cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", "toy.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list([str(o) for o in opts])
    return cfg


def _toy_model(*opts, seed=0):
    from detectron2.modeling import build_model

    torch.manual_seed(seed)
    return build_model(_toy_cfg(*opts))


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def make_toy_cfg():
    """make_toy_cfg(KEY, VALUE, ...) -> a fresh toy config on the CPU."""
    return _toy_cfg


@pytest.fixture(scope="session")
def make_toy_model():
    """make_toy_model(KEY, VALUE, ..., seed=0) -> a toy GSNet built from a fresh config."""
    return _toy_model


@pytest.fixture(scope="session")
def toy_model():
    """A shared toy GSNet in eval mode (tests must not modify it)."""
    return _toy_model().eval()


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """The five toy datasets, written once per session (do not modify them)."""
    root = tmp_path_factory.mktemp("toy_datasets")
    make_toy_datasets(root, num_train=6, num_test=3, image_size=32)
    return root


@pytest.fixture
def register_root():
    """Call with a root to register the five datasets under it; the default root is restored
    after the test."""
    yield register_gsnet_datasets
    register_gsnet_datasets(dataset_root_from_env())


@pytest.fixture(scope="session")
def toy_weights(toy_model, tmp_path_factory):
    """A checkpoint file of the shared toy GSNet (random weights), written once per session."""
    folder = tmp_path_factory.mktemp("toy_weights")
    GSNetCheckpointer(toy_model, save_dir=str(folder)).save("model")
    return folder / "model.pth"


@pytest.fixture(scope="session")
def write_scene():
    """write_scene(path, height, width) -> (H, W, 3) uint8: a generated RGB scene (grass with a
    grey block and a blue pond) written as PNG/JPEG, or for .tif as a GeoTIFF in UTM 33N with
    0.5 m pixels (0.25 m^2)."""

    def write(path, height, width):
        rng = np.random.default_rng(0)
        pixels = np.empty((height, width, 3), np.uint8)
        pixels[:] = (70, 140, 60)
        pixels[height // 8 : height // 2, width // 8 : width // 2] = (190, 190, 185)
        pixels[height * 3 // 5 : height * 9 // 10, width // 2 : width * 9 // 10] = (40, 80, 190)
        noise = rng.integers(-12, 13, pixels.shape)
        pixels = np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8)
        if str(path).endswith(".tif"):
            with rasterio.open(
                path, "w", driver="GTiff", height=height, width=width, count=3, dtype="uint8",
                crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.5, 0.5),
            ) as dataset:  # fmt: skip
                dataset.write(pixels.transpose(2, 0, 1))
        else:
            Image.fromarray(pixels).save(path)
        return pixels

    return write
