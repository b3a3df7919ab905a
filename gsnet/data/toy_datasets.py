"""Small synthetic datasets in the layouts of the built-in datasets, for tests and the toy run.

:func:`make_toy_datasets` writes, under one root, a training set in LandDiscover50K's layout
(40 classes, label 0 = "background", ignored in training) and the four test sets in theirs
(FloodNet's images as .jpg, FAST's labels in semlabels/, FLAIR's "other" = 12, Potsdam's
"clutter" = 5 and FAST's unlabelled 255 as ignore labels), with the real class lists; and every
other row of the table (OVRSISBench's training and test sets, OpenEarthMap) in its layout, drawn
like a test set (its training sets too), with 255 as the unlabelled background.

Each class NAME has one visual pattern: a colour and a texture (flat, horizontal stripes,
vertical stripes or a checker board), plus a little pixel noise. An image is a background
filled with one pattern and a few random rectangles and ellipses, each filled with the pattern
of its class.

Why shared names matter: the toy model's CLIP text tower has random weights, so it can only
recognise a test class whose name, lower-cased as CLIP does, is EXACTLY a training class name;
such a test class gets the SAME pattern as that training class. These shared classes are
FloodNet "Background", "water", "tree", "vehicle", "grass"; FLAIR "water"; FAST "Basketball-
Court", "Bridge", "Roundabout", "Tennis-Court"; Potsdam "tree" (see :func:`shared_classes`).
Test images are mostly made of shared classes (each shape is a shared class with probability
0.7) plus some unshared ones, and the background of a test image is its ignore label (FloodNet
"Background", FLAIR "other", Potsdam "clutter", FAST unlabelled, drawn with the pattern of
"background"). Every class is evaluated honestly, so a trained toy model scores clearly above
chance on the shared classes and near chance on the others. Shapes of training images favour
the shared classes (weight 3 against 1) so that a short toy run learns them.

Training images are ``image_size`` x ``image_size``; test images are ``image_size`` x
``image_size * 5 // 4`` (H x W), so that evaluation sees a non-square size.
"""

import json
import logging
import os
import shutil

import numpy as np
from PIL import Image

from ..errors import ConfigError, OutputExistsError, OutputWriteError
from .class_names import CLASS_JSON_DIR, load_class_names
from .datasets import GSNET_DATASETS, class_lists, get_dataset_spec

logger = logging.getLogger(__name__)

__all__ = ["make_toy_datasets", "shared_classes"]

TRAIN_DATASET = "LandDiscover_50K"
# Written at the root; only a root holding it is ever cleared by make_toy_datasets.
MARKER_FILE = "GSNET_TOY_DATASETS.json"

_COLOUR_LEVELS = (30, 100, 170, 240)  # 4^3 = 64 colours
_NUM_COLOURS = len(_COLOUR_LEVELS) ** 3
_COLOUR_STEP = 27  # odd, so i -> (i * 27) % 64 visits all 64 colours, neighbours far apart
_NUM_TEXTURES = 4
_TEXTURE_PERIOD = 8  # pixels
_TEXTURE_AMPLITUDE = 35
_NOISE_STD = 6.0
_SHARED_PROBABILITY = 0.7  # of a test-image shape being a shared class
_SHARED_TRAIN_WEIGHT = 3.0  # sampling weight of shared classes in training shapes
_SHAPES_PER_IMAGE = (3, 6)  # [low, high)
_JPEG_QUALITY = 95


def _train_names():
    return load_class_names(CLASS_JSON_DIR / get_dataset_spec(TRAIN_DATASET).class_json)


def shared_classes():
    """Test-set classes whose lower-cased name is a training class name.

    Returns:
        dict[str, list[str]]: registered test-set name -> its shared class names (JSON order).
    """
    train = {name.lower() for name in _train_names()}
    return {
        spec.name: [n for n in class_lists(spec)[0] if n.lower() in train]
        for spec in GSNET_DATASETS
        if spec.name != TRAIN_DATASET
    }


def _pattern_ids():
    """Lower-cased class name -> pattern id: training classes 0..39 in JSON order, then every
    other name of the paper's test sets (JSON and metadata spellings) in sorted order, then
    those of the other benchmarks' sets in sorted order (so that adding a benchmark leaves the
    paper's toy sets as they were)."""
    ids = {name.lower(): i for i, name in enumerate(_train_names())}
    for paper in (True, False):
        others = sorted(
            {
                name.lower()
                for spec in GSNET_DATASETS
                if (spec.benchmark == "GSNet") == paper
                for names in class_lists(spec)
                for name in names
                if name.lower() not in ids
            }
        )
        ids.update((name, len(ids) + i) for i, name in enumerate(others))
    return ids


def _render_pattern(pattern_id, height, width, rng):
    """An (H, W, 3) float image of one pattern, with pixel noise."""
    colour_index = (pattern_id * _COLOUR_STEP) % _NUM_COLOURS
    levels = len(_COLOUR_LEVELS)
    colour = np.array(
        [
            _COLOUR_LEVELS[colour_index // levels**2],
            _COLOUR_LEVELS[(colour_index // levels) % levels],
            _COLOUR_LEVELS[colour_index % levels],
        ],
        dtype=np.float64,
    )
    # Patterns that share a colour (ids 64 apart) get different textures.
    texture = (pattern_id + pattern_id // _NUM_COLOURS) % _NUM_TEXTURES
    ys, xs = np.mgrid[0:height, 0:width]
    rows = (ys // (_TEXTURE_PERIOD // 2)) % 2 * 2 - 1
    cols = (xs // (_TEXTURE_PERIOD // 2)) % 2 * 2 - 1
    wave = [np.zeros((height, width)), rows, cols, rows * cols][texture]
    image = colour + _TEXTURE_AMPLITUDE * wave[..., None]
    return image + rng.normal(0.0, _NOISE_STD, size=image.shape)


def _shape_mask(height, width, rng):
    """A random rectangle or ellipse, 1/6 to 1/2 of the image side, as an (H, W) bool mask."""
    side = min(height, width)
    half_h, half_w = rng.uniform(side / 12, side / 4, size=2)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ys, xs = np.mgrid[0:height, 0:width]
    dy, dx = (ys - cy) / half_h, (xs - cx) / half_w
    if rng.random() < 0.5:
        return (np.abs(dy) <= 1) & (np.abs(dx) <= 1)
    return dy**2 + dx**2 <= 1


def _draw_image(height, width, background, shapes, rng):
    """Draw one sample.

    Args:
        background (tuple[int, int]): (pattern id, label value) of the background.
        shapes (list[tuple[int, int]]): (pattern id, label value) of each shape, drawn in order.

    Returns:
        (ndarray, ndarray): (H, W, 3) uint8 image and (H, W) uint8 label.
    """
    pattern, value = background
    image = _render_pattern(pattern, height, width, rng)
    label = np.full((height, width), value, dtype=np.uint8)
    for pattern, value in shapes:
        mask = _shape_mask(height, width, rng)
        image[mask] = _render_pattern(pattern, height, width, rng)[mask]
        label[mask] = value
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _dataset_plan(spec, pattern_ids, shared):
    """What a dataset's images are made of.

    Returns:
        (tuple, list[tuple], ndarray): the background and the classes shapes are drawn from,
        each as (pattern id, label value), and the probability of each shape class. The
        background is the ignore label (drawn like "background" when it names no class).
    """
    json_names, stuff_classes = class_lists(spec)
    ignore = spec.ignore_label
    background_name = stuff_classes[ignore] if ignore < len(stuff_classes) else "background"
    classes = [i for i in range(len(json_names)) if i != ignore]
    if spec.name == TRAIN_DATASET:
        # Only the paper's test sets steer the toy training (its README numbers stay as they
        # were when more benchmarks joined the table).
        shared_names = {
            n.lower()
            for name, names in shared.items()
            if get_dataset_spec(name).benchmark == "GSNet"
            for n in names
        }
        is_shared = [json_names[i].lower() in shared_names for i in classes]
        weights = np.where(is_shared, _SHARED_TRAIN_WEIGHT, 1.0)
    else:
        is_shared = np.array([json_names[i] in shared[spec.name] for i in classes])
        if is_shared.all() or not is_shared.any():
            weights = np.ones(len(classes))
        else:
            weights = np.where(
                is_shared,
                _SHARED_PROBABILITY / is_shared.sum(),
                (1 - _SHARED_PROBABILITY) / (~is_shared).sum(),
            )
    return (
        (pattern_ids[background_name.lower()], ignore),
        [(pattern_ids[json_names[i].lower()], i) for i in classes],
        weights / weights.sum(),
    )


def _prepare_root(root):
    """Create ``root``; clear the dataset folders of an earlier toy run, and refuse to touch
    dataset folders that a toy run did not write."""
    top_folders = sorted({spec.image_dir.split("/")[0] for spec in GSNET_DATASETS})
    present = [f for f in top_folders if os.path.exists(os.path.join(root, f))]
    marker = os.path.join(root, MARKER_FILE)
    if present and not os.path.isfile(marker):
        raise OutputExistsError(
            f"{root} already holds {present}, not written by make_toy_datasets (no {MARKER_FILE}"
            "); refusing to overwrite what may be real data. Choose an empty or new root."
        )
    for folder in present:
        shutil.rmtree(os.path.join(root, folder))
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as error:
        raise OutputWriteError(
            f"Cannot create the dataset root {root}: {error.strerror or error}. Choose a folder "
            "you can write to."
        ) from error


def make_toy_datasets(root, *, num_train=64, num_test=8, image_size=128, seed=0):
    """Write a toy version of every dataset of the table under ``root`` (deterministic given the
    arguments; the paper's five come out as before the other benchmarks were added).

    Args:
        root (str): the dataset root to write (register it with
            ``register_gsnet_datasets(root)`` or ``DETECTRON2_DATASETS=root``). A root that
            holds dataset folders from another source is refused; one from an earlier toy run
            is rewritten.
        num_train (int): training images (LandDiscover50K layout).
        num_test (int): images of each other set (the test sets, and the other benchmarks'
            training sets).
        image_size (int): training images are image_size x image_size; test images
            image_size x image_size * 5 // 4 (H x W).
        seed (int): random seed; each dataset draws from its own stream.

    Returns:
        dict[str, int]: registered dataset name -> number of images written.
    """
    if image_size < 16 or num_train < 1 or num_test < 1:
        raise ConfigError(
            f"make_toy_datasets needs image_size >= 16 and at least one image per set, got "
            f"image_size={image_size}, num_train={num_train}, num_test={num_test}."
        )
    _prepare_root(root)
    # Written first, so that an interrupted run is still recognised as a toy root.
    with open(os.path.join(root, MARKER_FILE), "w") as f:
        arguments = {"num_train": num_train, "num_test": num_test, "image_size": image_size}
        json.dump({**arguments, "seed": seed}, f, indent=2)
    pattern_ids = _pattern_ids()
    shared = shared_classes()
    streams = np.random.SeedSequence(seed).spawn(len(GSNET_DATASETS))
    written = {}
    for spec, stream in zip(GSNET_DATASETS, streams):
        rng = np.random.default_rng(stream)
        is_train = spec.name == TRAIN_DATASET
        count = num_train if is_train else num_test
        height, width = (image_size, image_size if is_train else image_size * 5 // 4)
        background, classes, weights = _dataset_plan(spec, pattern_ids, shared)
        image_dir = os.path.join(root, spec.image_dir)
        label_dir = os.path.join(root, spec.label_dir)
        os.makedirs(image_dir)
        os.makedirs(label_dir)
        for index in range(count):
            picks = rng.choice(len(classes), size=rng.integers(*_SHAPES_PER_IMAGE), p=weights)
            image, label = _draw_image(height, width, background, [classes[i] for i in picks], rng)
            stem = f"toy_{index:05d}"
            image_file = os.path.join(image_dir, f"{stem}.{spec.image_ext}")
            if spec.image_ext.lower() == "jpg":
                Image.fromarray(image).save(image_file, quality=_JPEG_QUALITY)
            else:
                Image.fromarray(image).save(image_file)
            Image.fromarray(label).save(os.path.join(label_dir, f"{stem}.{spec.label_ext}"))
        written[spec.name] = count
    logger.info("Wrote toy datasets under %s: %s", root, written)
    return written
