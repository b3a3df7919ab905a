#!/usr/bin/env python
r"""Segment your own images with GSNet, for any list of class names.

    python tools/predict.py --config configs/vitb_384.yaml --weights model.pth \
        --classes "building,road,tree,water" --input scene.tif --output out/

--input takes files, folders (their PNG/JPEG/TIFF/GeoTIFF/JPEG 2000 files) and globs, several
at once. Per image, the output folder receives <stem>_labels.tif for TIFF/GeoTIFF/JPEG 2000
inputs (a tiled GeoTIFF with the input's CRS and transform, written window by window; nodata
255) or <stem>_labels.png for PNG/JPEG inputs (palette PNG, palette index = class index),
<stem>_overlay.png (colours over the image, with a legend), <stem>_stats.csv and
<stem>_stats.json (per class: pixels, percent and, for a projected CRS, square metres), and with
--scores <stem>_scores.tif (one float32 band per class); then summary.csv and summary.json over
all images. Files are written under temporary names and renamed when complete; a rerun skips the
images whose outputs are complete (and redoes the others) unless --overwrite.
--num-gpus N starts N processes (Detectron2's launcher, as tools/train_net.py): PNG/JPEG files are
shared out among them, and the tile rows of each TIFF/GeoTIFF.
Config overrides (KEY VALUE ...) go at the end, as with Detectron2's tools.
"""

import argparse
import glob
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from detectron2.utils import comm
from tqdm import tqdm

from gsnet.allocator import keep_freed_memory
from gsnet.checkpoint import PARTIAL_SUFFIX, write_file_atomically
from gsnet.config import CONFIG_KEY
from gsnet.errors import (
    ConfigError,
    add_debug_flag,
    check_minimum,
    output_write_errors,
    reporting_user_errors,
)
from gsnet.launcher import launch_tool
from gsnet.predictor import (
    Predictor,
    class_statistics,
    count_labels,
    label_dtype,
    nodata_label,
    parse_class_names,
    pixel_area_m2,
)
from gsnet.raster_io import (
    IMAGE_SUFFIXES,
    RASTER_SUFFIXES,
    STATISTICS_FIELDS,
    GeoTiffRowWriter,
    ImageReadError,
    RasterScene,
    copy_rows,
    draw_overlay,
    label_palette,
    parse_bands,
    partial_name,
    read_decimated_labels,
    read_image,
    write_label_png,
    write_overlay,
    write_statistics,
)

logger = logging.getLogger("predict")

OVERLAY_MAX_SIDE = 2048


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
    parser.add_argument(
        "--bands",
        help="1-based input bands for R,G,B, e.g. 4,3,2 (or one band for grey); default 1,2,3, "
        "or band 1 as grey for fewer than three bands; other bands are not read",
    )
    parser.add_argument(
        "--scores", action="store_true", help="also write <stem>_scores.tif (float32 per class)"
    )
    parser.add_argument(
        "--cog", action="store_true", help="write GeoTIFFs as Cloud-Optimized GeoTIFFs"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo images already done")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank")
    parser.add_argument(
        "--dist-url", default="auto", help="initialisation URL of the processes (auto: a free port)"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... at the end"
    )
    args = add_debug_flag(parser).parse_args(argv)
    args.input, overrides = split_overrides(args.input)
    args.opts = overrides + args.opts
    if len(args.opts) % 2:
        parser.error(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    check_minimum(parser, args, 1, "tile_size", "batch_size", "num_gpus", "num_machines")
    check_minimum(parser, args, 0, "tile_overlap")
    if not 0 <= args.machine_rank < args.num_machines:
        parser.error(f"--machine-rank must be in 0..{args.num_machines - 1}")
    try:
        args.bands = None if args.bands is None else parse_bands(args.bands)
    except ValueError as error:
        parser.error(str(error))
    return args


def split_overrides(inputs):
    """--input takes several values, so overrides written right after it land in it: the first
    value that looks like a config key (MODEL.DEVICE) and is no existing path starts them."""
    for index, value in enumerate(inputs):
        if CONFIG_KEY.match(value) and not Path(value).exists():
            return inputs[:index], inputs[index:]
    return inputs, []


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
            raise ConfigError(f"--input {pattern!r} matched no image file.")
        found.extend(matches)
    return list(dict.fromkeys(p.resolve() for p in found))


def is_scene(image_path):
    """Whether an input is read window by window (TIFF, GeoTIFF, JPEG 2000)."""
    return image_path.suffix.lower() in RASTER_SUFFIXES


def output_names(image_path, scores=False):
    """The outputs an image produces, by kind."""
    stem = image_path.stem
    names = {
        "labels_tif" if is_scene(image_path) else "labels_png": (
            f"{stem}_labels.tif" if is_scene(image_path) else f"{stem}_labels.png"
        ),
        "overlay": f"{stem}_overlay.png",
        "stats_csv": f"{stem}_stats.csv",
        "stats_json": f"{stem}_stats.json",
    }
    if scores:
        names["scores_tif"] = f"{stem}_scores.tif"
    return names


def completed_entry(image, output, class_names):
    """The statistics entry of an image whose outputs are all complete, else None. Raises a
    ConfigError for complete outputs of another vocabulary (they are not overwritten silently)."""
    stats = output / output_names(image)["stats_json"]
    try:
        entry = json.loads(stats.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not all((output / name).is_file() for name in entry.get("outputs", {}).values()):
        return None
    if [row["class"] for row in entry.get("classes", [])] != class_names:
        raise ConfigError(
            f"{stats} holds results for other class names: use --overwrite to replace them, or "
            "another --output folder."
        )
    return entry


def plan_images(images, output, class_names, overwrite):
    """The images still to do: all with ``overwrite``; else those without outputs (images whose
    outputs are complete are kept, and other existing outputs are refused, as they might not be
    this tool's). Temporary files of an interrupted run are removed. Refuses two inputs writing
    the same files."""
    by_stem = {}
    for image in images:
        if image.stem in by_stem:
            raise ConfigError(
                f"{by_stem[image.stem]} and {image} would write the same outputs "
                f"({image.stem}_*): process them into separate --output folders."
            )
        by_stem[image.stem] = image
    todo, clashes = [], []
    for image in images:
        stem = glob.escape(image.stem)
        for pattern in (f".{stem}_*{PARTIAL_SUFFIX}", f"..{stem}_*{PARTIAL_SUFFIX}"):
            for leftover in output.glob(pattern):
                leftover.unlink()
        if overwrite:
            todo.append(image)
        elif completed_entry(image, output, class_names) is None:
            existing = [n for n in output_names(image, True).values() if (output / n).exists()]
            clashes.extend(existing)
            todo.append(image)
    if clashes:
        shown = ", ".join(clashes[:10]) + (f" and {len(clashes) - 10} more" if clashes[10:] else "")
        raise ConfigError(
            f"{len(clashes)} output file(s) of unfinished images already exist in {output}: "
            f"{shown}. Use --overwrite to replace them, or another --output folder."
        )
    skipped = len(images) - len(todo)
    if skipped:
        print(f"{skipped} image(s) already done in {output}: kept (--overwrite redoes them).")
    return todo


def staged(path):
    """Where an output is written until its image is complete (see ``publish``)."""
    return partial_name(path)


def publish(output, written):
    """Give an image's outputs their final names, the statistics JSON (which marks the image
    complete) last."""
    for _, name in sorted(written.items(), key=lambda item: item[0] == "stats_json"):
        os.replace(staged(output / name), output / name)


def prepare_output(output):
    """Create the output folder and check that a file can be written there."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as error:
        raise ConfigError(f"Output folder {output} is not writable: {error}") from None


def share(count, rank, world):
    """The contiguous range of ``count`` items that process ``rank`` of ``world`` takes."""
    return range(count * rank // world, count * (rank + 1) // world)


def write_image_statistics(
    image_path, counts, class_names, *, height, width, crs, transform, written, output
):
    """Write <stem>_stats.csv and <stem>_stats.json (staged), then publish every output."""
    names = output_names(image_path)
    area = pixel_area_m2(crs, transform)
    valid = int(np.sum(counts))
    entry = {
        "image": str(image_path),
        "height": height,
        "width": width,
        "crs": crs.to_string() if crs is not None else None,
        "pixel_area_m2": area,
        "valid_pixels": valid,
        "nodata_pixels": height * width - valid,
        "outputs": {**written, "stats_csv": names["stats_csv"], "stats_json": names["stats_json"]},
    }
    rows = class_statistics(counts, class_names, pixel_area=area)
    write_statistics(
        rows, staged(output / names["stats_csv"]), staged(output / names["stats_json"]), extra=entry
    )
    publish(output, entry["outputs"])


def predict_image(predictor, image_path, class_names, output, args):
    """A PNG/JPEG image, read and predicted in memory (one process)."""
    names = output_names(image_path, args.scores)
    image = read_image(image_path, bands=args.bands)
    prediction = predictor(image, class_names, keep_scores=args.scores)
    palette = label_palette(len(class_names))
    write_label_png(prediction.labels, staged(output / names["labels_png"]), palette=palette)
    written = {"labels_png": names["labels_png"]}
    if args.scores:
        height, width = prediction.labels.shape
        with GeoTiffRowWriter(
            staged(output / names["scores_tif"]),
            height=height,
            width=width,
            dtype="float32",
            count=len(class_names),
            nodata=float("nan"),
            descriptions=class_names,
        ) as writer:
            writer.write(0, prediction.scores)
        written["scores_tif"] = names["scores_tif"]
    overlay = draw_overlay(
        image.pixels, prediction.labels, class_names, palette=palette, valid=prediction.valid
    )
    write_overlay(overlay, staged(output / names["overlay"]))
    written["overlay"] = names["overlay"]
    write_image_statistics(
        image_path,
        count_labels(prediction.labels, len(class_names)),
        class_names,
        height=image.pixels.shape[0],
        width=image.pixels.shape[1],
        crs=image.crs,
        transform=image.transform,
        written=written,
        output=output,
    )


def predict_scene(predictor, image_path, class_names, output, args):
    """A TIFF/GeoTIFF/JPEG 2000 scene, window by window; every process takes its share of the
    tile rows and writes them to a part file, which the main process joins (one process writes
    the final file directly)."""
    rank, world = comm.get_rank(), comm.get_world_size()
    names = output_names(image_path, args.scores)
    T = len(class_names)
    dtype = label_dtype(T)
    palette = label_palette(T)
    with RasterScene.open(image_path, bands=args.bands) as scene:
        H, W = scene.height, scene.width
        ys = predictor.tile_grid(H, W)[0]
        shares = [share(len(ys), r, world) for r in range(world)]

        def rows_of(blocks):
            """(first row, number of rows) of a range of row blocks."""
            if not blocks:
                return 0, 0
            bottom = ys[blocks.stop] if blocks.stop < len(ys) else H
            return ys[blocks.start], bottom - ys[blocks.start]

        def writers(tag, top, height, final):
            """The label (and score) writers of rows top .. top + height."""
            georeference = dict(crs=scene.crs, transform=scene.transform) if final else {}
            made = [
                GeoTiffRowWriter(
                    staged(output / names["labels_tif"]),
                    height=height,
                    width=W,
                    dtype=dtype,
                    nodata=nodata_label(dtype),
                    palette=palette,
                    cog=args.cog and final,
                    tag=tag,
                    top=top,
                    **georeference,
                )
            ]
            if args.scores:
                made.append(
                    GeoTiffRowWriter(
                        staged(output / names["scores_tif"]),
                        height=height,
                        width=W,
                        dtype="float32",
                        count=T,
                        nodata=float("nan"),
                        descriptions=class_names,
                        cog=args.cog and final,
                        tag=tag,
                        top=top,
                        **georeference,
                    )
                )
            return made

        counts = np.zeros(T, np.int64)
        top, height = rows_of(shares[rank])
        if height:
            made = writers(f".rank{rank}" if world > 1 else "", top, height, final=world == 1)
            try:
                for block in predictor.predict_rows(
                    scene.read_tile,
                    H,
                    W,
                    class_names,
                    keep_scores=args.scores,
                    blocks=shares[rank],
                ):
                    made[0].write(block.top, block.labels)
                    counts += count_labels(block.labels, T)
                    if args.scores:
                        made[1].write(block.top, block.scores)
            except BaseException:
                for writer in made:
                    writer.abort()
                raise
            for writer in made:
                writer.close()
        if world > 1:
            counts = np.sum(comm.all_gather(counts), axis=0)
            if rank == 0:
                join_parts(writers("", 0, H, final=True), shares, rows_of)
        if rank != 0:
            return
        written = {"labels_tif": names["labels_tif"]}
        if args.scores:
            written["scores_tif"] = names["scores_tif"]
        pixels, valid = scene.read_decimated(OVERLAY_MAX_SIDE)
        labels = read_decimated_labels(staged(output / names["labels_tif"]), pixels.shape[:2])
        shown = labels != nodata_label(dtype)
        overlay = draw_overlay(
            pixels,
            labels,
            class_names,
            palette=palette,
            valid=shown if valid is None else shown & valid,
            percents=100 * counts / max(1, counts.sum()),
        )
        write_overlay(overlay, staged(output / names["overlay"]))
        written["overlay"] = names["overlay"]
        write_image_statistics(
            image_path,
            counts,
            class_names,
            height=H,
            width=W,
            crs=scene.crs,
            transform=scene.transform,
            written=written,
            output=output,
        )


def join_parts(final_writers, shares, rows_of):
    """Copy every process's part files, in row order, into the final files; remove the parts."""
    for writer in final_writers:
        try:
            for rank, blocks in enumerate(shares):
                if rows_of(blocks)[1]:
                    source = partial_name(writer.path, f".rank{rank}")
                    copy_rows(source, writer)
                    source.unlink()
        except BaseException:
            writer.abort()
            raise
        writer.close()


def write_summary(images, failed, class_names, output):
    """summary.csv: one row per image and class; summary.json: every image's statistics, the
    totals over all images, and the images that could not be read."""
    entries = [
        json.loads((output / output_names(image)["stats_json"]).read_text(encoding="utf-8"))
        for image in images
        if (output / output_names(image)["stats_json"]).is_file()
    ]
    rows = [{"image": e["image"], **row} for e in entries for row in e["classes"]]
    areas_known = bool(entries) and all(e["pixel_area_m2"] is not None for e in entries)
    counts = [
        sum(e["classes"][index]["pixels"] for e in entries) for index in range(len(class_names))
    ]
    totals = class_statistics(counts, class_names)
    if areas_known:
        for index, total in enumerate(totals):
            total["area_m2"] = sum(e["classes"][index]["area_m2"] for e in entries)
    write_statistics(rows, output / "summary.csv", fields=["image", *STATISTICS_FIELDS])
    summary = {"class_names": class_names, "images": entries, "total": totals, "failed": failed}
    text = json.dumps(summary, indent=2) + "\n"
    write_file_atomically(str(output / "summary.json"), lambda f: f.write(text.encode("utf-8")))


def run(args):
    """One process's work (started by ``launch``)."""
    keep_freed_memory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rank, world = comm.get_rank(), comm.get_world_size()
    output = Path(args.output)
    predictor = Predictor(
        args.config,
        args.weights,
        opts=args.opts,
        device=args.device,
        precision=args.precision,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        batch_size=args.batch_size,
        progress=rank == 0,
    )
    class_names = predictor.prepare_class_names(args.classes)
    failed = []
    images = [Path(p) for p in args.todo]
    in_memory = [image for image in images if not is_scene(image)]
    mine = set(in_memory[rank::world])
    for image in tqdm(images, desc="images", unit="image", disable=len(images) < 2 or rank > 0):
        try:
            if is_scene(image):
                predict_scene(predictor, image, class_names, output, args)
            elif image in mine:
                predict_image(predictor, image, class_names, output, args)
        except ImageReadError as error:
            logger.error("%s", error)
            failed.append({"image": str(image), "error": str(error)})
    if world > 1:
        failed = [f for part in comm.all_gather(failed) for f in part]
        failed = list({f["image"]: f for f in failed}.values())
    if rank == 0:
        everything = [Path(p) for p in args.images]
        write_summary(everything, failed, class_names, output)
        if failed:
            shown = ", ".join(Path(f["image"]).name for f in failed)
            raise ConfigError(
                f"{len(failed)} of {len(everything)} image(s) could not be read: {shown} "
                "(see above)."
            )
        print(f"Wrote the results of {len(everything)} image(s) to {output}.")


OUTPUT_WRITE_FIX = "Free space or choose another --output; the images already complete are kept."


def run_writing_outputs(args):
    """``run`` in one process (started by ``launch_tool``)."""
    with output_write_errors(OUTPUT_WRITE_FIX):
        run(args)


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output)
    with (
        reporting_user_errors("predict.py", debug=args.debug),
        output_write_errors(OUTPUT_WRITE_FIX),
    ):
        class_names = parse_class_names(args.classes)
        images = find_inputs(args.input)
        if not Path(args.weights).is_file():
            raise ConfigError(f"Weights file not found: {args.weights}")
        if not Path(args.config).is_file():
            raise ConfigError(f"Config file not found: {args.config}")
        prepare_output(output)
        args.todo = [str(p) for p in plan_images(images, output, class_names, args.overwrite)]
        args.images = [str(p) for p in images]
    # Detectron2's launcher, or the processes of torchrun / srun (gsnet.launcher).
    launch_tool("predict.py", run_writing_outputs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
