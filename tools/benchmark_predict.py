#!/usr/bin/env python
r"""Peak memory and throughput of tools/predict.py against scene size (a benchmark, not a test).

    python tools/benchmark_predict.py                                  # toy model, 2k/8k/16k
    python tools/benchmark_predict.py --sizes 1024 --config configs/vitb_384.yaml

For each size a square uint16 GeoTIFF (4 bands, tiled, deflate, nodata 0 in a border of a tenth
of the side) is generated window by window, and tools/predict.py segments it in a process of its
own with a random-weight model of --config (its checkpoint is written once). Reported per size:
the process's peak resident memory (getrusage of that process: model, reading, blending and
writing together), its wall time, megapixels per second over that wall time, and the wall time
of a 64 x 64 scene (model build and load, text encoding: the fixed cost included in each run).
The numbers depend on the machine and on what else runs on it.
Config overrides (KEY VALUE ...) go at the end, as with Detectron2's tools.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gsnet.errors import (
    USER_ERROR_STATUS,
    ConfigError,
    add_debug_flag,
    check_minimum,
    reporting_user_errors,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = "building,road,tree,water"
# Rows of the generated scene written at a time.
GENERATE_ROWS = 512


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "toy.yaml"))
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[2048, 8192, 16384], help="scene sides in pixels"
    )
    parser.add_argument("--tile-size", type=int, help="as predict.py's (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=4, help="as predict.py's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", help="folder for the scenes and outputs (default: a temp)")
    parser.add_argument(
        "--predict-script",
        default=str(REPO_ROOT / "tools" / "predict.py"),
        help="the predict.py to measure, e.g. another checkout's to compare (run with that "
        "checkout on PYTHONPATH)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = add_debug_flag(parser).parse_args(argv)
    if min(args.sizes) < 64:
        parser.error(f"--sizes must be at least 64 pixels, got {min(args.sizes)}")
    check_minimum(parser, args, 1, "batch_size", "tile_size")
    for name in ("config", "predict_script"):
        if not Path(getattr(args, name)).is_file():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such file")
    if args.workdir and not Path(args.workdir).is_dir():
        parser.error(f"--workdir {args.workdir}: no such folder")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json {args.json}: its folder does not exist")
    return args


def write_scene(path, side):
    """A side x side uint16 GeoTIFF with a nodata border, written GENERATE_ROWS rows at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    border = side // 10
    rng = np.random.default_rng(0)
    columns = np.arange(side)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=side,
        width=side,
        count=4,
        dtype="uint16",
        nodata=0,
        crs="EPSG:32633",
        transform=from_origin(500000, 5000000, 0.5, 0.5),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        BIGTIFF="IF_SAFER",
    ) as dataset:
        for top in range(0, side, GENERATE_ROWS):
            rows = np.arange(top, min(side, top + GENERATE_ROWS))[:, None]
            field = (np.sin(rows / 97.0) + np.cos(columns / 61.0) + 2.5) * 800
            bands = [field + 300 * band + rng.integers(0, 50, field.shape) for band in range(4)]
            data = np.stack(bands).astype(np.uint16)
            data[:, :, :border] = 0
            if top < border:
                data[:, : border - top] = 0
            dataset.write(data, window=Window(0, top, side, len(rows)))


def run_predict(args, weights, scene, output):
    """(wall seconds, peak RSS in MiB) of one tools/predict.py process."""
    command = [
        sys.executable, args.predict_script, "--config", args.config,
        "--weights", str(weights), "--classes", CLASSES, "--input", str(scene),
        "--output", str(output), "--device", args.device, "--batch-size", str(args.batch_size),
        "--overwrite",
    ]  # fmt: skip
    if args.tile_size:
        command += ["--tile-size", str(args.tile_size)]
    command += args.opts
    env = {**os.environ, "PYTHONPATH": str(Path(args.predict_script).resolve().parents[1])}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code == USER_ERROR_STATUS:  # predict.py's one-line error
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
        raise ConfigError(f"predict.py failed on {scene.name}: {last}")
    if code:
        raise RuntimeError(f"predict.py failed on {scene.name} with status {code}:\n{stderr}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main(argv=None):
    args = parse_args(argv)
    with reporting_user_errors("benchmark_predict.py", debug=args.debug):
        report = measure(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def measure(args):
    """Predict a scene of each size; print and return the report."""
    import torch
    from detectron2.modeling import build_model

    from gsnet.checkpoint import GSNetCheckpointer
    from gsnet.predictor import build_predictor_config

    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        workdir = Path(workdir)
        torch.manual_seed(0)
        cfg = build_predictor_config(args.config, opts=args.opts, device="cpu")
        model = build_model(cfg)
        GSNetCheckpointer(model, save_dir=str(workdir)).save("random")
        del model
        weights = workdir / "random.pth"
        write_scene(workdir / "tiny.tif", 64)
        startup, _ = run_predict(args, weights, workdir / "tiny.tif", workdir / "out_tiny")
        results = []
        for side in args.sizes:
            scene = workdir / f"scene_{side}.tif"
            write_scene(scene, side)
            wall, peak = run_predict(args, weights, scene, workdir / f"out_{side}")
            scene.unlink()
            result = {
                "side": side,
                "megapixels": side * side / 1e6,
                "wall_s": round(wall, 1),
                "peak_rss_mib": round(peak),
                "megapixels_per_s": round(side * side / 1e6 / wall, 3),
            }
            results.append(result)
            print(json.dumps(result), flush=True)
    report = {
        "config": args.config,
        "tile_size": args.tile_size or cfg.INPUT.MIN_SIZE_TEST,
        "batch_size": args.batch_size,
        "device": args.device,
        "startup_s": round(startup, 1),
        "results": results,
    }
    print(f"{args.config}, tile {report['tile_size']}, startup {startup:.1f} s:")
    print("| scene | megapixels | peak RSS | wall | Mpx/s |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['side']} x {r['side']} | {r['megapixels']:.1f} | {r['peak_rss_mib']} MiB "
            f"| {r['wall_s']} s | {r['megapixels_per_s']} |"
        )
    return report


if __name__ == "__main__":
    sys.exit(main())
