#!/usr/bin/env python
r"""Segment your own images with GSNet, for any list of class names.

    python tools/predict.py --config configs/vitb_384.yaml --weights model.pth \
        --classes "building,road,tree,water" --input scene.tif --output out/

--input takes files, folders (their PNG/JPEG/TIFF/GeoTIFF/JPEG 2000 files) and globs, several
at once. Per image, the output folder receives <stem>_labels.png (palette PNG, palette index =
class index), <stem>_labels.tif (GeoTIFF with the input's CRS and transform, georeferenced
inputs only), <stem>_overlay.png (colours over the image, with a legend), <stem>_stats.csv and
<stem>_stats.json (per class: pixels, percent, and square metres for a projected CRS); then
summary.csv and summary.json over all images. Existing outputs are kept unless --overwrite.
Config overrides (KEY VALUE ...) go at the end, as with Detectron2's tools.
"""

import argparse
import glob
import json
import logging
import re
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from gsnet.allocator import keep_freed_memory
from gsnet.predictor import (
    IMAGE_SUFFIXES,
    STATISTICS_FIELDS,
    ImageReadError,
    Predictor,
    draw_overlay,
    label_palette,
    parse_class_names,
    read_image,
    write_label_geotiff,
    write_label_png,
    write_statistics,
)

logger = logging.getLogger("predict")

# Files of which a GeoTIFF label map may be written (known only once the file is read).
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
SUMMARY_FILES = ("summary.csv", "summary.json")
# A Detectron2 config key (MODEL.DEVICE): where the overrides start (see split_overrides).
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--config", required=True, help="GSNet YAML, e.g. configs/vitb_384.yaml")
    parser.add_argument("--weights", required=True, help="checkpoint (ours or the released file)")
    parser.add_argument(
        "--classes",
        required=True,
        help='class names: "building,road,tree" or a .json file holding a list of names',
    )
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        action="extend",
        help="image files, folders or globs (several allowed)",
    )
    parser.add_argument("--output", required=True, help="folder for the results")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the config's)")
    parser.add_argument(
        "--precision",
        choices=["float32", "bfloat16", "float16"],
        help="inference precision (default: the config's TEST.PRECISION)",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        help="tile side in pixels (default: the config's INPUT.MIN_SIZE_TEST, 640 for the paper)",
    )
    parser.add_argument(
        "--tile-overlap", type=int, help="pixels shared by neighbouring tiles (default: 1/4 tile)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... at the end"
    )
    args = parser.parse_args(argv)
    args.input, overrides = split_overrides(args.input)
    args.opts = overrides + args.opts
    if len(args.opts) % 2:
        parser.error(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    return args


def split_overrides(inputs):
    """--input takes several values, so overrides written right after it land in it: the first
    value that looks like a config key (MODEL.DEVICE) and is no existing path starts them."""
    for index, value in enumerate(inputs):
        if CONFIG_KEY.match(value) and not Path(value).exists():
            return inputs[:index], inputs[index:]
    return inputs, []


class UsageError(Exception):
    """A problem with the command's arguments or files: reported in one line, exit status 1."""


def find_inputs(patterns):
    """Files named by --input values: a file as is, a folder's image files, a glob's image
    files; in order, without repeats. Every value must contribute at least one file."""
    found = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            matches = sorted(
                Path(p)
                for p in glob.glob(pattern, recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES
            )
        if not matches:
            raise UsageError(f"--input {pattern!r} matched no image file.")
        found.extend(matches)
    return list(dict.fromkeys(p.resolve() for p in found))


def output_names(image_path):
    """The outputs an image may produce, by kind."""
    stem = image_path.stem
    names = {
        "labels_png": f"{stem}_labels.png",
        "overlay": f"{stem}_overlay.png",
        "stats_csv": f"{stem}_stats.csv",
        "stats_json": f"{stem}_stats.json",
    }
    if image_path.suffix.lower() in RASTER_SUFFIXES:
        names["labels_tif"] = f"{stem}_labels.tif"
    return names


def check_outputs(images, output, overwrite):
    """Refuse two inputs writing the same files, and existing outputs unless ``overwrite``."""
    by_stem = {}
    for image in images:
        if image.stem in by_stem:
            raise UsageError(
                f"{by_stem[image.stem]} and {image} would write the same outputs "
                f"({image.stem}_*): process them into separate --output folders."
            )
        by_stem[image.stem] = image
    if overwrite:
        return
    planned = [name for image in images for name in output_names(image).values()]
    clashes = [name for name in [*planned, *SUMMARY_FILES] if (output / name).exists()]
    if clashes:
        shown = ", ".join(clashes[:10]) + (f" and {len(clashes) - 10} more" if clashes[10:] else "")
        raise UsageError(
            f"{len(clashes)} output file(s) already exist in {output}: {shown}. "
            "Use --overwrite to replace them, or another --output folder."
        )


def prepare_output(output):
    """Create the output folder and check that a file can be written there."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as error:
        raise UsageError(f"Output folder {output} is not writable: {error}") from None


def write_outputs(image, prediction, output):
    """Write one image's outputs; returns its summary entry."""
    names = output_names(image.path)
    palette = label_palette(len(prediction.class_names))
    write_label_png(prediction.labels, output / names["labels_png"], palette=palette)
    written = {"labels_png": names["labels_png"]}
    if image.georeferenced:
        write_label_geotiff(
            prediction.labels,
            output / names["labels_tif"],
            crs=prediction.crs,
            transform=prediction.transform,
            palette=palette,
        )
        written["labels_tif"] = names["labels_tif"]
    overlay = draw_overlay(image.pixels, prediction.labels, prediction.class_names, palette=palette)
    overlay.save(output / names["overlay"], optimize=True)
    height, width = prediction.labels.shape
    entry = {
        "image": str(image.path),
        "height": height,
        "width": width,
        "crs": prediction.crs.to_string() if prediction.crs is not None else None,
        "pixel_area_m2": prediction.pixel_area_m2,
        "outputs": {
            **written,
            "overlay": names["overlay"],
            "stats_csv": names["stats_csv"],
            "stats_json": names["stats_json"],
        },
    }
    rows = prediction.statistics()
    write_statistics(rows, output / names["stats_csv"], output / names["stats_json"], extra=entry)
    return {**entry, "classes": rows}


def write_summary(entries, failed, class_names, output):
    """summary.csv: one row per image and class; summary.json: every image's statistics, the
    totals over all images, and the images that could not be read."""
    rows = [{"image": e["image"], **row} for e in entries for row in e["classes"]]
    total_pixels = sum(e["height"] * e["width"] for e in entries)
    areas_known = bool(entries) and all(e["pixel_area_m2"] is not None for e in entries)
    totals = []
    for index, name in enumerate(class_names):
        pixels = sum(e["classes"][index]["pixels"] for e in entries)
        area = sum(e["classes"][index]["area_m2"] for e in entries) if areas_known else None
        totals.append(
            {
                "class_index": index,
                "class": name,
                "pixels": pixels,
                "percent": 100.0 * pixels / total_pixels if total_pixels else 0.0,
                "area_m2": area,
            }
        )
    write_statistics(rows, output / "summary.csv", fields=["image", *STATISTICS_FIELDS])
    summary = {"class_names": class_names, "images": entries, "total": totals, "failed": failed}
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def fail(message):
    print(f"predict.py: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    output = Path(args.output)
    try:
        class_names = parse_class_names(args.classes)
        images = find_inputs(args.input)
        if not Path(args.weights).is_file():
            raise UsageError(f"Weights file not found: {args.weights}")
        prepare_output(output)
        check_outputs(images, output, args.overwrite)
        predictor = Predictor(
            args.config,
            args.weights,
            opts=args.opts,
            device=args.device,
            precision=args.precision,
            tile_size=args.tile_size,
            tile_overlap=args.tile_overlap,
            batch_size=args.batch_size,
        )
    except (UsageError, ValueError, FileNotFoundError) as error:
        fail(error)

    entries, failed = [], []
    for path in tqdm(images, desc="images", unit="image", disable=len(images) == 1):
        try:
            image = read_image(path)
        except ImageReadError as error:
            logger.error("%s", error)
            failed.append({"image": str(path), "error": str(error)})
            continue
        prediction = predictor(image, class_names, keep_scores=False)
        entries.append(write_outputs(image, prediction, output))
    write_summary(entries, failed, class_names, output)
    if failed:
        names = ", ".join(Path(f["image"]).name for f in failed)
        fail(f"{len(failed)} of {len(images)} image(s) could not be read: {names} (see above).")
    print(f"Wrote the results of {len(entries)} image(s) to {output}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
