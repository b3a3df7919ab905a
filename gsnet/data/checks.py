"""Checks of a registered GSNet dataset on disk (the logic behind tools/check_datasets.py).

:func:`check_dataset` looks at a dataset's folders as registered (``image_root``,
``sem_seg_root``), pairs images with labels, and reads every pair: images must open, labels
must be single-channel, hold only class indices of the metadata or the ignore label (after the
dataset's label map, if it has one), and have their image's size.
"""

import logging
import os
from dataclasses import dataclass, field

import numpy as np
from detectron2.data import MetadataCatalog
from PIL import Image
from tqdm import tqdm

from .datasets import (
    get_dataset_spec,
    invalid_label_values,
    list_image_label_pairs,
    remap_labels,
)

logger = logging.getLogger(__name__)

__all__ = ["DatasetReport", "check_dataset"]

# How many file names a problem lists.
_MAX_NAMES_SHOWN = 5


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found.

    Attributes:
        name: the registered dataset name.
        image_root, sem_seg_root: its folders.
        num_images, num_labels, num_pairs: files with the dataset's extensions, and pairs.
        problems: one sentence per problem; empty when the dataset is usable.
    """

    name: str
    image_root: str
    sem_seg_root: str
    num_images: int = 0
    num_labels: int = 0
    num_pairs: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems

    def summary(self):
        """A few lines: counts, folders and every problem."""
        status = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [
            f"{self.name}: {status}; {self.num_images} images, {self.num_labels} labels, "
            f"{self.num_pairs} pairs",
            f"  images: {self.image_root}",
            f"  labels: {self.sem_seg_root}",
        ]
        return "\n".join(lines + [f"  - {problem}" for problem in self.problems])


def _names(files):
    shown = ", ".join(os.path.basename(f) for f in files[:_MAX_NAMES_SHOWN])
    return shown + (", ..." if len(files) > _MAX_NAMES_SHOWN else "")


def _count_files(folder, ext):
    return sum(1 for f in os.listdir(folder) if f.endswith("." + ext))


def check_dataset(name, *, progress=False):
    """Check one registered GSNet dataset.

    Args:
        name (str): a registered name of the table (e.g. "FloodNet") or of a descriptor.
        progress (bool): show a tqdm progress bar over the pairs.

    Returns:
        DatasetReport
    """
    spec = get_dataset_spec(name)
    meta = MetadataCatalog.get(name)
    report = DatasetReport(name=name, image_root=meta.image_root, sem_seg_root=meta.sem_seg_root)
    for folder, ext, what in (
        (meta.image_root, spec.image_ext, "image"),
        (meta.sem_seg_root, spec.label_ext, "label"),
    ):
        if not os.path.isdir(folder):
            report.problems.append(f"{what} folder {folder} does not exist")
        elif _count_files(folder, ext) == 0:
            report.problems.append(f"{what} folder {folder} holds no *.{ext} file")
    if report.problems:
        return report

    listing = list_image_label_pairs(
        meta.image_root, meta.sem_seg_root, spec.image_ext, spec.label_ext
    )
    report.num_images = _count_files(meta.image_root, spec.image_ext)
    report.num_labels = _count_files(meta.sem_seg_root, spec.label_ext)
    report.num_pairs = len(listing.pairs)
    if listing.images_without_label:
        report.problems.append(
            f"{len(listing.images_without_label)} image(s) without a label: "
            f"{_names(listing.images_without_label)}"
        )
    if listing.labels_without_image:
        report.problems.append(
            f"{len(listing.labels_without_image)} label(s) without an image: "
            f"{_names(listing.labels_without_image)}"
        )

    unreadable, multi_channel, size_mismatch, bad_value_files = [], [], [], []
    bad_values = set()
    pairs = tqdm(listing.pairs, desc=name, unit="pair", disable=not progress)
    for image_file, label_file in pairs:
        try:
            with Image.open(image_file) as image:
                image_size = image.size
            with Image.open(label_file) as label_image:
                label_size = label_image.size
                label = remap_labels(np.asarray(label_image), spec.label_mapping)
        except OSError as e:
            unreadable.append(str(e))
            continue
        if label.ndim != 2:
            multi_channel.append(label_file)
            continue
        if image_size != label_size:
            size_mismatch.append(
                f"{os.path.basename(label_file)} {label_size[0]}x{label_size[1]} vs image "
                f"{image_size[0]}x{image_size[1]}"
            )
        values = invalid_label_values(label, len(meta.stuff_classes), meta.ignore_label)
        if values:
            bad_values.update(values)
            bad_value_files.append(label_file)

    if unreadable:
        report.problems.append(
            f"{len(unreadable)} pair(s) cannot be read: {'; '.join(unreadable[:_MAX_NAMES_SHOWN])}"
        )
    if multi_channel:
        report.problems.append(
            f"{len(multi_channel)} label(s) have several channels (a label must be a "
            f"single-channel image of class indices): {_names(multi_channel)}"
        )
    if size_mismatch:
        report.problems.append(
            f"{len(size_mismatch)} label(s) differ in size from their image (W x H): "
            f"{'; '.join(size_mismatch[:_MAX_NAMES_SHOWN])}"
        )
    if bad_value_files:
        report.problems.append(
            f"{len(bad_value_files)} label(s) hold values {sorted(bad_values)[:20]} that are "
            f"neither a class index (0..{len(meta.stuff_classes) - 1}) nor the ignore label "
            f"{meta.ignore_label}: {_names(bad_value_files)}"
        )
    logger.info("Checked %s: %s", name, "OK" if report.ok else f"{len(report.problems)} problems")
    return report
