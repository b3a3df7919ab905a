"""Segment your own imagery: run GSNet on an image or scene of any size, tile by tile, for any
vocabulary (the model side: tiling, blending, vocabulary, statistics; reading and writing files
is ``gsnet.raster_io``).

Shapes: T classes, H x W the scene, h x w a tile (h = min(tile_size, H), w = min(tile_size, W)).

Tiling. A scene is cut into tiles of ``tile_size`` pixels that overlap by ``tile_overlap``
pixels; the last tile of a row or column is moved back to end at the scene's edge, so every tile
has the same size and nothing is padded. Each tile goes through the model's own inference
(``GSNet.forward``: whole-image or sliding-window, as the config says), so a scene no larger
than one tile gets exactly the model's one-pass result. Where tiles overlap, their scores are
blended with a linear ramp ("feathering"): a tile's weight rises from 1/(overlap+1) to 1 across
each overlapped border and is 1 on borders that lie on the scene's edge; the blended score is
sum(weight * score) / sum(weight).

Streaming. ``Predictor.predict_rows`` reads the scene tile by tile through a ``read_tile``
callable and yields the label rows (and, on request, score rows) as soon as no later tile touches
them: a running (T, h, W) float32 sum and an (h, W) weight map cover the current row of tiles,
so memory is set by the tile size, the batch and the scene's width (about 2 x 4 x T x h x W
bytes; e.g. 10 classes, 640 px tiles, a 20,000 px wide scene: ~1 GB), not by the scene's
height. ``Predictor.__call__`` collects those rows into whole (H, W) arrays for images in memory.

No data. ``read_tile`` also returns a valid mask (None: all valid). Pixels outside it get the
label ``nodata_label(dtype)`` (255 for uint8 labels, 65535 for uint16) and NaN scores, and are
left out of the statistics; tiles without a valid pixel are not run.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from tqdm import tqdm

from .checkpoint import GSNetCheckpointer
from .config import load_config
from .data.class_names import check_class_names, load_class_names
from .errors import ConfigError, InputFileError, MissingFileError

# Image reading and the output writers live in raster_io; these names are kept here for the
# Python API of earlier versions.
from .raster_io import (
    IMAGE_SUFFIXES,
    STRETCH_PERCENTILES,
    ImageReadError,
    RasterImage,
    draw_overlay,
    label_palette,
    read_image,
    stretch_to_uint8,
    write_label_geotiff,
    write_label_png,
    write_statistics,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "STRETCH_PERCENTILES",
    "ImageReadError",
    "Prediction",
    "Predictor",
    "RasterImage",
    "RowBlock",
    "array_tile_reader",
    "build_predictor_config",
    "class_statistics",
    "draw_overlay",
    "label_dtype",
    "label_palette",
    "load_weights",
    "nodata_label",
    "parse_class_names",
    "pixel_area_m2",
    "read_image",
    "stretch_to_uint8",
    "tile_starts",
    "tile_weights",
    "write_label_geotiff",
    "write_label_png",
    "write_statistics",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- class names
def parse_class_names(class_names):
    """The vocabulary from a list of names, a comma-separated string, or a JSON file.

    Args:
        class_names: a list/tuple of strings; a string "building, road, tree" (names are
            stripped; a name with a comma needs the list or JSON form); or a path ending in
            ".json" that holds a JSON list of names (read by ``load_class_names``).
    Returns:
        list[str]: the T names, in order (the channel order of the scores).
    Raises:
        ConfigError: what :func:`~gsnet.data.class_names.check_class_names` refuses.
    """
    if isinstance(class_names, (str, Path)) and str(class_names).lower().endswith(".json"):
        return load_class_names(class_names)
    if isinstance(class_names, str):
        names = [name.strip() for name in class_names.split(",")]
        names = names if any(names) else []
        source = f"The comma-separated list {class_names!r}"
    elif isinstance(class_names, (list, tuple)):
        names = [name.strip() if isinstance(name, str) else name for name in class_names]
        source = "The class list"
    else:
        raise ConfigError(
            "Class names must be a list of strings, a comma-separated string or a .json path, "
            f"got {type(class_names).__name__}."
        )
    return check_class_names(names, source)


# ---------------------------------------------------------------------- images
def _as_raster_image(image):
    if isinstance(image, RasterImage):
        return image
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputFileError(
                f"Expected an (H, W, 3) uint8 RGB array, got shape {image.shape} and dtype "
                f"{image.dtype}: convert it first (e.g. with stretch_to_uint8 per band)."
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InputFileError(f"The image has no pixels (shape {image.shape}).")
        return RasterImage(pixels=image)
    raise InputFileError(
        f"Expected an image path, an (H, W, 3) uint8 array or a RasterImage, got "
        f"{type(image).__name__}."
    )


def array_tile_reader(pixels, valid=None):
    """``read_tile(y, x, h, w)`` over an (H, W, 3) uint8 array and its optional (H, W) valid
    mask, as ``Predictor.predict_rows`` takes it."""

    def read_tile(y, x, h, w):
        tile_valid = None if valid is None else valid[y : y + h, x : x + w]
        return pixels[y : y + h, x : x + w], tile_valid

    return read_tile


# ---------------------------------------------------------------------- tiling
def tile_starts(length, tile_size, overlap):
    """First pixel of each tile along one side: every ``tile_size - overlap`` pixels, plus a
    last tile ending at the edge. A side no longer than a tile is one tile.

    Example: tile_starts(1000, 640, 160) == [0, 360].
    """
    if length <= tile_size:
        return [0]
    starts = list(range(0, length - tile_size + 1, tile_size - overlap))
    if starts[-1] + tile_size < length:
        starts.append(length - tile_size)
    return starts


def tile_weights(start, size, length, overlap):
    """(size,) blending weights of a tile along one side: a linear ramp 1/(overlap+1) ...
    overlap/(overlap+1) over each border shared with another tile, 1 elsewhere (two tiles
    overlapping by exactly ``overlap`` pixels sum to 1 there)."""
    weights = np.ones(size, np.float32)
    if overlap == 0:
        return weights
    ramp = np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1)
    span = min(overlap, size)
    if start > 0:
        weights[:span] = np.minimum(weights[:span], ramp[:span])
    if start + size < length:
        weights[size - span :] = np.minimum(weights[size - span :], ramp[::-1][overlap - span :])
    return weights


# ---------------------------------------------------------------------- prediction
def label_dtype(num_classes):
    """The label dtype for ``num_classes`` classes: uint8 up to 255 classes, else uint16 (the
    largest value of the dtype is kept for pixels without a class)."""
    if num_classes <= 255:
        return np.dtype(np.uint8)
    if num_classes <= 65535:
        return np.dtype(np.uint16)
    raise ConfigError(f"{num_classes} classes: at most 65535 are supported.")


def nodata_label(dtype):
    """The label value of pixels without a class: the largest value of ``dtype``."""
    return int(np.iinfo(dtype).max)


def pixel_area_m2(crs, transform):
    """Ground area of one pixel in square metres, for a projected CRS; else None."""
    if crs is None or transform is None or not crs.is_projected:
        return None
    t = transform
    metres_per_unit = crs.linear_units_factor[1]
    return abs(t.a * t.e - t.b * t.d) * metres_per_unit**2


def class_statistics(counts, class_names, *, pixel_area=None):
    """Per class: {"class_index", "class", "pixels", "percent", "area_m2"}, from the (T,) pixel
    counts of the valid pixels ("percent" of the valid pixels; "area_m2" is pixels x
    ``pixel_area``, None without one)."""
    total = int(np.sum(counts))
    return [
        {
            "class_index": index,
            "class": name,
            "pixels": int(count),
            "percent": 100.0 * int(count) / total if total else 0.0,
            "area_m2": None if pixel_area is None else int(count) * pixel_area,
        }
        for index, (name, count) in enumerate(zip(class_names, counts))
    ]


def count_labels(labels, num_classes):
    """(T,) int64 pixel counts per class of a label array (pixels without a class left out)."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    return counts[:num_classes]


@dataclass
class Prediction:
    """GSNet's prediction for one image.

    Attributes:
        class_names: the T names, in channel order.
        labels: (H, W) class index per pixel (argmax of the scores, the first class on ties);
            ``nodata`` where a pixel has no data; uint8 for up to 255 classes, else uint16.
        scores: (T, H, W) float32 class scores in [0, 1] (NaN without data), or None when not
            kept.
        crs, transform: the input's georeference (rasterio CRS and Affine), or None.
        nodata: the label value of pixels without a class (``nodata_label``).
    """

    class_names: list[str]
    labels: np.ndarray
    scores: np.ndarray | None = None
    crs: Any = None
    transform: Any = None
    nodata: int | None = None

    def __post_init__(self):
        if self.nodata is None:
            self.nodata = nodata_label(self.labels.dtype)

    @property
    def valid(self):
        """(H, W) bool: the pixels that have a class."""
        return self.labels != self.nodata

    @property
    def pixel_area_m2(self):
        """Ground area of one pixel in square metres, for a projected CRS; else None."""
        return pixel_area_m2(self.crs, self.transform)

    def statistics(self):
        """Per class: {"class_index", "class", "pixels", "percent", "area_m2"} over the pixels
        that have a class ("area_m2" is pixels x pixel area, None without a projected CRS)."""
        counts = count_labels(self.labels, len(self.class_names))
        return class_statistics(counts, self.class_names, pixel_area=self.pixel_area_m2)


@dataclass
class RowBlock:
    """Rows ``top`` .. ``top + len(labels)`` of a scene's prediction (``predict_rows``).

    Attributes:
        top: the first scene row. labels: (rows, W), nodata where a pixel has no class.
        scores: (T, rows, W) float32 (NaN without data), or None when not asked for.
    """

    top: int
    labels: np.ndarray
    scores: np.ndarray | None = None


def build_predictor_config(config, *, opts=(), device=None, precision=None):
    """A frozen GSNet config from a YAML path or a CfgNode, with overrides.

    Args:
        config: a YAML path, or a CfgNode that already has the GSNet keys.
        opts: ["KEY", "VALUE", ...] overrides, as Detectron2's command lines take them.
        device: overrides MODEL.DEVICE ("cpu", "cuda", "cuda:1", ...).
        precision: overrides TEST.PRECISION ("float32", "bfloat16", "float16").
    """
    if isinstance(config, CfgNode):
        cfg = config.clone()
        try:
            cfg.merge_from_list([str(item) for item in opts])
        except (AssertionError, KeyError, ValueError) as error:
            raise ConfigError(f"Config overrides {list(opts)} do not apply: {error}") from None
    else:
        cfg = load_config(str(config), opts)
    if device is not None:
        cfg.MODEL.DEVICE = device
    if precision is not None:
        cfg.TEST.PRECISION = precision
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Device {cfg.MODEL.DEVICE!r} asked for, but CUDA is not available.")
    cfg.freeze()
    return cfg


class Predictor:
    """Open-vocabulary segmentation of images of any size with a trained GSNet.

    Example::

        predictor = Predictor("configs/vitb_384.yaml", "model.pth", device="cuda")
        prediction = predictor("scene.tif", "building,road,tree,water")
        prediction.labels  # (H, W) class indices; prediction.scores: (T, H, W)
    """

    def __init__(
        self,
        config,
        weights=None,
        *,
        opts=(),
        device=None,
        precision=None,
        tile_size=None,
        tile_overlap=None,
        batch_size=4,
        progress=True,
    ):
        """
        Args:
            config: a YAML path or a GSNet CfgNode (``opts`` are merged into it).
            weights: the checkpoint (ours or the released GSNet file); default MODEL.WEIGHTS.
            opts: config overrides ["KEY", "VALUE", ...].
            device: e.g. "cpu" or "cuda"; default the config's MODEL.DEVICE.
            precision: "float32", "bfloat16" or "float16"; default the config's TEST.PRECISION.
            tile_size: tile side in pixels; default INPUT.MIN_SIZE_TEST, the short side to which
                the paper resizes its evaluation images (640), so each tile reaches the model at
                the size of an evaluation image.
            tile_overlap: pixels shared by neighbouring tiles; default a quarter of a tile.
            batch_size: tiles per forward pass (tiles of one tile row are batched together).
            progress: show a progress bar over the tiles of a multi-tile image.
        Raises:
            MissingFileError: config or weights file missing. ConfigError: no weights given, a
            checkpoint that is not readable or does not fit the config, bad tiling arguments.
        """
        cfg = build_predictor_config(config, opts=opts, device=device, precision=precision)
        weights = weights or cfg.MODEL.WEIGHTS
        if not weights:
            raise ConfigError("No weights: give a checkpoint file (or set MODEL.WEIGHTS).")
        if not Path(weights).is_file():
            raise MissingFileError(f"Weights file not found: {weights}")
        model = build_model(cfg)
        load_weights(model, weights, allow_unsafe_unpickling=cfg.MODEL.ALLOW_UNSAFE_UNPICKLING)
        self._setup(
            model,
            tile_size=cfg.INPUT.MIN_SIZE_TEST if tile_size is None else tile_size,
            tile_overlap=tile_overlap,
            batch_size=batch_size,
            progress=progress,
        )
        self.cfg = cfg

    @classmethod
    def from_model(cls, model, *, tile_size, tile_overlap=None, batch_size=4, progress=True):
        """A predictor around a model already in memory (e.g. right after training).

        Args:
            model: a GSNet, or anything with its inference interface ``model(batched_inputs,
                class_names)``; it is put in eval mode.
            tile_size, tile_overlap, batch_size, progress: as in the constructor.
        """
        predictor = cls.__new__(cls)
        predictor._setup(
            model,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            batch_size=batch_size,
            progress=progress,
        )
        predictor.cfg = None
        return predictor

    def _setup(self, model, *, tile_size, tile_overlap, batch_size, progress):
        tile_overlap = tile_size // 4 if tile_overlap is None else tile_overlap
        if tile_size < 1 or not 0 <= tile_overlap < tile_size:
            raise ConfigError(
                f"Tiles of {tile_size} px overlapping by {tile_overlap} px: need tile_size >= 1 "
                "and 0 <= tile_overlap < tile_size."
            )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        self.model = model.eval()
        self.tile_size = int(tile_size)
        self.tile_overlap = int(tile_overlap)
        self.batch_size = int(batch_size)
        self.progress = progress

    def __call__(self, image, class_names, *, keep_scores=True):
        """
        Args:
            image: an (H, W, 3) uint8 RGB array, an image path (see ``read_image``) or a
                RasterImage (its ``valid`` mask marks the pixels without data).
            class_names: the vocabulary (see ``parse_class_names``).
            keep_scores: return the (T, H, W) scores too (memory: 4 x T x H x W bytes).
        Returns:
            Prediction, with the georeference of a georeferenced input.
        """
        image = _as_raster_image(image)
        class_names = self.prepare_class_names(class_names)
        H, W = image.pixels.shape[:2]
        dtype = label_dtype(len(class_names))
        labels = np.empty((H, W), dtype)
        scores = np.empty((len(class_names), H, W), np.float32) if keep_scores else None
        reader = array_tile_reader(image.pixels, image.valid)
        for block in self.predict_rows(reader, H, W, class_names, keep_scores=keep_scores):
            rows = slice(block.top, block.top + len(block.labels))
            labels[rows] = block.labels
            if keep_scores:
                scores[:, rows] = block.scores
        return Prediction(
            class_names=class_names,
            labels=labels,
            scores=scores,
            crs=image.crs,
            transform=image.transform,
            nodata=nodata_label(dtype),
        )

    def prepare_class_names(self, class_names):
        """The vocabulary as ``parse_class_names`` reads it, checked against the model's text
        encoder (a name too long for its context is a ConfigError naming it and the limit)."""
        class_names = parse_class_names(class_names)
        label_dtype(len(class_names))
        text_queries = getattr(self.model, "text_queries", None)
        if text_queries is not None:
            text_queries.check_lengths(class_names)
        return class_names

    def tile_grid(self, height, width):
        """(ys, xs, h, w): the tiles' first rows and columns and their size, for a scene of
        ``height`` x ``width`` pixels."""
        ys = tile_starts(height, self.tile_size, self.tile_overlap)
        xs = tile_starts(width, self.tile_size, self.tile_overlap)
        return ys, xs, min(self.tile_size, height), min(self.tile_size, width)

    def num_row_blocks(self, height):
        """How many ``RowBlock``s ``predict_rows`` yields for a scene ``height`` rows high (one
        per row of tiles)."""
        return len(tile_starts(height, self.tile_size, self.tile_overlap))

    def predict_rows(
        self, read_tile, height, width, class_names, *, keep_scores=False, blocks=None
    ) -> Iterator[RowBlock]:
        """Predict a scene tile by tile and yield its rows as they are finalised.

        Row block k holds the rows from the start of tile row k to the start of tile row k + 1
        (the last: to the bottom). Asking for ``blocks`` a..b runs the tile rows that touch
        them (the earlier tile rows whose overlap reaches block a included), so several
        processes can share a scene and get exactly the rows one process gets.

        Args:
            read_tile: ``read_tile(y, x, h, w)`` -> ((h, w, 3) uint8 RGB, (h, w) bool valid
                mask or None), e.g. ``array_tile_reader`` or ``raster_io.RasterScene``.
            height, width: the scene's size.
            class_names: the T names (as ``prepare_class_names`` returns them).
            keep_scores: yield the blended scores too.
            blocks: a range of row-block indices (``num_row_blocks``); default all.
        Yields:
            RowBlock, in order.
        """
        H, W, T = height, width, len(class_names)
        ys, xs, h, w = self.tile_grid(H, W)
        blocks = range(len(ys)) if blocks is None else blocks
        if not blocks:
            return
        first_row = next(r for r in range(len(ys)) if ys[r] + h > ys[blocks.start])
        tile_rows = range(first_row, blocks.stop)
        weights_y = [tile_weights(y, h, H, self.tile_overlap) for y in ys]
        weights_x = [tile_weights(x, w, W, self.tile_overlap) for x in xs]
        logger.info("%d x %d px image: %d x %d tiles of %d x %d px.", H, W, len(ys), len(xs), h, w)
        dtype = label_dtype(T)
        band_sum = np.zeros((T, h, W), np.float32)  # rows band_top .. band_top + h
        band_weight = np.zeros((h, W), np.float32)
        band_valid = np.zeros((h, W), bool)
        band_top = ys[first_row]
        with tqdm(
            total=len(tile_rows) * len(xs),
            desc="tiles",
            unit="tile",
            leave=False,
            disable=not self.progress or len(tile_rows) * len(xs) == 1,
        ) as bar:
            for row in tile_rows:
                y = ys[row]
                _shift_band((band_sum, band_weight, band_valid), y - band_top)
                band_top = y
                tiles = []
                for c, x in enumerate(xs):
                    pixels, valid = read_tile(y, x, h, w)
                    if valid is not None and not valid.any():
                        bar.update(1)  # nothing to classify: not run
                        continue
                    band_valid[:, x : x + w] |= True if valid is None else valid
                    tiles.append((c, pixels))
                for first in range(0, len(tiles), self.batch_size):
                    batch = tiles[first : first + self.batch_size]
                    inputs = [
                        {"image": _tile_tensor(pixels), "height": h, "width": w}
                        for _, pixels in batch
                    ]
                    with torch.no_grad():
                        outputs = self.model(inputs, class_names)
                    for (c, _), output in zip(batch, outputs):
                        tile_scores = output["sem_seg"].float().cpu().numpy()
                        weight = np.outer(weights_y[row], weights_x[c])
                        band_sum[:, :, xs[c] : xs[c] + w] += tile_scores * weight
                        band_weight[:, xs[c] : xs[c] + w] += weight
                    bar.update(len(batch))
                if row < blocks.start:
                    continue
                # Rows above the next tile row receive no more tiles: finalise them.
                done = (ys[row + 1] if row + 1 < len(ys) else H) - y
                valid = band_valid[:done]
                final = np.divide(
                    band_sum[:, :done],
                    band_weight[:done],
                    out=np.full((T, done, W), np.nan, np.float32),
                    where=valid,
                )
                all_valid = valid.all()
                labels = (final if all_valid else np.nan_to_num(final)).argmax(axis=0)
                labels = labels.astype(dtype)
                if not all_valid:
                    labels[~valid] = nodata_label(dtype)
                yield RowBlock(top=y, labels=labels, scores=final if keep_scores else None)


def _tile_tensor(pixels):
    """(3, h, w) uint8 tensor of an (h, w, 3) tile (a copy: the scene array may be read-only)."""
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def _shift_band(arrays, shift):
    """Move the accumulators' window down by ``shift`` rows in place (zeros come in at the
    bottom; NumPy copies overlapping ranges correctly). Rows are the second-to-last axis."""
    if shift == 0:
        return
    for array in arrays:
        kept = array.shape[-2] - shift
        array[..., :kept, :] = array[..., shift:, :]
        array[..., kept:, :] = 0


def load_weights(model, weights, *, allow_unsafe_unpickling=False):
    """Load a checkpoint with ``GSNetCheckpointer``; any failure is an InputFileError naming the
    file (GSNetCheckpointer's explanation of an incompatible checkpoint included)."""
    try:
        GSNetCheckpointer(model, allow_unsafe_unpickling=allow_unsafe_unpickling).load(str(weights))
    except ValueError as error:
        raise InputFileError(f"Cannot load weights {weights}: {error}") from None
    except Exception as error:  # torch/pickle raise many types on a corrupt file
        raise InputFileError(
            f"Cannot load weights {weights}: not a readable checkpoint ({error})."
        ) from None
