"""The test-time mapper: Detectron2's DatasetMapper(cfg, is_train=False) for the image, with an
error naming a file it cannot read."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from PIL import Image

from gsnet.config import add_gsnet_config
from gsnet.data.dataset_mapper import GSNetTestDatasetMapper
from gsnet.errors import InputFileError


@pytest.fixture
def cfg():
    cfg = get_cfg()
    add_gsnet_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TEST = 40
    return cfg


@pytest.fixture
def record(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(rng.integers(0, 5, (30, 50), dtype=np.uint8)).save(tmp_path / "l.png")
    return {"file_name": str(tmp_path / "i.png"), "sem_seg_file_name": str(tmp_path / "l.png")}


def test_same_image_as_detectron2s_test_mapper(cfg, record):
    ours = GSNetTestDatasetMapper(cfg)(record)
    detectron2s = DatasetMapper(cfg, is_train=False)(record)
    assert torch.equal(ours["image"], detectron2s["image"])
    assert ours["image"].shape == (3, 40, 67)
    assert (ours["height"], ours["width"]) == (30, 50)
    assert "sem_seg_file_name" not in ours and "sem_seg" not in ours


def test_unreadable_image_is_named(cfg, record, tmp_path):
    (tmp_path / "i.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InputFileError, match=f"Cannot read image {tmp_path / 'i.png'}"):
        GSNetTestDatasetMapper(cfg)(record)
