"""The built-in datasets: one table and one register function.

GSNet trains on LandDiscover50K and is evaluated, without fine-tuning, on four remote-sensing
test sets (the paper's protocol, ``benchmark="GSNet"``). The table also holds the sets of two
protocols that later work reports: OVRSISBench (RSKT-Seg, Pi-Seg: train on DLRSD or iSAID, test
on eight sets, ``benchmark="OVRSISBench"``) and OpenEarthMap as SegEarth-OV evaluates it
(``benchmark="SegEarth-OV"``); datasets/README.md gives each one's source and preparation.

Each row of :data:`GSNET_DATASETS` gives a registered name, its folders under the dataset root
(``$DETECTRON2_DATASETS``, default ``datasets`` relative to the current directory), its file
extensions, its class-name JSON in the repository's ``datasets/`` folder and its ignore label.
Importing this module registers every row, as Detectron2's builtin datasets do;
:func:`register_gsnet_datasets` re-registers them under another root. Datasets of one's own
are described by a descriptor file instead (:mod:`gsnet.data.descriptors`) and registered by
:func:`register_dataset` like a row.

Metadata (the keys Detectron2 reads, plus ``class_json``):

- ``stuff_classes``: the EVALUATION class list. It is the JSON list, except for two documented
  exceptions kept from the published code: FLAIR spells its 2nd and 3rd classes with spaces
  ("pervious surface", "impervious surface") and appends "other" (13 classes, label 12 =
  "other" is ignored); Potsdam appends "clutter" (6 classes, label 5 = "clutter" is ignored).
- ``class_json``: absolute path of the JSON giving the MODEL's vocabulary for the dataset (for a
  descriptor's dataset: the descriptor, which ``load_class_names`` reads as its class list). The
  model predicts len(JSON) channels, always a prefix of ``stuff_classes``.
- ``ignore_label``: LandDiscover50K 0 ("background"), FloodNet 0 ("Background": predicted by the
  model but ignored in the ground truth), FLAIR 12, FAST 255, Potsdam 5; 255 for every
  OVRSISBench set and OpenEarthMap (their label files hold 0..T-1 and at most 255).
- ``label_mapping``: only for a dataset whose label files hold other values than its class indices:
  {file value: class index or ignore label}; values not listed are kept.
- ``image_root``, ``sem_seg_root``, ``evaluator_type`` ("sem_seg").

Images and labels are paired by file name without extension, in the folder itself (no
sub-folders). An image without a label, or a label without an image, is an error, not silently
dropped. FAST's labels are read from ``FAST/val/semlabels``, or from ``FAST/val/semlabels/gray``
when that sub-folder holds them (as in the downloaded SAMRS archive; the published code
expected the gray/ folder under a SAMRS/ parent).
"""

import functools
import logging
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import InputFileError, MissingFileError
from .class_names import CLASS_JSON_DIR, load_class_names

logger = logging.getLogger(__name__)

__all__ = [
    "GSNET_DATASETS",
    "DatasetSpec",
    "PairListing",
    "benchmark_datasets",
    "dataset_root_from_env",
    "expected_tree",
    "get_dataset_spec",
    "invalid_label_values",
    "list_image_label_pairs",
    "load_sem_seg_dataset",
    "class_lists",
    "register_dataset",
    "register_gsnet_datasets",
    "remap_labels",
]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the table.

    Attributes:
        name: the registered name (DATASETS.TRAIN / DATASETS.TEST entries).
        image_dir, label_dir: folders relative to the dataset root.
        image_ext, label_ext: file extensions without the dot.
        class_json: file name of the class list in the repository's ``datasets/`` folder (a
            descriptor's: the descriptor file's absolute path).
        num_json_classes: the number of names the published JSON holds (checked on load).
        ignore_label: the label value ignored in evaluation (and, for the training set, the
            value the published configuration ignores in training).
        metadata_renames: (JSON spelling, metadata spelling) pairs where the published
            evaluation metadata spells a class differently from the JSON.
        extra_classes: metadata-only classes appended after the JSON's (never predicted).
        label_subdir: a sub-folder of ``label_dir`` that holds the labels in some downloads;
            used when it exists and holds label files.
        benchmark: the protocol the dataset belongs to: "GSNet" (the paper's five),
            "OVRSISBench", "SegEarth-OV", or "descriptor" (a dataset of one's own).
        label_mapping: (file value, class index or ignore label) pairs, for label files whose values
            are not the class indices; values not listed are kept.
    """

    name: str
    image_dir: str
    label_dir: str
    image_ext: str
    label_ext: str
    class_json: str
    num_json_classes: int
    ignore_label: int
    metadata_renames: tuple = ()
    extra_classes: tuple = ()
    label_subdir: str = ""
    benchmark: str = "GSNet"
    label_mapping: tuple = ()


GSNET_DATASETS = (
    DatasetSpec(
        name="LandDiscover_50K",
        image_dir="LandDiscover50K/TR_Image",
        label_dir="LandDiscover50K/GT_ID",
        image_ext="png",
        label_ext="png",
        class_json="landdiscover.json",
        num_json_classes=40,
        ignore_label=0,
    ),
    DatasetSpec(
        name="FloodNet",
        image_dir="FloodNet/val+test/img",
        label_dir="FloodNet/val+test/lbl",
        image_ext="jpg",
        label_ext="png",
        class_json="floodnet.json",
        num_json_classes=10,
        ignore_label=0,
    ),
    DatasetSpec(
        name="FLAIR_test",
        image_dir="FLAIR/test/image",
        label_dir="FLAIR/test/mask",
        image_ext="png",
        label_ext="png",
        class_json="flair.json",
        num_json_classes=12,
        ignore_label=12,
        metadata_renames=(
            ("pervious-surface", "pervious surface"),
            ("impervious-surface", "impervious surface"),
        ),
        extra_classes=("other",),
    ),
    DatasetSpec(
        name="FAST_val",
        image_dir="FAST/val/images",
        label_dir="FAST/val/semlabels",
        image_ext="png",
        label_ext="png",
        class_json="fast.json",
        num_json_classes=37,
        ignore_label=255,
        label_subdir="gray",
    ),
    DatasetSpec(
        name="potsdam_all",
        image_dir="PotsdamSplit/img_dir/val",
        label_dir="PotsdamSplit/ann_dir/val",
        image_ext="png",
        label_ext="png",
        class_json="potsdam.json",
        num_json_classes=5,
        ignore_label=5,
        extra_classes=("clutter",),
    ),
    # OVRSISBench (RSKT-Seg's registration: names, folders, extensions and ignore label as
    # there; class lists as its evaluation's TEST_CLASS_JSON files).
    DatasetSpec(
        name="DLRSD_train_sem_seg",
        image_dir="DLRSD_split/train/imgs",
        label_dir="DLRSD_split/train/D2masks",
        image_ext="jpg",
        label_ext="png",
        class_json="ovrsisbench/dlrsd.json",
        num_json_classes=17,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="DLRSD_val_sem_seg",
        image_dir="DLRSD_split/val/imgs",
        label_dir="DLRSD_split/val/D2masks",
        image_ext="jpg",
        label_ext="png",
        class_json="ovrsisbench/dlrsd.json",
        num_json_classes=17,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="DLRSD_all_sem_seg",
        image_dir="DLRSD/imgs",
        label_dir="DLRSD/D2masks",
        image_ext="jpg",
        label_ext="png",
        class_json="ovrsisbench/dlrsd.json",
        num_json_classes=17,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="iSAID_train_sem_seg",
        image_dir="iSAID_split/train/imgs",
        label_dir="iSAID_split/train/D2masks",
        image_ext="png",
        label_ext="png",
        class_json="ovrsisbench/isaid.json",
        num_json_classes=15,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="iSAID_val_sem_seg",
        image_dir="iSAID_split/val/imgs",
        label_dir="iSAID_split/val/D2masks",
        image_ext="png",
        label_ext="png",
        class_json="ovrsisbench/isaid.json",
        num_json_classes=15,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="iSAID_all_sem_seg",
        image_dir="iSAID/imgs",
        label_dir="iSAID/D2masks",
        image_ext="png",
        label_ext="png",
        class_json="ovrsisbench/isaid.json",
        num_json_classes=15,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="Potsdam_all_sem_seg",
        image_dir="Potsdam/imgs",
        label_dir="Potsdam/D2masks",
        image_ext="png",
        label_ext="png",
        class_json="ovrsisbench/potsdam.json",
        num_json_classes=6,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="Vaihingen_all_sem_seg",
        image_dir="Vaihingen/imgs",
        label_dir="Vaihingen/D2masks",
        image_ext="png",
        label_ext="png",
        class_json="ovrsisbench/vaihingen.json",
        num_json_classes=6,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="LoveDA_all_sem_seg",
        image_dir="LoveDA/images_png",
        label_dir="LoveDA/masks_png",
        image_ext="png",
        label_ext="png",
        class_json="ovrsisbench/loveda.json",
        num_json_classes=8,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="uavid_all_sem_seg",
        image_dir="uavid/Images",
        label_dir="uavid/Labels",
        image_ext="png",
        label_ext="png",
        class_json="ovrsisbench/uavid.json",
        num_json_classes=8,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="UDD5_all_sem_seg",
        image_dir="UDD5/all/src",
        label_dir="UDD5/all/gt",
        image_ext="JPG",
        label_ext="png",
        class_json="ovrsisbench/udd5.json",
        num_json_classes=5,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    DatasetSpec(
        name="VDD_all_sem_seg",
        image_dir="VDD/src",
        label_dir="VDD/gt",
        image_ext="JPG",
        label_ext="png",
        class_json="ovrsisbench/vdd.json",
        num_json_classes=7,
        ignore_label=255,
        benchmark="OVRSISBench",
    ),
    # OpenEarthMap (without its xBD part), validation split, as SegEarth-OV evaluates it.
    DatasetSpec(
        name="openearthmap_val",
        image_dir="OpenEarthMap/img_dir/val",
        label_dir="OpenEarthMap/ann_dir/val",
        image_ext="tif",
        label_ext="tif",
        class_json="openearthmap.json",
        num_json_classes=9,
        ignore_label=255,
        benchmark="SegEarth-OV",
    ),
)

# How many file names an error message lists.
_MAX_NAMES_SHOWN = 5


# Datasets registered by register_dataset beyond the table (descriptors), by name.
_EXTRA_SPECS = {}


def get_dataset_spec(name):
    """The row of a registered name: the table's, or a descriptor's (KeyError naming the known
    ones otherwise)."""
    for spec in GSNET_DATASETS:
        if spec.name == name:
            return spec
    if name in _EXTRA_SPECS:
        return _EXTRA_SPECS[name]
    known = ", ".join([spec.name for spec in GSNET_DATASETS] + list(_EXTRA_SPECS))
    raise KeyError(f"'{name}' is not a GSNet dataset; known datasets: {known}.")


def benchmark_datasets(benchmark):
    """The registered names of one benchmark of the table ("GSNet", "OVRSISBench", ...)."""
    return [spec.name for spec in GSNET_DATASETS if spec.benchmark == benchmark]


def dataset_root_from_env():
    """The dataset root: ``$DETECTRON2_DATASETS``, default ``datasets`` (as Detectron2)."""
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def class_lists(spec):
    """The class lists of a dataset: the model's vocabulary and the evaluation metadata's.

    Returns:
        (list[str], list[str]): the JSON's names (the model's vocabulary) and the metadata's.

    Raises:
        ValueError: the JSON does not hold the published number of names, or lacks a name that
            the metadata respells.
    """
    json_file = CLASS_JSON_DIR / spec.class_json
    names = load_class_names(json_file)
    if len(names) != spec.num_json_classes:
        raise InputFileError(
            f"{json_file} holds {len(names)} class names; dataset {spec.name} has "
            f"{spec.num_json_classes} (the published list). Restore the published file."
        )
    renames = dict(spec.metadata_renames)
    missing = sorted(set(renames) - set(names))
    if missing:
        raise InputFileError(
            f"{json_file} lacks {missing}, which the {spec.name} metadata respells. Restore the "
            "published file."
        )
    return names, [renames.get(name, name) for name in names] + list(spec.extra_classes)


def _label_root(spec, root):
    """The label folder of a dataset under ``root`` (FAST: ``gray/`` when it holds labels)."""
    label_root = os.path.join(root, spec.label_dir)
    if spec.label_subdir:
        subdir = os.path.join(label_root, spec.label_subdir)
        if os.path.isdir(subdir) and any(
            f.endswith("." + spec.label_ext) for f in os.listdir(subdir)
        ):
            return subdir
    return label_root


def _label_description(spec):
    """One line saying which label values a dataset's label files hold."""
    _, stuff_classes = class_lists(spec)
    text = f"labels 0..{len(stuff_classes) - 1}"
    if spec.ignore_label < len(stuff_classes):
        return text + f", {spec.ignore_label} = '{stuff_classes[spec.ignore_label]}' is ignored"
    return text + f", {spec.ignore_label} = unlabelled (ignored)"


def expected_tree(root, names=None):
    """The documented folder layout, as text for error messages.

    Args:
        root (str): the dataset root to show.
        names (list[str] or None): registered names to show; None shows the whole table.

    Returns:
        str: one line per folder, e.g. ``"  FloodNet/val+test/img/*.jpg   FloodNet images"``.
    """
    specs = [get_dataset_spec(n) for n in names] if names else list(GSNET_DATASETS)
    rows = []
    for spec in specs:
        label_path = f"{spec.label_dir}/*.{spec.label_ext}"
        if spec.label_subdir:
            label_path += f" (or {spec.label_dir}/{spec.label_subdir}/*.{spec.label_ext})"
        rows.append((f"{spec.image_dir}/*.{spec.image_ext}", f"{spec.name} images"))
        rows.append((label_path, f"{spec.name} {_label_description(spec)}"))
    width = max(len(path) for path, _ in rows) + 2
    lines = [f"{root}/  ($DETECTRON2_DATASETS)"]
    lines += [f"  {path.ljust(width)}{what}" for path, what in rows]
    return "\n".join(lines)


@dataclass
class PairListing:
    """Images and labels of two folders, paired by file name without extension.

    Attributes:
        pairs: (image path, label path), sorted by name.
        images_without_label, labels_without_image: file names (no folder) left unpaired.
    """

    pairs: list
    images_without_label: list
    labels_without_image: list


def _files_by_stem(folder, ext):
    suffix = "." + ext
    return {f[: -len(suffix)]: f for f in os.listdir(folder) if f.endswith(suffix)}


def list_image_label_pairs(image_root, sem_seg_root, image_ext, label_ext):
    """Pair the images of ``image_root`` with the labels of ``sem_seg_root``.

    Both folders must exist (FileNotFoundError otherwise). Only files directly in the folders
    with the given extensions count.

    Returns:
        PairListing
    """
    images = _files_by_stem(image_root, image_ext)
    labels = _files_by_stem(sem_seg_root, label_ext)
    pairs = [
        (os.path.join(image_root, images[stem]), os.path.join(sem_seg_root, labels[stem]))
        for stem in sorted(images.keys() & labels.keys())
    ]
    return PairListing(
        pairs=pairs,
        images_without_label=sorted(images[s] for s in images.keys() - labels.keys()),
        labels_without_image=sorted(labels[s] for s in labels.keys() - images.keys()),
    )


def _describe_other_files(folder, ext):
    """' It holds 3 other entries (.JPG: 3), ...' for a folder without ``*.ext`` files."""
    others = Counter(os.path.splitext(f)[1] or "(no extension)" for f in os.listdir(folder))
    if not others:
        return " It is empty."
    counts = ", ".join(f"{suffix}: {n}" for suffix, n in others.most_common())
    return f" It holds {sum(others.values())} other entries ({counts}), no *.{ext} file."


def _folder_problem(folder, ext):
    """Why ``folder`` cannot supply ``*.ext`` files, or None when it can."""
    if not os.path.isdir(folder):
        return f"folder {folder} does not exist."
    if not any(f.endswith("." + ext) for f in os.listdir(folder)):
        return f"folder {folder} holds no *.{ext} file." + _describe_other_files(folder, ext)
    return None


def _list_names(names):
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (", ..." if len(names) > _MAX_NAMES_SHOWN else "")


def load_sem_seg_dataset(spec, root, image_root, sem_seg_root):
    """The dataset function registered for each dataset (called lazily by Detectron2).

    Args:
        spec (DatasetSpec): the dataset's table row.
        root (str): the dataset root it was registered under (for messages).
        image_root, sem_seg_root (str): its image and label folders.

    Returns:
        list[dict]: one ``{"file_name", "sem_seg_file_name"}`` dict per image, sorted by name
        (like Detectron2's ``load_sem_seg``, which silently drops unpaired files).

    Raises:
        FileNotFoundError: a folder is missing or holds no file of its extension; the message
            shows the expected tree.
        ValueError: some images have no label or some labels no image (count and first names).
    """
    name, image_ext, label_ext = spec.name, spec.image_ext, spec.label_ext
    for folder, ext in ((image_root, image_ext), (sem_seg_root, label_ext)):
        problem = _folder_problem(folder, ext)
        if problem:
            if spec.benchmark == "descriptor":
                raise MissingFileError(
                    f"Dataset '{name}': {problem}\nIts descriptor {spec.class_json} expects "
                    f"*.{image_ext} images in {image_root} and *.{label_ext} labels in "
                    f"{sem_seg_root}; fix the fields 'images', 'labels', 'image_suffix' or "
                    f"'label_suffix', then run: python tools/check_datasets.py --descriptor "
                    f"{spec.class_json}"
                )
            raise MissingFileError(
                f"Dataset '{name}': {problem}\nExpected layout:\n{expected_tree(root, [name])}\n"
                "Set $DETECTRON2_DATASETS to the folder holding the datasets; see "
                f"datasets/README.md and run: python tools/check_datasets.py --only {name}"
            )
    listing = list_image_label_pairs(image_root, sem_seg_root, image_ext, label_ext)
    problems = []
    if listing.images_without_label:
        problems.append(
            f"{len(listing.images_without_label)} image(s) in {image_root} have no "
            f"*.{label_ext} label in {sem_seg_root}: {_list_names(listing.images_without_label)}"
        )
    if listing.labels_without_image:
        problems.append(
            f"{len(listing.labels_without_image)} label(s) in {sem_seg_root} have no "
            f"*.{image_ext} image in {image_root}: {_list_names(listing.labels_without_image)}"
        )
    if problems:
        raise InputFileError(
            f"Dataset '{name}': images and labels do not pair up (they are matched by file name "
            "without extension).\n" + "\n".join(problems) + "\nAdd or remove the files; "
            f"python tools/check_datasets.py --only {name} lists every problem."
        )
    logger.info("Dataset '%s': %d images from %s", name, len(listing.pairs), image_root)
    # The training mapper reads a record's label map (the evaluator reads the metadata's).
    extra = {"label_mapping": spec.label_mapping} if spec.label_mapping else {}
    return [
        {"file_name": image, "sem_seg_file_name": label, **extra} for image, label in listing.pairs
    ]


def remap_labels(label, label_mapping):
    """Replace the file values of a label by their class indices.

    Args:
        label (ndarray): (H, W) label values as read from the file.
        label_mapping (tuple or dict): (file value, class index or ignore label) pairs; values not
            listed are kept. Empty: the label is returned as it is.

    Returns:
        ndarray: (H, W), a new array when anything is mapped.
    """
    pairs = label_mapping.items() if isinstance(label_mapping, dict) else label_mapping
    if not pairs:
        return label
    mapped = label.copy()
    for file_value, class_index in pairs:
        mapped[label == file_value] = class_index
    return mapped


def register_dataset(spec, root):
    """Register one dataset (a table row or a descriptor's) under ``root``, replacing an earlier
    registration of its name.

    Args:
        spec (DatasetSpec): the dataset; absolute folders and class file are used as they are.
        root (str): the dataset root its relative folders are under.

    Returns:
        str: the registered name.
    """
    json_names, stuff_classes = class_lists(spec)
    image_root = os.path.join(root, spec.image_dir)
    sem_seg_root = _label_root(spec, root)
    if spec.name in DatasetCatalog.list():
        DatasetCatalog.remove(spec.name)
    if spec.name in MetadataCatalog.list():
        MetadataCatalog.remove(spec.name)
    DatasetCatalog.register(
        spec.name,
        functools.partial(load_sem_seg_dataset, spec, root, image_root, sem_seg_root),
    )
    metadata = MetadataCatalog.get(spec.name)
    metadata.set(
        stuff_classes=stuff_classes,
        ignore_label=spec.ignore_label,
        evaluator_type="sem_seg",
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        class_json=str(CLASS_JSON_DIR / spec.class_json),
    )
    if spec.label_mapping:
        metadata.set(label_mapping=dict(spec.label_mapping))
    if spec not in GSNET_DATASETS:
        _EXTRA_SPECS[spec.name] = spec
    logger.debug(
        "Registered %s: %d model classes, %d evaluation classes, images %s, labels %s",
        spec.name,
        len(json_names),
        len(stuff_classes),
        image_root,
        sem_seg_root,
    )
    return spec.name


def register_gsnet_datasets(root):
    """Register every dataset of the table under ``root``, replacing earlier registrations.

    Args:
        root (str): the folder holding LandDiscover50K/, FloodNet/, FLAIR/, FAST/,
            PotsdamSplit/ and the other benchmarks' folders (nothing is read until a dataset is
            used, except whether FAST's gray/ label folder exists).

    Returns:
        list[str]: the registered names, in table order.
    """
    return [register_dataset(spec, root) for spec in GSNET_DATASETS]


register_gsnet_datasets(dataset_root_from_env())


def invalid_label_values(label, num_classes, ignore_value):
    """The label values that are neither a class index nor the ignore value: the one label-value
    check (the training mapper, the evaluator and tools/check_datasets.py call it where they
    read a label file).

    Args:
        label (ndarray): (H, W) class indices (after :func:`remap_labels`).
        num_classes (int): valid class indices are 0..num_classes-1.
        ignore_value (int): the value of pixels without a class.

    Returns:
        list[int]: the distinct invalid values, ascending; empty when the label is valid.
    """
    invalid = ((label < 0) | (label >= num_classes)) & (label != ignore_value)
    return np.unique(label[invalid]).astype(int).tolist() if invalid.any() else []
