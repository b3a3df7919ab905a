"""Imagery in and out: reading images and scenes (whole or window by window), label and score
GeoTIFFs written window by window, overlays and statistics files.

Shapes: H x W a scene, h x w a window, T classes, B the chosen bands.

PNG/JPEG/BMP/WebP are read whole with Pillow. TIFF, GeoTIFF and JPEG 2000 are read with rasterio,
an optional extra (``pip install -e .[geo]``; scripts/setup.sh installs it): everything here that
needs it imports it when called and says how to install it when missing, so ``import gsnet``
works without it.

Bands. ``bands`` (1-based, e.g. (4, 3, 2)) picks and orders the bands that become R, G, B; one
band is replicated as grey. The default is bands 1, 2, 3, or band 1 as grey for a scene of fewer
than three bands; the other bands are not read.

Valid pixels. A pixel has no class ("nodata") where the scene's mask says so: GDAL's mask of the
chosen bands, built from a declared nodata value, an internal mask or an alpha band (a pixel is
invalid where every chosen band is masked, as GDAL's dataset mask does), non-finite values of a
float scene, or a zero alpha of a Pillow image.

Stretch. Non-uint8 data are mapped to 0-255 per band between the 2nd and 98th percentiles of the
valid pixels (``STRETCH_PERCENTILES``), taken over the whole scene once (from its overviews, or
from an even grid of sample windows when it is larger than ``STRETCH_SAMPLE_PIXELS``), so that
every window of a scene is stretched alike.
"""

import colorsys
import csv
import io
import json
import logging
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .checkpoint import PARTIAL_SUFFIX, write_file_atomically
from .errors import ConfigError, InputFileError

__all__ = [
    "IMAGE_SUFFIXES",
    "RASTER_SUFFIXES",
    "STATISTICS_FIELDS",
    "STRETCH_PERCENTILES",
    "GeoTiffRowWriter",
    "ImageReadError",
    "RasterImage",
    "RasterScene",
    "copy_rows",
    "draw_overlay",
    "label_palette",
    "parse_bands",
    "partial_name",
    "read_decimated_labels",
    "read_image",
    "replace_partial",
    "require_rasterio",
    "stretch_to_uint8",
    "to_cloud_optimized",
    "write_label_geotiff",
    "write_label_png",
    "write_overlay",
    "write_statistics",
]

logger = logging.getLogger(__name__)

# Read whole with Pillow; every other file (TIFF, GeoTIFF, JPEG 2000, ...) with rasterio.
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Files read with rasterio, window by window.
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
# The files that a folder or a glob given as input contributes.
IMAGE_SUFFIXES = PILLOW_SUFFIXES + RASTER_SUFFIXES
# Non-uint8 bands are mapped to 0-255 between these percentiles of their valid pixels.
STRETCH_PERCENTILES = (2.0, 98.0)
# Scenes up to this many pixels take their stretch from every pixel; larger ones from samples.
STRETCH_SAMPLE_PIXELS = 1 << 22
# Larger scenes: an even grid of this many windows per side, each this many pixels a side.
STRETCH_SAMPLE_GRID = 8
STRETCH_SAMPLE_WINDOW = 256
# Block side of the GeoTIFFs written (GDAL's tiled layout; a multiple of 16).
GEOTIFF_BLOCK = 256


class ImageReadError(InputFileError):
    """An input image cannot be read; the message names the file."""


def require_rasterio():
    """The rasterio module, or an error saying how to install the geospatial extra."""
    try:
        import rasterio
    except ImportError:
        raise InputFileError(
            "TIFF, GeoTIFF and JPEG 2000 files need rasterio, GSNet's optional geospatial "
            "extra: pip install -e '.[geo]' (scripts/setup.sh installs it)."
        ) from None
    return rasterio


def parse_bands(text):
    """``"4,3,2"`` -> (4, 3, 2): one band (grey) or three (R, G, B), 1-based."""
    try:
        bands = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        bands = ()
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ConfigError(
            f"--bands {text!r}: give three 1-based band numbers for R, G, B (e.g. 4,3,2) or one "
            "band for grey (e.g. 1)."
        )
    return bands


def _check_bands(bands, count, path):
    if bands is None:
        return (1, 2, 3) if count >= 3 else (1, 1, 1)
    beyond = [band for band in bands if band > count]
    if beyond:
        raise ImageReadError(
            f"Cannot read image {path}: band {beyond[0]} asked for (--bands), but it has "
            f"{count} band(s)."
        )
    return bands * 3 if len(bands) == 1 else tuple(bands)


# ---------------------------------------------------------------------- whole images
@dataclass
class RasterImage:
    """An image ready for the model.

    Attributes:
        pixels: (H, W, 3) uint8 RGB.
        path: the file it was read from, if any.
        crs: the coordinate reference system of a georeferenced file (rasterio CRS), else None.
        transform: the pixel -> CRS affine transform of a georeferenced file, else None.
        valid: (H, W) bool, False where a pixel has no data; None when every pixel has data.
    """

    pixels: np.ndarray
    path: Path | None = None
    crs: Any = None
    transform: Any = None
    valid: np.ndarray | None = None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None


def stretch_to_uint8(band, *, nodata=None, limits=None, valid=None):
    """Map one band of any numeric type to uint8: values at the 2nd / 98th percentile
    (``STRETCH_PERCENTILES``) of the valid pixels, or at ``limits``, become 0 / 255, linearly in
    between, clipped outside. Invalid pixels (non-finite, equal to ``nodata`` or False in
    ``valid``) become 0, and so does a constant band.

    Args:
        band: (H, W) array. nodata: the file's no-data value, or None.
        limits: (low, high) to use instead of the band's own percentiles, or None.
        valid: (H, W) bool mask of valid pixels, or None.
    Returns:
        (H, W) uint8.
    """
    band = band.astype(np.float32, copy=False)
    valid = np.isfinite(band) if valid is None else valid & np.isfinite(band)
    if nodata is not None:
        valid &= band != nodata
    out = np.zeros(band.shape, np.uint8)
    if limits is None:
        if not valid.any():
            return out
        limits = np.percentile(band[valid], STRETCH_PERCENTILES)
    low, high = limits
    if high > low:
        scaled = (band - low) * (255.0 / (high - low))
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        out[~valid] = 0
    return out


def _read_with_pillow(path, bands):
    """(H, W, 3) uint8 RGB and the valid mask (alpha > 0) of a Pillow image, or None."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)  # camera JPEGs: as displayed
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            grey = np.asarray(image)
            if bands is not None:
                _check_bands(bands, 1, path)
            return np.repeat(stretch_to_uint8(grey)[..., None], 3, axis=2), None
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        channels = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    valid = None
    if has_alpha:
        valid = channels[..., 3] > 0
        channels = channels[..., :3]
        valid = None if valid.all() else valid
    if bands is not None:
        chosen = _check_bands(bands, 3, path)
        channels = channels[..., [band - 1 for band in chosen]]
    return np.ascontiguousarray(channels), valid


def read_image(path, *, bands=None):
    """Read a whole image file as RGB uint8, keeping the georeference and mask of a GeoTIFF.

    PNG/JPEG/BMP/WebP are read with Pillow (an alpha channel is the valid mask), everything else
    (TIFF, GeoTIFF, JPEG 2000) with rasterio, as ``RasterScene`` reads it (bands, mask, stretch).

    Args:
        path (str or Path): the file.
        bands: 1-based bands for R, G, B (or one band for grey); default see the module.
    Returns:
        RasterImage.
    Raises:
        ImageReadError: the file is missing, corrupt, not an image, or lacks a band asked for.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"Cannot read image {path}: no such file.")
    if path.suffix.lower() not in PILLOW_SUFFIXES:
        with RasterScene.open(path, bands=bands) as scene:
            pixels, valid = scene.read_tile(0, 0, scene.height, scene.width)
            return RasterImage(
                pixels=pixels, path=path, crs=scene.crs, transform=scene.transform, valid=valid
            )
    try:
        pixels, valid = _read_with_pillow(path, bands)
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # PIL raises SyntaxError for some broken PNG chunks, DecompressionBombError for images
        # too large to be anything but an attack.
        raise ImageReadError(f"Cannot read image {path}: {error}") from None
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageReadError(f"Cannot read image {path}: it has no pixels.")
    return RasterImage(pixels=pixels, path=path, valid=valid)


# ---------------------------------------------------------------------- scenes, by window
class RasterScene:
    """A TIFF/GeoTIFF/JPEG 2000 scene read window by window with rasterio.

    Attributes:
        height, width: the scene's size in pixels.
        crs, transform: its georeference (None without one).
        bands: the 1-based bands read as R, G, B.
        stretch: per chosen band (low, high) of the uint8 stretch, or None for uint8 data.
        has_mask: whether any pixel can be invalid (nodata, mask, alpha or float data).
    """

    def __init__(self, dataset, path, bands):
        from rasterio.enums import MaskFlags

        self.dataset = dataset
        self.path = Path(path)
        self.height, self.width = dataset.height, dataset.width
        if self.height == 0 or self.width == 0:
            raise ImageReadError(f"Cannot read image {path}: it has no pixels.")
        self.crs = dataset.crs
        self.transform = None if dataset.crs is None else dataset.transform
        self.bands = _check_bands(bands, dataset.count, path)
        dtypes = {dataset.dtypes[band - 1] for band in self.bands}
        self.is_float = any(np.issubdtype(np.dtype(d), np.floating) for d in dtypes)
        self.has_mask = self.is_float or any(
            MaskFlags.all_valid not in dataset.mask_flag_enums[band - 1] for band in self.bands
        )
        self.stretch = None if dtypes == {"uint8"} else self._stretch_limits()
        if self.stretch is not None:
            kinds = "/".join(sorted(dtypes))
            logger.info("%s holds %s data: stretch between %s.", path, kinds, self.stretch)

    @classmethod
    @contextmanager
    def open(cls, path, *, bands=None):
        """``with RasterScene.open(path, bands=(4, 3, 2)) as scene: ...``

        Raises:
            ImageReadError: the file cannot be opened or lacks a band asked for.
        """
        rasterio = require_rasterio()
        from rasterio.errors import NotGeoreferencedWarning, RasterioError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dataset = rasterio.open(path)
        except (OSError, RasterioError) as error:
            raise ImageReadError(f"Cannot read image {path}: {error}") from None
        with dataset:
            yield cls(dataset, path, bands)

    @property
    def georeferenced(self) -> bool:
        return self.transform is not None

    def _read(self, window, out_shape=None):
        """(B, h, w) bands and (B, h, w) bool per-band valid masks (None: all valid)."""
        from rasterio.errors import RasterioError

        unique = sorted(set(self.bands))
        shape = None if out_shape is None else (len(unique), *out_shape)
        try:
            data = self.dataset.read(unique, window=window, out_shape=shape)
            masks = None
            if self.has_mask:
                masks = self.dataset.read_masks(unique, window=window, out_shape=shape) > 0
        except RasterioError as error:  # e.g. a damaged block
            raise ImageReadError(f"Cannot read image {self.path}: {error}") from None
        if masks is not None and self.is_float:
            masks &= np.isfinite(data)
        order = [unique.index(band) for band in self.bands]
        return data[order], None if masks is None else masks[order]

    def _stretch_limits(self):
        """Per chosen band (low, high): the stretch percentiles over the whole scene."""
        from rasterio.windows import Window

        if self.height * self.width <= STRETCH_SAMPLE_PIXELS:
            samples = [self._read(None)]
        elif self.dataset.overviews(self.bands[0]):
            scale = math.sqrt(STRETCH_SAMPLE_PIXELS / (self.height * self.width))
            shape = (max(1, int(self.height * scale)), max(1, int(self.width * scale)))
            samples = [self._read(None, out_shape=shape)]
        else:
            side = STRETCH_SAMPLE_WINDOW
            rows = np.linspace(0, max(0, self.height - side), STRETCH_SAMPLE_GRID).astype(int)
            cols = np.linspace(0, max(0, self.width - side), STRETCH_SAMPLE_GRID).astype(int)
            samples = [
                self._read(Window(int(x), int(y), min(side, self.width), min(side, self.height)))
                for y in sorted(set(rows))
                for x in sorted(set(cols))
            ]
        limits = []
        for index in range(len(self.bands)):
            values = []
            for data, masks in samples:
                band = data[index].astype(np.float32)
                keep = np.isfinite(band) if masks is None else masks[index]
                values.append(band[keep])
            values = np.concatenate(values)
            if values.size == 0:
                limits.append((0.0, 0.0))
            else:
                low, high = np.percentile(values, STRETCH_PERCENTILES)
                limits.append((float(low), float(high)))
        return limits

    def _to_rgb(self, data, masks):
        """(h, w, 3) uint8 RGB (masked values of a stretched band become 0) and the (h, w)
        valid mask: False where every chosen band is masked (None: all valid)."""
        if self.stretch is not None:
            band_masks = [None] * len(data) if masks is None else masks
            data = np.stack(
                [
                    stretch_to_uint8(band, limits=limits, valid=mask)
                    for band, limits, mask in zip(data, self.stretch, band_masks)
                ]
            )
        valid = None if masks is None else masks.any(axis=0)
        return np.ascontiguousarray(data.transpose(1, 2, 0)), valid

    def read_tile(self, y, x, h, w):
        """(h, w, 3) uint8 RGB of the window at row ``y``, column ``x`` and its (h, w) valid
        mask (None when every pixel of the scene is valid)."""
        from rasterio.windows import Window

        return self._to_rgb(*self._read(Window(x, y, w, h)))

    def read_decimated(self, max_side):
        """The whole scene shrunk to ``max_side`` on its long side (from overviews where the file
        has them): (h, w, 3) uint8 RGB and the valid mask (or None)."""
        scale = min(1.0, max_side / max(self.height, self.width))
        shape = (max(1, round(self.height * scale)), max(1, round(self.width * scale)))
        return self._to_rgb(*self._read(None, out_shape=shape))


# ---------------------------------------------------------------------- writing
def partial_name(path, tag=""):
    """The temporary name under which ``path`` is written before its final rename."""
    path = Path(path)
    return path.with_name(f".{path.name}{tag}{PARTIAL_SUFFIX}")


def replace_partial(path, tag=""):
    """Rename the complete temporary file of ``path`` to its final name."""
    os.replace(partial_name(path, tag), path)


def label_palette(num_classes):
    """(num_classes, 3) uint8 colours, the same for every call: the distinct colours of
    Detectron2's colormap but black (the nodata colour), then hues stepped by the golden ratio
    with cycling saturation and brightness (pairwise different for any practical number of
    classes)."""
    from detectron2.utils.colormap import colormap

    rows = (tuple(int(c) for c in row) for row in colormap(rgb=True, maximum=255))
    colours = [c for c in dict.fromkeys(rows) if c != (0, 0, 0)][:num_classes]
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


def _save_image_atomically(image, path, **options):
    write_file_atomically(str(path), lambda f: image.save(f, format="PNG", **options))


def write_label_png(labels, path, *, palette):
    """Write (H, W) labels as a palette PNG (palette index = class index; the nodata label 255
    is black); with more than 255 classes, as a 16-bit greyscale PNG. Atomic."""
    if labels.dtype == np.uint8:
        image = Image.fromarray(labels)
        image.putpalette(palette[:255].tobytes())
    else:
        logger.warning("More than 255 classes: %s is a 16-bit greyscale PNG.", path)
        image = Image.fromarray(labels.astype(np.uint16))
    _save_image_atomically(image, path, optimize=True)


class GeoTiffRowWriter:
    """Writes a label map (one band) or score maps (T float32 bands) into a tiled, deflate
    compressed GeoTIFF, rows of full width at a time, under a temporary name; ``close()`` renames
    it to ``path`` (``cog=True``: rewritten as a Cloud-Optimized GeoTIFF with overviews), or,
    for a part (``tag`` given), leaves it at ``partial_name(path, tag)`` for joining. Rows
    are buffered up to GeoTIFF block boundaries, so each block is compressed once: memory is
    about two block rows of the scene's width.

    Use as a context manager: leaving it by an exception removes the temporary file.
    """

    def __init__(
        self,
        path,
        *,
        height,
        width,
        dtype,
        count=1,
        nodata=None,
        crs=None,
        transform=None,
        palette=None,
        descriptions=None,
        cog=False,
        tag="",
        top=0,
    ):
        """
        Args:
            path: the final file name.
            height, width: the size of the file (rows ``top`` .. ``top + height`` of a scene).
            dtype: NumPy dtype name of the bands. count: number of bands.
            nodata: the value written where a pixel has no class (tagged in the file).
            crs, transform: the scene's georeference (transform of the scene's first row).
            palette: (T, 3) uint8 colours written as the colour map of a uint8 label band.
            descriptions: band descriptions (class names of score bands).
            cog: rewrite as a Cloud-Optimized GeoTIFF when closing.
            tag: marks a part of the file, written by one of several processes: kept under
                ``partial_name(path, tag)`` when closed, for ``copy_rows`` to join.
            top: the first scene row this file holds (the rows given to ``write``).
        """
        rasterio = require_rasterio()
        self.path = Path(path)
        self.tag = tag
        self.cog = cog
        self.top = top
        self.height, self.width, self.count = height, width, count
        self.dtype = np.dtype(dtype)
        self._pending = []
        self._pending_top = 0
        profile = dict(
            driver="GTiff",
            height=height,
            width=width,
            count=count,
            dtype=self.dtype.name,
            nodata=nodata,
            compress="deflate",
            tiled=True,
            blockxsize=GEOTIFF_BLOCK,
            blockysize=GEOTIFF_BLOCK,
            BIGTIFF="IF_SAFER",
        )
        if crs is not None:
            profile.update(crs=crs, transform=transform)
        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dataset = rasterio.open(partial_name(self.path, tag), "w", **profile)
        if palette is not None and self.dtype == np.uint8:
            self._dataset.write_colormap(
                1, {index: (*map(int, colour), 255) for index, colour in enumerate(palette)}
            )
        for index, description in enumerate(descriptions or ()):
            self._dataset.set_band_description(index + 1, description)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def next_row(self):
        """The scene row that the next ``write`` must start at."""
        return self.top + self._pending_top + sum(rows.shape[1] for rows in self._pending)

    def write(self, top, rows):
        """Write ``rows`` ((rows, W) for one band, (T, rows, W) for several), the scene rows
        ``top`` ..; calls must come in order, without gaps."""
        rows = rows if rows.ndim == 3 else rows[None]
        if top != self.next_row:
            raise ValueError(f"rows from {top} written, but row {self.next_row} comes next")
        self._pending.append(rows.astype(self.dtype, copy=False))
        buffered = sum(r.shape[1] for r in self._pending)
        end = self._pending_top + buffered
        aligned = end if end == self.height else end - end % GEOTIFF_BLOCK
        if aligned > self._pending_top:
            self._flush(aligned - self._pending_top)

    def _flush(self, num_rows):
        from rasterio.windows import Window

        block = np.concatenate(self._pending, axis=1)
        self._dataset.write(
            block[:, :num_rows], window=Window(0, self._pending_top, self.width, num_rows)
        )
        self._pending = [block[:, num_rows:]] if block.shape[1] > num_rows else []
        self._pending_top += num_rows

    def close(self):
        """Finish the file and give it its final name (complete files only; a part keeps its
        temporary name)."""
        if self._pending_top != self.height:
            raise ValueError(f"{self.path}: {self._pending_top} of {self.height} rows written")
        self._dataset.close()
        if self.cog:
            to_cloud_optimized(partial_name(self.path, self.tag))
        if not self.tag:
            replace_partial(self.path)

    def abort(self):
        self._dataset.close()
        partial_name(self.path, self.tag).unlink(missing_ok=True)


def to_cloud_optimized(path):
    """Rewrite a GeoTIFF in place as a Cloud-Optimized GeoTIFF (deflate, overviews by nearest
    neighbour for labels)."""
    import rasterio.shutil

    path = Path(path)
    cog = path.with_name(path.name + ".cog")
    rasterio.shutil.copy(
        path, cog, driver="COG", COMPRESS="DEFLATE", RESAMPLING="NEAREST", BIGTIFF="IF_SAFER"
    )
    os.replace(cog, path)


def copy_rows(source, writer, *, chunk=GEOTIFF_BLOCK):
    """Append every row of the GeoTIFF ``source`` to ``writer``, a chunk of rows at a time."""
    rasterio = require_rasterio()
    from rasterio.windows import Window

    with rasterio.open(source) as dataset:
        for top in range(0, dataset.height, chunk):
            rows = min(chunk, dataset.height - top)
            data = dataset.read(window=Window(0, top, dataset.width, rows))
            writer.write(writer.next_row, data)


def read_decimated_labels(path, shape):
    """A label GeoTIFF shrunk to ``shape`` (nearest neighbour, from overviews where present)."""
    rasterio = require_rasterio()
    from rasterio.enums import Resampling

    with rasterio.open(path) as dataset:
        return dataset.read(1, out_shape=shape, resampling=Resampling.nearest)


def write_label_geotiff(labels, path, *, crs, transform, palette, nodata=None, cog=False):
    """Write (H, W) labels as a single-band tiled GeoTIFF with the input's CRS and transform
    (uint8 with the palette as colour map up to 255 classes, uint16 beyond), atomically."""
    with GeoTiffRowWriter(
        path,
        height=labels.shape[0],
        width=labels.shape[1],
        dtype=labels.dtype,
        nodata=nodata,
        crs=crs,
        transform=transform,
        palette=palette,
        cog=cog,
    ) as writer:
        writer.write(0, labels)


STATISTICS_FIELDS = ["class_index", "class", "pixels", "percent", "area_m2"]


def write_statistics(rows, csv_path, json_path=None, *, extra=None, fields=STATISTICS_FIELDS):
    """Write per-class statistics rows (``Prediction.statistics()``) as CSV with the columns
    ``fields`` (area empty when unknown) and, optionally, as JSON {**extra, "classes": rows};
    each file atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    write_file_atomically(str(csv_path), lambda f: f.write(text.getvalue().encode("utf-8")))
    if json_path is not None:
        payload = json.dumps({**(extra or {}), "classes": rows}, indent=2) + "\n"
        write_file_atomically(str(json_path), lambda f: f.write(payload.encode("utf-8")))


def draw_overlay(
    pixels, labels, class_names, *, palette, alpha=0.5, max_side=2048, valid=None, percents=None
):
    """The image with its labels blended in colour (not where a pixel has no data), and a
    legend to the right naming each class with its colour and share of the valid pixels.

    Args:
        pixels: (H, W, 3) uint8 RGB. labels: (H, W) class indices. class_names: T names.
        palette: (T, 3) uint8 colours. alpha: weight of the label colours.
        max_side: larger images are shrunk to this long side (labels nearest-neighbour).
        valid: (H, W) bool, False where a pixel has no class (left uncoloured); None: all.
        percents: the T shares to show in the legend; default counted from ``labels``.
    Returns:
        PIL.Image (RGB).
    """
    H, W = labels.shape
    if percents is None:
        kept = labels if valid is None else labels[valid]
        counts = np.bincount(kept.ravel(), minlength=len(class_names))[: len(class_names)]
        percents = 100 * counts / max(1, kept.size)
    scale = min(1.0, max_side / max(H, W))
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
    rows = np.arange(size[1]) * H // size[1]  # nearest-neighbour shrinking of the labels
    cols = np.arange(size[0]) * W // size[0]
    small = labels[np.ix_(rows, cols)]
    colours = palette[np.minimum(small, len(palette) - 1)]
    blended = np.asarray(Image.blend(image, Image.fromarray(colours), alpha))
    if valid is not None:
        shown = valid[np.ix_(rows, cols)]
        blended = np.where(shown[..., None], blended, np.asarray(image))
    blended = Image.fromarray(np.ascontiguousarray(blended))

    font_size = max(12, round(max(size) / 60))
    font = ImageFont.load_default(size=font_size)
    line = round(font_size * 1.5)
    swatch = font_size
    margin = font_size
    texts = [f"{name} ({percent:.1f}%)" for name, percent in zip(class_names, percents)]
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


def write_overlay(overlay, path):
    """Save an overlay image as PNG, atomically."""
    _save_image_atomically(overlay, path, optimize=True)
