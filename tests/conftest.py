"""Shared fixtures: the toy GSNet configuration (same code paths as the paper model)."""

import os

import pytest
import torch
from detectron2.config import get_cfg

from gsnet import add_gsnet_config
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
