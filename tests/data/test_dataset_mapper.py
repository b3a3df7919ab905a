"""The training mapper: shapes, crop, padding values, joint image/label transforms, errors."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from PIL import Image

from gsnet.config import add_gsnet_config
from gsnet.data.dataset_mapper import GSNetSemanticDatasetMapper

IGNORE = 255


def make_cfg(*, min_size=24, crop=(32, 32), pad=32, color_aug=True):
    cfg = get_cfg()
    add_gsnet_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.CROP.ENABLED = crop is not None
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = crop or (1, 1)
    cfg.INPUT.COLOR_AUG_SSD = color_aug
    cfg.INPUT.SIZE_DIVISIBILITY = pad
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = IGNORE
    return cfg


@pytest.fixture
def sample(tmp_path):
    """A 30 x 50 (H x W) image: left half red with label 1, right half green with label 2."""
    label = np.ones((30, 50), dtype=np.uint8)
    label[:, 25:] = 2
    image = np.zeros((30, 50, 3), dtype=np.uint8)
    image[label == 1] = (220, 20, 20)
    image[label == 2] = (20, 220, 20)
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(label).save(tmp_path / "label.png")
    return {
        "file_name": str(tmp_path / "image.png"),
        "sem_seg_file_name": str(tmp_path / "label.png"),
    }


def test_output_shapes_and_types(sample):
    out = GSNetSemanticDatasetMapper(make_cfg(), True)(sample)
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.uint8
    assert out["sem_seg"].shape == (32, 32) and out["sem_seg"].dtype == torch.int64
    assert (out["height"], out["width"]) == (30, 50)
    assert "sem_seg_file_name" not in out


def test_padding_values(sample):
    # Shortest edge 24 -> 24 x 40, crop (min(32, 24), 32) = 24 x 32, pad to 32 x 32.
    out = GSNetSemanticDatasetMapper(make_cfg(), True)(sample)
    assert torch.all(out["image"][:, 24:, :] == 128)
    assert torch.all(out["sem_seg"][24:, :] == IGNORE)
    assert set(out["sem_seg"][:24].unique().tolist()) <= {1, 2}


def test_crop_size_without_padding(sample):
    out = GSNetSemanticDatasetMapper(make_cfg(crop=(16, 20), pad=-1), True)(sample)
    assert out["image"].shape == (3, 16, 20)
    assert out["sem_seg"].shape == (16, 20)


def test_resize_only(sample):
    out = GSNetSemanticDatasetMapper(make_cfg(crop=None, pad=-1, color_aug=False), True)(sample)
    assert out["image"].shape == (3, 24, 40)


def test_image_and_label_are_transformed_together(sample):
    mapper = GSNetSemanticDatasetMapper(make_cfg(min_size=30, crop=(30, 30), color_aug=False), True)
    for seed in range(6):  # covers flipped and unflipped crops
        np.random.seed(seed)
        out = mapper(sample)
        image, label = out["image"].int(), out["sem_seg"]
        assert torch.all(image[0][label == 1] > image[1][label == 1])
        assert torch.all(image[1][label == 2] > image[0][label == 2])


def test_label_size_mismatch_names_both_files(sample, tmp_path):
    Image.fromarray(np.ones((30, 49), dtype=np.uint8)).save(tmp_path / "label.png")
    with pytest.raises(ValueError, match=r"label\.png is 49 x 30 .*image\.png is 50 x 30"):
        GSNetSemanticDatasetMapper(make_cfg(), True)(sample)


def test_colour_label_is_refused(sample, tmp_path):
    Image.fromarray(np.ones((30, 50, 3), dtype=np.uint8)).save(tmp_path / "label.png")
    with pytest.raises(ValueError, match="3 channels"):
        GSNetSemanticDatasetMapper(make_cfg(), True)(sample)


def test_sample_larger_than_padding_is_refused(sample):
    mapper = GSNetSemanticDatasetMapper(make_cfg(crop=None, pad=32), True)
    with pytest.raises(ValueError, match="larger than the padding size 32"):
        mapper(sample)


def test_missing_label_file_name(sample):
    del sample["sem_seg_file_name"]
    with pytest.raises(ValueError, match="no 'sem_seg_file_name'"):
        GSNetSemanticDatasetMapper(make_cfg(), True)(sample)


def test_test_time_mapping_is_refused():
    with pytest.raises(ValueError, match="DatasetMapper"):
        GSNetSemanticDatasetMapper(make_cfg(), False)


def test_explicit_arguments(sample):
    mapper = GSNetSemanticDatasetMapper(
        augmentations=[], image_format="RGB", ignore_value=7, pad_size=64
    )
    out = mapper(sample)
    assert out["image"].shape == (3, 64, 64)
    assert torch.all(out["sem_seg"][30:] == 7) and torch.all(out["sem_seg"][:, 50:] == 7)
    assert set(out["sem_seg"][:30, :50].unique().tolist()) == {1, 2}
