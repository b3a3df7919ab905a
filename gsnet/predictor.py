"""Segment your own imagery: read an image (PNG, JPEG, TIFF, GeoTIFF), run GSNet on it tile by
tile for any vocabulary, and write label maps, overlays and class statistics.

Shapes: T classes, H x W the scene, h x w a tile (h = min(tile_size, H), w = min(tile_size, W)).

Tiling. A scene is cut into tiles of ``tile_size`` pixels that overlap by ``tile_overlap``
pixels; the last tile of a row or column is moved back to end at the scene's edge, so every tile
has the same size and nothing is padded. Each tile goes through the model's own inference
(``GSNet.forward``: whole-image or sliding-window, as the config says), so a scene no larger
than one tile gets exactly the model's one-pass result. Where tiles overlap, their scores are
blended with a linear ramp ("feathering"): a tile's weight rises from 1/(overlap+1) to 1 across
each overlapped border and is 1 on borders that lie on the scene's edge; the blended score is
sum(weight * score) / sum(weight).

Memory. The scene is processed one tile row at a time: a running (T, h, W) float32 sum and an
(h, W) weight map cover the current row of tiles, and rows that no later tile touches are
finalised (divided by the weight, reduced to labels). With ``keep_scores=False`` the extra memory
is therefore at most about 2 x 4 x T x h x W bytes (the sum and one finalised slice of it; e.g.
10 classes, 640 px tiles, a 20,000 px wide scene: ~1 GB) plus the (H, W) labels. Keeping the
full (T, H, W) float32 scores costs 4 x T x H x W bytes more (10 classes on 20,000 x 20,000 px:
16 GB). The image itself is held as (H, W, 3) uint8.
"""

import colorsys
import csv
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from PIL import Image, ImageDraw, ImageFont, ImageOps
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from tqdm import tqdm

from .checkpoint import GSNetCheckpointer
from .config import add_gsnet_config
from .data.class_names import load_class_names

__all__ = [
    "IMAGE_SUFFIXES",
    "STRETCH_PERCENTILES",
    "ImageReadError",
    "Prediction",
    "Predictor",
    "RasterImage",
    "build_predictor_config",
    "draw_overlay",
    "label_palette",
    "load_weights",
    "parse_class_names",
    "read_image",
    "stretch_to_uint8",
    "tile_starts",
    "tile_weights",
    "write_label_geotiff",
    "write_label_png",
    "write_statistics",
]

logger = logging.getLogger(__name__)

# Read with Pillow; every other file (TIFF, GeoTIFF, JPEG 2000, ...) is read with rasterio.
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# The files that a folder or a glob given as input contributes.
IMAGE_SUFFIXES = PILLOW_SUFFIXES + (".tif", ".tiff", ".jp2")
# Non-uint8 bands are mapped to 0-255 between these percentiles of their valid pixels.
STRETCH_PERCENTILES = (2.0, 98.0)
# Follows Sasha Trubetskoy's "List of 20 simple, distinct colors"; more are generated.
DISTINCT_COLOURS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]  # fmt: skip


class ImageReadError(ValueError):
    """An input image cannot be read; the message names the file."""


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
        ValueError: no names, an empty name, or a name given twice (CLIP lower-cases names, so
            names differing only in case are the same query).
    """
    if isinstance(class_names, (str, Path)) and str(class_names).lower().endswith(".json"):
        return load_class_names(class_names)
    if isinstance(class_names, str):
        names = [name.strip() for name in class_names.split(",")]
        if not any(names):
            raise ValueError(
                f"No class names in {class_names!r}: give a comma-separated list such as "
                "'building,road,tree,water', or a JSON file."
            )
    elif isinstance(class_names, (list, tuple)):
        names = list(class_names)
        if not names:
            raise ValueError("No class names: give at least one, e.g. ['building', 'road'].")
    else:
        raise ValueError(
            "Class names must be a list of strings, a comma-separated string or a .json path, "
            f"got {type(class_names).__name__}."
        )
    first_index = {}
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"Class name {index + 1} of {class_names!r} is empty: every class needs a name."
            )
        key = name.strip().lower()
        if key in first_index:
            raise ValueError(
                f"Class name {name!r} is given twice (positions {first_index[key] + 1} and "
                f"{index + 1}; names are case-insensitive): remove one."
            )
        first_index[key] = index
    return [name.strip() for name in names]


# ---------------------------------------------------------------------- reading images
@dataclass
class RasterImage:
    """An image ready for the model.

    Attributes:
        pixels: (H, W, 3) uint8 RGB.
        path: the file it was read from, if any.
        crs: the coordinate reference system of a georeferenced file, else None.
        transform: the pixel -> CRS affine transform of a georeferenced file, else None.
    """

    pixels: np.ndarray
    path: Path | None = None
    crs: rasterio.crs.CRS | None = None
    transform: rasterio.Affine | None = None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None


def stretch_to_uint8(band, *, nodata=None):
    """Map one band of any numeric type to uint8: values at the 2nd / 98th percentile
    (``STRETCH_PERCENTILES``) of the valid pixels become 0 / 255, linearly in between, clipped
    outside. Invalid pixels (non-finite, or equal to ``nodata``) become 0, and so does a constant
    band.

    Args:
        band: (H, W) array. nodata: the file's no-data value, or None.
    Returns:
        (H, W) uint8.
    """
    band = band.astype(np.float32, copy=False)
    valid = np.isfinite(band)
    if nodata is not None:
        valid &= band != nodata
    out = np.zeros(band.shape, np.uint8)
    if not valid.any():
        return out
    low, high = np.percentile(band[valid], STRETCH_PERCENTILES)
    if high > low:
        scaled = (band - low) * (255.0 / (high - low))
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        out[~valid] = 0
    return out


def _to_rgb(bands, *, nodata, path):
    """(B, H, W) bands of any type -> (H, W, 3) uint8: the first three bands, or band 1
    replicated when there are fewer than three; non-uint8 data stretched per band."""
    if len(bands) < 3:
        if len(bands) == 2:
            logger.warning("%s has 2 bands: using band 1 as grey.", path)
        bands = bands[:1].repeat(3, axis=0)
    bands = bands[:3]
    if bands.dtype != np.uint8:
        logger.info("%s holds %s data: percentile stretch to uint8.", path, bands.dtype)
        bands = np.stack([stretch_to_uint8(band, nodata=nodata) for band in bands])
    return np.ascontiguousarray(bands.transpose(1, 2, 0))


def _read_with_pillow(path):
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)  # camera JPEGs: as displayed
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            return _to_rgb(np.asarray(image)[None], nodata=None, path=path)
        return np.asarray(image.convert("RGB"))


def _read_with_rasterio(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            bands = dataset.read(list(range(1, min(dataset.count, 3) + 1)))
            pixels = _to_rgb(bands, nodata=dataset.nodata, path=path)
            if dataset.crs is None:
                return RasterImage(pixels=pixels, path=path)
            return RasterImage(
                pixels=pixels, path=path, crs=dataset.crs, transform=dataset.transform
            )


def read_image(path):
    """Read an image file as RGB uint8, keeping the georeference of a GeoTIFF.

    PNG/JPEG/BMP/WebP are read with Pillow, everything else (TIFF, GeoTIFF, JPEG 2000) with
    rasterio. Any band count: the first three bands are R, G, B; a one-band (or two-band) image
    uses band 1 as grey. uint16, int or float data are stretched per band to uint8 (see
    ``stretch_to_uint8``).

    Args:
        path (str or Path): the file.
    Returns:
        RasterImage.
    Raises:
        ImageReadError: the file is missing, corrupt, or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"Cannot read image {path}: no such file.")
    try:
        if path.suffix.lower() in PILLOW_SUFFIXES:
            image = RasterImage(pixels=_read_with_pillow(path), path=path)
        else:
            image = _read_with_rasterio(path)
    except (OSError, RasterioError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # PIL raises SyntaxError for some broken PNG chunks, DecompressionBombError for images
        # too large to be anything but an attack.
        raise ImageReadError(f"Cannot read image {path}: {error}") from None
    height, width = image.pixels.shape[:2]
    if height == 0 or width == 0:
        raise ImageReadError(f"Cannot read image {path}: it has no pixels.")
    return image


def _as_raster_image(image):
    if isinstance(image, RasterImage):
        return image
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"Expected an (H, W, 3) uint8 RGB array, got shape {image.shape} and dtype "
                f"{image.dtype}: convert it first (e.g. with stretch_to_uint8 per band)."
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"The image has no pixels (shape {image.shape}).")
        return RasterImage(pixels=image)
    raise ValueError(
        f"Expected an image path, an (H, W, 3) uint8 array or a RasterImage, got "
        f"{type(image).__name__}."
    )


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
@dataclass
class Prediction:
    """GSNet's prediction for one image.

    Attributes:
        class_names: the T names, in channel order.
        labels: (H, W) class index per pixel (argmax of the scores, the first class on ties);
            uint8 for up to 256 classes, else uint16.
        scores: (T, H, W) float32 class scores in [0, 1], or None when not kept.
        crs, transform: the input's georeference, or None.
    """

    class_names: list[str]
    labels: np.ndarray
    scores: np.ndarray | None = None
    crs: rasterio.crs.CRS | None = None
    transform: rasterio.Affine | None = None

    @property
    def pixel_area_m2(self):
        """Ground area of one pixel in square metres, for a projected CRS; else None."""
        if self.crs is None or self.transform is None or not self.crs.is_projected:
            return None
        t = self.transform
        metres_per_unit = self.crs.linear_units_factor[1]
        return abs(t.a * t.e - t.b * t.d) * metres_per_unit**2

    def statistics(self):
        """Per class: {"class_index", "class", "pixels", "percent", "area_m2"} ("area_m2" is
        pixels x pixel area, None without a projected CRS)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        total = self.labels.size
        area = self.pixel_area_m2
        return [
            {
                "class_index": index,
                "class": name,
                "pixels": int(count),
                "percent": 100.0 * int(count) / total,
                "area_m2": None if area is None else int(count) * area,
            }
            for index, (name, count) in enumerate(zip(self.class_names, counts))
        ]


def _label_dtype(num_classes):
    if num_classes <= 256:
        return np.uint8
    if num_classes <= 65536:
        return np.uint16
    raise ValueError(f"{num_classes} classes: at most 65536 are supported.")


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
    else:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"Config file not found: {path}")
        cfg = get_cfg()
        add_gsnet_config(cfg)
        try:
            cfg.merge_from_file(str(path))
        except (AssertionError, KeyError, ValueError) as error:  # yacs' ways of saying no
            raise ValueError(f"Config file {path} does not load: {error}") from None
    try:
        cfg.merge_from_list([str(item) for item in opts])
    except (AssertionError, KeyError, ValueError) as error:
        raise ValueError(f"Config overrides {list(opts)} do not apply: {error}") from None
    if device is not None:
        cfg.MODEL.DEVICE = device
    if precision is not None:
        cfg.TEST.PRECISION = precision
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Device {cfg.MODEL.DEVICE!r} asked for, but CUDA is not available.")
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
            FileNotFoundError: config or weights file missing. ValueError: no weights given, a
            checkpoint that is not readable or does not fit the config, bad tiling arguments.
        """
        cfg = build_predictor_config(config, opts=opts, device=device, precision=precision)
        weights = weights or cfg.MODEL.WEIGHTS
        if not weights:
            raise ValueError("No weights: give a checkpoint file (or set MODEL.WEIGHTS).")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"Weights file not found: {weights}")
        model = build_model(cfg)
        load_weights(model, weights)
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
            raise ValueError(
                f"Tiles of {tile_size} px overlapping by {tile_overlap} px: need tile_size >= 1 "
                "and 0 <= tile_overlap < tile_size."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.model = model.eval()
        self.tile_size = int(tile_size)
        self.tile_overlap = int(tile_overlap)
        self.batch_size = int(batch_size)
        self.progress = progress

    def __call__(self, image, class_names, *, keep_scores=True):
        """
        Args:
            image: an (H, W, 3) uint8 RGB array, an image path (see ``read_image``) or a
                RasterImage.
            class_names: the vocabulary (see ``parse_class_names``).
            keep_scores: return the (T, H, W) scores too (memory: 4 x T x H x W bytes).
        Returns:
            Prediction, with the georeference of a georeferenced input.
        """
        image = _as_raster_image(image)
        class_names = parse_class_names(class_names)
        labels, scores = self._predict_tiled(image.pixels, class_names, keep_scores)
        return Prediction(
            class_names=class_names,
            labels=labels,
            scores=scores,
            crs=image.crs,
            transform=image.transform,
        )

    def _predict_tiled(self, pixels, class_names, keep_scores):
        """(H, W, 3) uint8 -> labels (H, W) and, if kept, scores (T, H, W) float32."""
        H, W = pixels.shape[:2]
        T = len(class_names)
        h, w = min(self.tile_size, H), min(self.tile_size, W)
        ys = tile_starts(H, self.tile_size, self.tile_overlap)
        xs = tile_starts(W, self.tile_size, self.tile_overlap)
        weights_y = [tile_weights(y, h, H, self.tile_overlap) for y in ys]
        weights_x = [tile_weights(x, w, W, self.tile_overlap) for x in xs]
        logger.info("%d x %d px image: %d x %d tiles of %d x %d px.", H, W, len(ys), len(xs), h, w)

        labels = np.empty((H, W), _label_dtype(T))
        scores = np.empty((T, H, W), np.float32) if keep_scores else None
        band_sum = np.zeros((T, h, W), np.float32)  # rows band_top .. band_top + h
        band_weight = np.zeros((h, W), np.float32)
        band_top = 0
        with tqdm(
            total=len(ys) * len(xs),
            desc="tiles",
            unit="tile",
            leave=False,
            disable=not self.progress or len(ys) * len(xs) == 1,
        ) as bar:
            for row, y in enumerate(ys):
                _shift_band(band_sum, band_weight, y - band_top)
                band_top = y
                for first in range(0, len(xs), self.batch_size):
                    columns = range(first, min(first + self.batch_size, len(xs)))
                    inputs = [
                        {"image": _tile_tensor(pixels, y, xs[c], h, w), "height": h, "width": w}
                        for c in columns
                    ]
                    with torch.no_grad():
                        outputs = self.model(inputs, class_names)
                    for c, output in zip(columns, outputs):
                        tile_scores = output["sem_seg"].float().cpu().numpy()
                        weight = np.outer(weights_y[row], weights_x[c])
                        band_sum[:, :, xs[c] : xs[c] + w] += tile_scores * weight
                        band_weight[:, xs[c] : xs[c] + w] += weight
                    bar.update(len(columns))
                # Rows above the next tile row receive no more tiles: finalise them.
                done = (ys[row + 1] if row + 1 < len(ys) else H) - y
                final = band_sum[:, :done] / band_weight[:done]
                labels[y : y + done] = final.argmax(axis=0)
                if keep_scores:
                    scores[:, y : y + done] = final
        return labels, scores


def _tile_tensor(pixels, y, x, h, w):
    """(3, h, w) uint8 tensor of a tile (a copy: the scene array may be read-only)."""
    return torch.from_numpy(pixels[y : y + h, x : x + w].transpose(2, 0, 1).copy())


def _shift_band(band_sum, band_weight, shift):
    """Move the accumulator window down by ``shift`` rows in place (zeros come in at the
    bottom; NumPy copies overlapping ranges correctly)."""
    if shift == 0:
        return
    kept = band_weight.shape[0] - shift
    band_sum[:, :kept] = band_sum[:, shift:]
    band_weight[:kept] = band_weight[shift:]
    band_sum[:, kept:] = 0
    band_weight[kept:] = 0


def load_weights(model, weights):
    """Load a checkpoint with ``GSNetCheckpointer``; any failure is a ValueError naming the
    file (GSNetCheckpointer's explanation of an incompatible checkpoint included)."""
    try:
        GSNetCheckpointer(model).load(str(weights))
    except ValueError as error:
        raise ValueError(f"Cannot load weights {weights}: {error}") from None
    except Exception as error:  # torch/pickle raise many types on a corrupt file
        raise ValueError(
            f"Cannot load weights {weights}: not a readable checkpoint ({error})."
        ) from None


# ---------------------------------------------------------------------- outputs
def label_palette(num_classes):
    """(num_classes, 3) uint8 colours, the same for every call: the 20 colours of
    ``DISTINCT_COLOURS``, then hues stepped by the golden ratio with cycling saturation and
    brightness (pairwise different for any practical number of classes)."""
    colours = list(DISTINCT_COLOURS[:num_classes])
    index = 0
    while len(colours) < num_classes:
        hue = (index * 0.618033988749895) % 1.0
        saturation = (0.95, 0.65, 0.8)[index % 3]
        value = (0.95, 0.75, 0.55, 0.85)[(index // 3) % 4]
        colour = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))
        if colour not in colours:
            colours.append(colour)
        index += 1
    return np.array(colours, np.uint8).reshape(num_classes, 3)


def write_label_png(labels, path, *, palette):
    """Write (H, W) labels as a palette PNG (palette index = class index); with more than 256
    classes, as a 16-bit greyscale PNG (PNG palettes hold 256 colours)."""
    if labels.dtype == np.uint8:
        image = Image.fromarray(labels)
        image.putpalette(palette[:256].tobytes())
    else:
        logger.warning("More than 256 classes: %s is a 16-bit greyscale PNG.", path)
        image = Image.fromarray(labels.astype(np.uint16))
    image.save(path, optimize=True)


def write_label_geotiff(labels, path, *, crs, transform, palette):
    """Write (H, W) labels as a single-band GeoTIFF with the input's CRS and transform
    (uint8, with the palette as colour map, up to 256 classes; uint16 beyond)."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=labels.shape[0],
        width=labels.shape[1],
        count=1,
        dtype=labels.dtype.name,
        crs=crs,
        transform=transform,
        compress="deflate",
    ) as dataset:
        dataset.write(labels, 1)
        if labels.dtype == np.uint8:
            dataset.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(palette)})


STATISTICS_FIELDS = ["class_index", "class", "pixels", "percent", "area_m2"]


def write_statistics(rows, csv_path, json_path=None, *, extra=None, fields=STATISTICS_FIELDS):
    """Write per-class statistics rows (``Prediction.statistics()``) as CSV with the columns
    ``fields`` (area empty when unknown) and, optionally, as JSON {**extra, "classes": rows}."""
    with open(csv_path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    if json_path is not None:
        payload = {**(extra or {}), "classes": rows}
        Path(json_path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def draw_overlay(pixels, labels, class_names, *, palette, alpha=0.5, max_side=2048):
    """The image with its labels blended in colour, and a legend to the right naming each class
    with its colour and share of the image.

    Args:
        pixels: (H, W, 3) uint8 RGB. labels: (H, W) class indices. class_names: T names.
        palette: (T, 3) uint8 colours. alpha: weight of the label colours.
        max_side: larger images are shrunk to this long side (labels nearest-neighbour).
    Returns:
        PIL.Image (RGB).
    """
    H, W = labels.shape
    counts = np.bincount(labels.ravel(), minlength=len(class_names))
    scale = min(1.0, max_side / max(H, W))
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
    rows = np.arange(size[1]) * H // size[1]  # nearest-neighbour shrinking of the labels
    cols = np.arange(size[0]) * W // size[0]
    colour_image = Image.fromarray(palette[labels[np.ix_(rows, cols)]])
    blended = Image.blend(image, colour_image, alpha)

    font_size = max(12, round(max(size) / 60))
    font = ImageFont.load_default(size=font_size)
    line = round(font_size * 1.5)
    swatch = font_size
    margin = font_size
    texts = [
        f"{name} ({100 * count / labels.size:.1f}%)" for name, count in zip(class_names, counts)
    ]
    text_width = max(math.ceil(font.getlength(text)) for text in texts)
    legend_width = 3 * margin + swatch + text_width
    legend_height = 2 * margin + line * len(texts)
    canvas = Image.new("RGB", (size[0] + legend_width, max(size[1], legend_height)), "white")
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for index, text in enumerate(texts):
        top = margin + index * line
        left = size[0] + margin
        colour = tuple(int(c) for c in palette[index])
        draw.rectangle([left, top, left + swatch, top + swatch], fill=colour, outline="black")
        draw.text(
            (left + swatch + margin, top + swatch / 2), text, fill="black", font=font, anchor="lm"
        )
    return canvas
