"""Data path: a dataset dict -> an augmented, padded ``{"image", "sem_seg"}`` training sample,
or a resized ``{"image"}`` test sample.

The training mapper follows Mask2Former's semantic-segmentation dataset mapper (used by CAT-Seg
and the published GSNet), without the per-class instance masks, which GSNet never reads. The
test mapper is Detectron2's ``DatasetMapper(cfg, is_train=False)`` for the image. Both name the
file they cannot read (:func:`read_image_file`), and the training mapper refuses labels that do
not fit the image or hold values that are neither a class index nor the ignore value.

Shapes: the output image is (3, H, W) uint8-valued and the label (H, W) int64, with H x W the
crop size padded to ``INPUT.SIZE_DIVISIBILITY`` (384 x 384 in the paper configuration).
"""

import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from torch.nn import functional as F

from ..errors import ConfigError, InputFileError
from .datasets import invalid_label_values, remap_labels

logger = logging.getLogger(__name__)

__all__ = ["GSNetSemanticDatasetMapper", "GSNetTestDatasetMapper", "read_image_file"]

# Value of the padded image pixels (raw 0-255 scale, before normalisation), as published.
_IMAGE_PAD_VALUE = 128
_CHECK_DATASETS = "python tools/check_datasets.py lists every such file of a dataset."


def read_image_file(file_name, image_format=None, *, what="image"):
    """Detectron2's ``read_image`` (PIL, EXIF orientation applied) with an error naming the file.

    Args:
        file_name (str): the file.
        image_format (str or None): as for ``read_image`` ("RGB", "L", None: as stored).
        what (str): "image" or "label", for the message.

    Returns:
        np.ndarray: (H, W, C) or (H, W), as ``read_image`` returns it.

    Raises:
        InputFileError: the file is missing, truncated, corrupt or not an image (PIL raises
            OSError, SyntaxError, DecompressionBombError, ... depending on the damage).
    """
    try:
        return utils.read_image(file_name, format=image_format)
    except Exception as error:
        raise InputFileError(
            f"Cannot read {what} {file_name}: {type(error).__name__}: {error}. Replace or remove "
            f"the file (and its {'label' if what == 'image' else 'image'}). {_CHECK_DATASETS}"
        ) from error


class GSNetSemanticDatasetMapper:
    """Read, augment and pad one training sample.

    Steps (spec sections 1 and 12):

    1. Read the image with Detectron2's ``read_image`` (PIL, EXIF orientation applied) in
       ``INPUT.FORMAT``; read the label raw (palette indices for P-mode files) as float64, so
       that resizing it uses torch's nearest interpolation, as published.
    2. Apply the augmentations: shortest-edge resize, random crop (optionally constrained by
       the area of a single category), SSD colour jitter, horizontal flip.
    3. Convert to tensors and pad at the bottom/right to exactly ``pad_size`` x ``pad_size``
       (image value 128, label ``ignore_value``).

    The ignore value: ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` is the ONE training ignore value, used
    for the crop constraint, the label padding and the loss. The paper configuration sets it to
    0, LandDiscover50K's metadata ignore label, so the "background" class (label 0) is not
    supervised and padding is ignored. Setting it to 255 (Detectron2's default) supervises
    LandDiscover50K's background class, and padding stays ignored. (The published mapper padded
    with the training set's metadata ignore label, which equals IGNORE_VALUE in the paper
    configuration.)
    """

    @configurable
    def __init__(self, *, augmentations, image_format, ignore_value, pad_size, num_classes=None):
        """
        Args:
            augmentations (list[Augmentation]): applied in order to the image and the label.
            image_format (str): the image format for ``read_image`` ("RGB" in GSNet's configs).
            ignore_value (int): label value of padded pixels (see the class docstring).
            pad_size (int): pad samples at the bottom/right to ``pad_size`` x ``pad_size``;
                <= 0 disables padding. A sample larger than this is an error (the published
                code then silently cropped it through negative padding).
            num_classes (int or None): label values must be 0..num_classes-1 or
                ``ignore_value``; None skips the check. Checked here, where the file is known,
                rather than in the loss.
        """
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_value = ignore_value
        self.pad_size = pad_size
        self.num_classes = num_classes
        logger.info("[%s] training augmentations: %s", type(self).__name__, augmentations)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        if not is_train:
            raise ValueError(
                f"{cls.__name__} maps training samples only; for evaluation use Detectron2's "
                "DatasetMapper(cfg, is_train=False)."
            )
        augmentations = [
            T.ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN,
                cfg.INPUT.MAX_SIZE_TRAIN,
                cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            )
        ]
        if cfg.INPUT.CROP.ENABLED:
            augmentations.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                )
            )
        if cfg.INPUT.COLOR_AUG_SSD:
            augmentations.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
        augmentations.append(T.RandomFlip())
        return {
            "augmentations": augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "pad_size": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one record of a registered dataset: "file_name" and
                "sem_seg_file_name" (and optionally "height", "width", and "label_mapping": file
                value -> class index pairs, see :func:`gsnet.data.datasets.remap_labels`).

        Returns:
            dict: a copy of the record without "sem_seg_file_name", with "height"/"width" of
            the file, "image" (3, H, W) uint8 tensor and "sem_seg" (H, W) int64 tensor.
        """
        dataset_dict = dict(dataset_dict)
        image_file = dataset_dict["file_name"]
        label_file = dataset_dict.pop("sem_seg_file_name", None)
        label_mapping = dataset_dict.pop("label_mapping", ())
        if label_file is None:
            raise InputFileError(
                f"Training record of {image_file} has no 'sem_seg_file_name'; semantic "
                "segmentation training needs a label file for every image."
            )
        image = read_image_file(image_file, self.image_format)
        utils.check_image_size(dataset_dict, image)
        # Float64 so that resizing uses torch's nearest interpolation (PyTorch has no uint16).
        label = read_image_file(label_file, what="label").astype("double")
        label = remap_labels(label, label_mapping)
        if label.ndim != 2:
            raise InputFileError(
                f"Label {label_file} has {label.shape[2]} channels; a label must be a "
                "single-channel image of class indices (a colour-coded label must be "
                "converted first; for FAST use the semlabels/gray files)."
            )
        if label.shape != image.shape[:2]:
            raise InputFileError(
                f"Label {label_file} is {label.shape[1]} x {label.shape[0]} (W x H) but its "
                f"image {image_file} is {image.shape[1]} x {image.shape[0]}; they must match. "
                + _CHECK_DATASETS
            )
        self._check_label_values(label, label_file)

        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        label = torch.as_tensor(aug_input.sem_seg.astype("long"))

        if self.pad_size > 0:
            height, width = label.shape
            if height > self.pad_size or width > self.pad_size:
                raise ConfigError(
                    f"Augmented sample of {image_file} is {width} x {height}, larger than the "
                    f"padding size {self.pad_size} (INPUT.SIZE_DIVISIBILITY); enable "
                    "INPUT.CROP with a crop no larger than it, or raise the padding size."
                )
            padding = [0, self.pad_size - width, 0, self.pad_size - height]
            image = F.pad(image, padding, value=_IMAGE_PAD_VALUE).contiguous()
            label = F.pad(label, padding, value=self.ignore_value).contiguous()

        dataset_dict["image"] = image
        dataset_dict["sem_seg"] = label
        return dataset_dict

    def _check_label_values(self, label, label_file):
        if self.num_classes is None:
            return
        values = invalid_label_values(label, self.num_classes, self.ignore_value)
        if values:
            raise InputFileError(
                f"Label {label_file} holds values {values[:10]} that are neither a class index "
                f"(0..{self.num_classes - 1}, MODEL.SEM_SEG_HEAD.NUM_CLASSES) nor the ignore "
                f"value {self.ignore_value} (MODEL.SEM_SEG_HEAD.IGNORE_VALUE). Fix the label, or "
                "the config if it does not match the dataset. " + _CHECK_DATASETS
            )


class GSNetTestDatasetMapper:
    """Test-time mapping of one image: Detectron2's ``DatasetMapper(cfg, is_train=False)`` (same
    reader, same shortest-edge resize) without reading the label, which the evaluator reads
    itself, and with an error naming a file that cannot be read.

    Shapes: the output image is (3, H, W) uint8-valued, resized so that its short side is
    ``INPUT.MIN_SIZE_TEST`` (long side at most ``INPUT.MAX_SIZE_TEST``).
    """

    @configurable
    def __init__(self, *, augmentations, image_format):
        """
        Args:
            augmentations (list[Augmentation]): applied in order to the image.
            image_format (str): the image format for ``read_image``.
        """
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg):
        return {
            "augmentations": utils.build_augmentation(cfg, is_train=False),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one record of a registered dataset ("file_name", ...).

        Returns:
            dict: a copy of the record without "sem_seg_file_name", with "height"/"width" of
            the file and "image", a (3, H, W) uint8 tensor.
        """
        dataset_dict = dict(dataset_dict)
        dataset_dict.pop("sem_seg_file_name", None)
        image = read_image_file(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        dataset_dict["image"] = torch.as_tensor(
            np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
        )
        return dataset_dict
