"""Fixtures of the data tests: a small toy dataset tree, registered for one test at a time."""

import pytest

from gsnet.data.datasets import dataset_root_from_env, register_gsnet_datasets
from gsnet.data.toy_datasets import make_toy_datasets


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
