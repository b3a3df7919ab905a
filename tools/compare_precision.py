#!/usr/bin/env python
r"""What low-precision inference changes: pixel agreement with fp32 and the mIoU of both.

    python tools/compare_precision.py --config-file configs/vitb_384.yaml \
        --weights model_final.pth [--precision bfloat16] [--max-images 100] [--json out.json] \
        [KEY VALUE ...]

The paper's evaluation protocol is applied as scripts/eval.sh does (the four test sets, each
with its own vocabulary, sliding windows, 1 x 1 class pooling; KEY VALUE overrides go after
it), and every image is run twice: in fp32 and under autocast to --precision (TEST.PRECISION's
switch). Prints, per dataset, the share of all pixels and of the
labelled pixels whose predicted class is the same in both precisions, and the mIoU of each.
Use it to decide whether bf16 is good enough for your weights and imagery; the model's
weights must be trained ones (random weights give near-tied classes and meaningless numbers).
Datasets are read from $DETECTRON2_DATASETS (default ./datasets).
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from detectron2.data import MetadataCatalog
from tqdm import tqdm

from gsnet.allocator import keep_freed_memory
from gsnet.checkpoint import GSNetCheckpointer
from gsnet.config import PAPER_EVALUATION_OVERRIDES, load_config
from gsnet.data.class_names import load_class_names
from gsnet.errors import MissingFileError, add_debug_flag, check_minimum, reporting_user_errors
from gsnet.evaluation import compare_precisions
from gsnet.gsnet_model import INFERENCE_PRECISIONS
from gsnet.training import GSNetTrainer, check_registered

LOW_PRECISIONS = sorted(name for name in INFERENCE_PRECISIONS if name != "float32")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, help="the model's YAML config")
    parser.add_argument("--weights", required=True, help="a trained checkpoint")
    parser.add_argument("--precision", default="bfloat16", choices=LOW_PRECISIONS)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: MODEL.DEVICE)")
    parser.add_argument(
        "--max-images", type=int, help="compare at most this many images per dataset"
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = add_debug_flag(parser).parse_args(argv)
    check_minimum(parser, args, 1, "max_images")
    return args


def format_table(results, precision):
    header = (
        f"{'dataset':16} {'images':>6} {'agree %':>8} {'labelled agree %':>16} "
        f"{'mIoU fp32':>9} {'mIoU ' + precision:>14} {'diff':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        lines.append(
            f"{name:16} {r['images']:>6} {r['pixel_agreement']:>8.2f} "
            f"{r['labelled_pixel_agreement']:>16.2f} {r['mIoU_fp32']:>9.2f} "
            f"{r['mIoU_low']:>14.2f} {r['mIoU_difference']:>+6.2f}"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with reporting_user_errors("compare_precision.py", debug=args.debug):
        results = compare(args)
    print(format_table(results, args.precision))
    if args.json:
        payload = {"precision": args.precision, "weights": args.weights, "datasets": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def compare(args):
    """{dataset name: compare_precisions' result} of every test set of the paper's protocol."""
    if not Path(args.weights).is_file():
        raise MissingFileError(f"Weights file not found: {args.weights}")
    cfg = load_config(
        args.config_file, [*PAPER_EVALUATION_OVERRIDES, *args.opts], device=args.device
    )
    check_registered(cfg.DATASETS.TEST, "DATASETS.TEST")
    model = GSNetTrainer.build_model(cfg).eval()
    GSNetCheckpointer(model).load(args.weights)
    results = {}
    for name in cfg.DATASETS.TEST:
        metadata = MetadataCatalog.get(name)
        if hasattr(metadata, "class_json"):
            model.set_test_class_names(load_class_names(metadata.class_json))
        loader = GSNetTrainer.build_test_loader(cfg, name)
        total = len(loader) if args.max_images is None else min(len(loader), args.max_images)
        results[name] = compare_precisions(
            model,
            loader,
            name,
            INFERENCE_PRECISIONS[args.precision],
            max_images=args.max_images,
            progress=lambda batches, name=name, total=total: tqdm(
                batches, desc=name, total=total, unit="image"
            ),
        )
    return results


if __name__ == "__main__":
    sys.exit(main())
