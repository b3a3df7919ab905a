#!/usr/bin/env python
"""Train or evaluate GSNet (Detectron2's train_net shape: setup / main / launch).

    python tools/train_net.py --config-file configs/vitb_384.yaml --num-gpus 2 OUTPUT_DIR out
    python tools/train_net.py --config-file configs/vitb_384.yaml --num-gpus 2 OUTPUT_DIR out \
        --resume    # continue a run (killed or finished) from its last complete checkpoint
    python tools/train_net.py --config-file configs/vitb_384.yaml --eval-only \
        --paper-evaluation MODEL.WEIGHTS out/model_final.pth

``--paper-evaluation`` applies the paper's evaluation protocol (the four test sets, sliding
windows, 1 x 1 class pooling: gsnet.config.PAPER_EVALUATION_OVERRIDES) before the command
line's KEY VALUE overrides. ``--suite NAME`` applies a named evaluation suite instead
(gsnet.config.EVALUATION_SUITES: "paper", "ovrsisbench"), or, given registered dataset names
separated by commas, the paper's protocol on those sets. Datasets of one's own are registered
from the descriptor files of DATASETS.DESCRIPTORS (gsnet/data/descriptors.py):

    python tools/train_net.py --config-file configs/vitb_384.yaml --eval-only \
        --suite ovrsisbench MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file configs/vitb_384.yaml --eval-only \
        --suite parcels_val DATASETS.DESCRIPTORS "('parcels.yaml',)" MODEL.WEIGHTS w.pth

``--num-gpus N`` starts N processes; on a machine without GPUs
they run on the CPU (gloo). Started by torchrun or srun, each process joins their run instead
(gsnet.launcher; one process per GPU, no --num-gpus):

    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        tools/train_net.py --config-file configs/vitb_384.yaml OUTPUT_DIR out
    srun --nodes 2 --ntasks-per-node 2 --gpus-per-node 2 \
        python tools/train_net.py --config-file configs/vitb_384.yaml OUTPUT_DIR out

Errors in the input (config, dataset files, weight files, OUTPUT_DIR, a non-finite loss, a full
disk) are reported as one line, ``train_net.py: error: <message>``, with exit status 2; ``--debug``
(or the environment variable GSNET_DEBUG=1) shows their traceback instead. Other exceptions
(bugs) keep their traceback.
"""

import os

from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import gsnet
from gsnet.allocator import keep_freed_memory
from gsnet.config import (
    EVALUATION_SUITES,
    PAPER_EVALUATION_OVERRIDES,
    evaluation_overrides,
    load_config,
)
from gsnet.data.descriptors import register_descriptors
from gsnet.errors import ConfigError, add_debug_flag
from gsnet.evaluation import write_results_table
from gsnet.launcher import launch_tool
from gsnet.training import GSNetTrainer, check_output_dir


def setup(args):
    protocol = list(PAPER_EVALUATION_OVERRIDES) if args.paper_evaluation else []
    if args.suite:
        protocol = evaluation_overrides(args.suite)
    cfg = load_config(args.config_file, [*protocol, *args.opts])
    cfg.freeze()
    register_descriptors(cfg.DATASETS.DESCRIPTORS)
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        check_no_earlier_run(cfg.OUTPUT_DIR, args)
        check_output_dir(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="gsnet")
    return cfg


def check_no_earlier_run(output_dir, args):
    """Refuse to train afresh over the checkpoints of an earlier run (nothing is overwritten)."""
    last_checkpoint = os.path.join(output_dir, "last_checkpoint")
    if args.eval_only or args.resume or not os.path.isfile(last_checkpoint):
        return
    with open(last_checkpoint) as f:
        last = f.read().strip()
    raise ConfigError(
        f"OUTPUT_DIR {output_dir} already holds a training run (last checkpoint: {last}). "
        "Continue it with --resume, evaluate it with --eval-only, or choose another OUTPUT_DIR; "
        "training afresh here would overwrite its checkpoints."
    )


def main(args):
    keep_freed_memory()
    cfg = setup(args)
    if args.eval_only:
        model = GSNetTrainer.build_model(cfg)
        gsnet.GSNetCheckpointer(
            model,
            save_dir=cfg.OUTPUT_DIR,
            allow_unsafe_unpickling=cfg.MODEL.ALLOW_UNSAFE_UNPICKLING,
        ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = GSNetTrainer.test(cfg, model)
        if comm.is_main_process():
            write_results_table(results, cfg.OUTPUT_DIR)
        return results
    trainer = GSNetTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    """Detectron2's argument parser with GSNet's flags."""
    parser = add_debug_flag(default_argument_parser())
    protocol = parser.add_mutually_exclusive_group()
    protocol.add_argument(
        "--paper-evaluation",
        action="store_true",
        help="evaluate with the paper's protocol: the four test sets, sliding windows, 1x1 "
        "class pooling (KEY VALUE overrides still apply after it)",
    )
    protocol.add_argument(
        "--suite",
        metavar="NAME",
        help=f"evaluate a named suite ({', '.join(EVALUATION_SUITES)}) or registered datasets "
        "separated by commas (with the paper's protocol); KEY VALUE overrides apply after it",
    )
    return parser


def cli(argv=None):
    launch_tool("train_net.py", main, argument_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
