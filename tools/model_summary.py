#!/usr/bin/env python
"""Parameters and pretrained weights of GSNet configs, as a markdown table.

    python tools/model_summary.py configs/vitb_384.yaml configs/backbones/*.yaml

Each config is built on PyTorch's meta device (shapes only: no memory, no weights, seconds even
for ViT-L models), and its encoders, fusion, aggregation and decoder run once there to check
that they fit together.
The table gives the components, the parameter counts (total and trainable) and the weight files
or tags that training from scratch reads (MODEL.WEIGHTS, a GSNet checkpoint, replaces them).
"""

import argparse

import torch
from detectron2.modeling import build_model

from gsnet.checkpoint import pretrained_weight_sources
from gsnet.config import load_config
from gsnet.errors import add_debug_flag, reporting_user_errors

COLUMNS = ("config", "generalist", "specialist", "fusion", "parameters", "trainable", "weights")


def summarize(config_file: str, opts=()) -> dict:
    """The table row of one config: components, parameter counts, weight sources."""
    cfg = load_config(config_file, opts, device="meta")
    with torch.device("meta"):
        model = build_model(cfg).eval()
        with torch.no_grad():
            logits = model.predict_logits(torch.empty(1, 3, 64, 80), ["a", "b"])
    head = cfg.MODEL.SEM_SEG_HEAD
    grid = model.generalist.output_shape()["dense"]
    if tuple(logits.shape) != (1, 2, 4 * grid.height, 4 * grid.width):
        raise RuntimeError(f"{config_file}: logits of shape {tuple(logits.shape)}")
    params = list(model.parameters())
    specialist = model.specialist
    return {
        "config": config_file,
        "generalist": f"{head.CLIP_PRETRAINED} @ {model.generalist.input_size[0]}",
        "specialist": f"{head.DINO_ARCH} @ {specialist.input_size[0]}" if specialist else "-",
        "fusion": type(model.sem_seg_head.fusion).__name__,
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "weights": "; ".join(pretrained_weight_sources(cfg)) or "none (random)",
    }


def markdown_table(rows) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", help="YAML config files")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    args = add_debug_flag(parser).parse_args(argv)
    with reporting_user_errors("model_summary.py", debug=args.debug):
        rows = [summarize(config_file, args.opts) for config_file in args.configs]
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
