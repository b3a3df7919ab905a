"""Shared fixtures: the toy GSNet configuration (same code paths as the paper model), and a
short two-process toy training that the launcher tests start in several ways."""

import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from gsnet.checkpoint import GSNetCheckpointer
from gsnet.config import load_config
from gsnet.data.datasets import dataset_root_from_env, register_gsnet_datasets
from gsnet.data.toy_datasets import make_toy_datasets

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")
TOY_CONFIG_ARGS = ("--config-file", os.path.join(REPO_ROOT, "configs", "toy.yaml"))
# 4 iterations of 2 images on the CPU, checkpoints after iterations 1 and 3, no evaluation.
SHORT_OPTS = (
    "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4",
    "SOLVER.CHECKPOINT_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()",
    "SEED", "1",
)  # fmt: skip
# What gsnet.launcher reads: a test run must not inherit the placement of the test session.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                      "MASTER_PORT")  # fmt: skip


def _toy_cfg(*opts):
    return load_config(
        os.path.join(REPO_ROOT, "configs", "toy.yaml"), ["MODEL.DEVICE", "cpu", *opts]
    )


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


@pytest.fixture
def free_port():
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def short_training(toy_root):
    """The short toy training: ``argv(output_dir)`` gives train_net.py's arguments, ``env`` the
    environment of its processes (the toy datasets, one thread per process so that every way of
    starting them computes alike, no torchrun or SLURM variables), ``final_weights(output_dir)``
    the model it wrote."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in LAUNCHER_VARIABLES and not name.startswith("SLURM_")
    }
    env.update(DETECTRON2_DATASETS=str(toy_root), OMP_NUM_THREADS="1")
    return SimpleNamespace(
        argv=lambda output_dir: [*TOY_CONFIG_ARGS, "OUTPUT_DIR", str(output_dir), *SHORT_OPTS],
        env=env,
        train_net=TRAIN_NET,
        final_weights=final_weights,
    )


@pytest.fixture(scope="session")
def two_process_weights(short_training, tmp_path_factory):
    """The final weights of the short training in 2 processes started by Detectron2's launcher."""
    output = tmp_path_factory.mktemp("detectron2_launch") / "run"
    done = subprocess.run(
        [sys.executable, TRAIN_NET, "--num-gpus", "2", *short_training.argv(output)],
        env=short_training.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return final_weights(output)


def final_weights(output_dir):
    """The model of OUTPUT_DIR/model_final.pth."""
    path = os.path.join(output_dir, "model_final.pth")
    return torch.load(path, weights_only=True, map_location="cpu")["model"]


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
