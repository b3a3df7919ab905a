"""What the web demo (``tools/demo.py``) does with an upload, without the web page.

The page hands over a file and the class names typed by the user; :func:`segment_upload` checks
them, runs a :class:`~gsnet.predictor.Predictor` (the same tiled inference as
``tools/predict.py``) and returns what the page shows: the overlay at the image's size, the
legend, the per-class statistics and the files to download. Every problem a user can fix is a
:class:`DemoInputError` with a one-line message for the page.

Gradio is imported by ``tools/demo.py`` only: this module, like ``import gsnet``, needs the core
dependencies alone.

Shapes: T classes, H x W the uploaded image.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .config import PAPER_TEST_SETS
from .data.datasets import GSNET_DATASETS, class_lists
from .errors import ConfigError, GSNetUserError
from .predictor import (
    ImageReadError,
    draw_overlay,
    label_palette,
    parse_class_names,
    read_image,
    write_label_geotiff,
    write_label_png,
    write_statistics,
)

__all__ = [
    "DEFAULT_MAX_CLASSES",
    "GEOTIFF_SUFFIXES",
    "OVERLAY_MAX_SIDE",
    "QUICKSTART_OUTPUT",
    "UPLOAD_SUFFIXES",
    "DemoInputError",
    "DemoModel",
    "DemoResult",
    "LegendEntry",
    "choose_model",
    "parse_vocabulary",
    "quickstart_examples",
    "segment_upload",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO_ROOT / "configs" / "vitb_384.yaml"
TOY_CONFIG = REPO_ROOT / "configs" / "toy.yaml"
# Where scripts/quickstart.sh trains the toy model by default, and its checkpoint there.
QUICKSTART_OUTPUT = REPO_ROOT / "output" / "toy"
QUICKSTART_WEIGHTS = Path("train") / "model_final.pth"
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
# Every class costs memory in every tile (its text queries, its slice of the cost volume and of
# the scores), and one page serves everyone who opens it: a request with more names is refused
# before it reaches the model. The paper's vocabularies have 5 to 40 classes.
DEFAULT_MAX_CLASSES = 100
# The overlay shown in the page is shrunk to this long side (the label downloads keep the
# image's size); draw_overlay takes it as ``max_side``.
OVERLAY_MAX_SIDE = 2048


class DemoInputError(GSNetUserError, ValueError):
    """An upload or a vocabulary that the demo cannot segment; the message is one line for the
    page."""


# ---------------------------------------------------------------------- the model to serve
@dataclass(frozen=True)
class DemoModel:
    """The config and checkpoint the demo serves.

    Attributes:
        config: the GSNet YAML. weights: the checkpoint.
        note: one line for the page saying which model this is (empty for the user's own).
    """

    config: Path
    weights: Path
    note: str = ""


def choose_model(config=None, weights=None, *, quickstart_output=QUICKSTART_OUTPUT):
    """The model named on the command line, or else the quick start's toy model.

    Args:
        config: a GSNet YAML, default ``configs/vitb_384.yaml`` (the paper model); only with
            ``weights``.
        weights: a checkpoint (ours or the released GSNet file), or None for the toy model that
            ``sh scripts/quickstart.sh`` trains into ``quickstart_output``.
        quickstart_output: the quick start's output folder (its OUTPUT_DIR argument).
    Returns:
        DemoModel.
    Raises:
        ConfigError: ``config`` without ``weights``, a missing file, or no weights and no toy
            model.
    """
    if weights is not None:
        config = Path(config) if config is not None else PAPER_CONFIG
        for kind, path in (("config", config), ("weights", Path(weights))):
            if not path.is_file():
                raise ConfigError(f"The {kind} file {path} does not exist.")
        return DemoModel(config=config, weights=Path(weights))
    if config is not None:
        raise ConfigError(f"--config {config} needs --weights: the checkpoint trained with it.")
    toy_weights = Path(quickstart_output) / QUICKSTART_WEIGHTS
    if not toy_weights.is_file():
        raise ConfigError(
            f"No --weights given and no quick-start toy model at {toy_weights}: pass --weights "
            "model.pth (a GSNet checkpoint, e.g. the released one), or run "
            "`sh scripts/quickstart.sh` to train the toy model."
        )
    return DemoModel(
        config=TOY_CONFIG,
        weights=toy_weights,
        note=(
            f"No --weights given: this page serves the quick start's toy model ({toy_weights}), "
            "trained on synthetic patterns; it knows only the toy classes. Start the demo with "
            "--weights for a real model."
        ),
    )


def quickstart_examples(quickstart_output=QUICKSTART_OUTPUT):
    """Examples for the toy model: the first image of each of the paper's toy test sets that
    ``sh scripts/quickstart.sh`` generated, with that test set's class names.

    Returns:
        list[(Path, str)]: image and comma-separated class names; empty without the toy sets.
    """
    root = Path(quickstart_output) / "datasets"
    examples = []
    for spec in GSNET_DATASETS:
        if spec.name not in PAPER_TEST_SETS:
            continue
        images = sorted((root / spec.image_dir).glob(f"*.{spec.image_ext}"))
        if images:
            examples.append((images[0], ", ".join(class_lists(spec)[0])))
    return examples


# ---------------------------------------------------------------------- one request
@dataclass
class LegendEntry:
    """One class of the legend: its name, its colour (R, G, B) and its share of the image."""

    name: str
    colour: tuple[int, int, int]
    percent: float


@dataclass
class DemoResult:
    """What the page shows for one upload.

    Attributes:
        overlay: PIL RGB image, the upload with its label colours blended in; the image's size
            (W x H) unless its long side exceeds ``OVERLAY_MAX_SIDE``.
        legend: the T classes, in channel order.
        statistics: ``Prediction.statistics()`` (class_index, class, pixels, percent, area_m2).
        files: the downloads: label PNG, label GeoTIFF (georeferenced inputs), statistics CSV,
            overlay PNG with its legend.
        image_size: (H, W) of the upload.
        area_known: whether ``statistics`` holds areas in square metres (projected CRS).
    """

    overlay: Image.Image
    legend: list[LegendEntry]
    statistics: list[dict]
    files: list[Path]
    image_size: tuple[int, int]
    area_known: bool


def parse_vocabulary(text, *, max_classes=DEFAULT_MAX_CLASSES):
    """The class names typed in the page: separated by commas or new lines (empty pieces, as
    after a trailing comma, are dropped).

    Raises:
        DemoInputError: no name, a repeated name, or more than ``max_classes``.
    """
    names = [name for name in re.split(r"[,\n]", text or "") if name.strip()]
    if not names:
        raise DemoInputError(
            "No class names: type the classes to look for, separated by commas (e.g. building, "
            "road, tree, water)."
        )
    try:
        names = parse_class_names(names)
    except ValueError as error:
        raise DemoInputError(str(error)) from None
    if len(names) > max_classes:
        raise DemoInputError(
            f"{len(names)} class names are too many for this demo's memory (at most "
            f"{max_classes}): segment with fewer names, or start the demo with a larger "
            "--max-classes."
        )
    return names


def segment_upload(
    predictor,
    path,
    class_names,
    *,
    output_dir,
    display_name=None,
    max_classes=DEFAULT_MAX_CLASSES,
    progress=None,
):
    """Segment one uploaded image for the typed class names.

    Args:
        predictor: a :class:`~gsnet.predictor.Predictor`.
        path: the uploaded file (PNG, JPEG or GeoTIFF), or None when nothing was uploaded.
        class_names: the typed names (see :func:`parse_vocabulary`).
        output_dir: an existing folder for the downloads.
        display_name: the file name the user knows (uploads arrive under temporary paths).
        max_classes: the largest vocabulary accepted.
        progress: called as ``progress(fraction, desc=...)`` at each stage (``gr.Progress``
            fits); the predictor's tile bar (tqdm) reports within the segmentation stage.
    Returns:
        DemoResult.
    Raises:
        DemoInputError: no upload, no or too many class names, an unreadable file, a GeoTIFF
            without usable bands, or not enough memory for this image and vocabulary.
    """
    if path is None:
        raise DemoInputError("No image: upload a PNG, JPEG or GeoTIFF, or pick an example.")
    path = Path(path)
    name = display_name or path.name
    if path.suffix.lower() not in UPLOAD_SUFFIXES:
        raise DemoInputError(
            f"{name} is not a PNG, JPEG or GeoTIFF file ({', '.join(UPLOAD_SUFFIXES)})."
        )
    names = parse_vocabulary(class_names, max_classes=max_classes)
    return _predict_and_write(
        predictor, path, names, Path(output_dir), name=name, progress=progress or _no_progress
    )


def _no_progress(fraction, desc=None):
    pass


def _is_out_of_memory(error):
    """CUDA's out-of-memory error, NumPy's MemoryError, or PyTorch's CPU allocator's."""
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        "can't allocate memory" in str(error)
    )


def _predict_and_write(predictor, path, class_names, output_dir, *, name, progress):
    """The one place that calls gsnet.predictor's reading, prediction and output functions
    (the adapter to re-point when they move): read, check the bands, predict, write the
    downloads, draw the overlay."""
    progress(0.0, desc="reading the image")
    try:
        image = read_image(path)
    except ImageReadError as error:
        raise DemoInputError(str(error).replace(str(path), name)) from None
    height, width = image.pixels.shape[:2]
    # read_image turns bands that are all nodata, non-finite or constant into zeros.
    if path.suffix.lower() in GEOTIFF_SUFFIXES and not image.pixels.any():
        raise DemoInputError(
            f"{name} has no usable bands: bands 1 to 3 hold only nodata, non-finite or constant "
            "values. Upload a GeoTIFF whose first three bands hold the image."
        )

    progress(0.1, desc=f"segmenting {height} x {width} px into {len(class_names)} classes")
    try:
        prediction = predictor(image, class_names, keep_scores=False)
    except (MemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise DemoInputError(
            f"Out of memory segmenting {name} ({height} x {width} px) into {len(class_names)} "
            "classes: too many classes for the model's memory; use fewer class names (or "
            "start the demo with a smaller --tile-size or --batch-size)."
        ) from None

    progress(0.9, desc="writing the results")
    stem = Path(name).stem
    palette = label_palette(len(class_names))
    files = [output_dir / f"{stem}_labels.png"]
    write_label_png(prediction.labels, files[-1], palette=palette)
    if image.georeferenced:
        files.append(output_dir / f"{stem}_labels.tif")
        write_label_geotiff(
            prediction.labels,
            files[-1],
            crs=prediction.crs,
            transform=prediction.transform,
            palette=palette,
        )
    statistics = prediction.statistics()
    files.append(output_dir / f"{stem}_stats.csv")
    write_statistics(statistics, files[-1])
    with_legend = draw_overlay(
        image.pixels, prediction.labels, class_names, palette=palette, max_side=OVERLAY_MAX_SIDE
    )
    files.append(output_dir / f"{stem}_overlay.png")
    with_legend.save(files[-1], optimize=True)
    # draw_overlay puts the blended image, shrunk to max_side, at the top left of its canvas.
    scale = min(1.0, OVERLAY_MAX_SIDE / max(height, width))
    overlay = with_legend.crop((0, 0, max(1, round(width * scale)), max(1, round(height * scale))))
    legend = [
        LegendEntry(row["class"], tuple(int(c) for c in colour), row["percent"])
        for row, colour in zip(statistics, palette)
    ]
    return DemoResult(
        overlay=overlay,
        legend=legend,
        statistics=statistics,
        files=files,
        image_size=(height, width),
        area_known=prediction.pixel_area_m2 is not None,
    )
