#!/usr/bin/env python
"""Train or evaluate GSNet (Detectron2's train_net shape: setup / main / launch).

    python tools/train_net.py --config-file configs/vitb_384.yaml --num-gpus 2 OUTPUT_DIR out
    python tools/train_net.py --config-file configs/vitb_384.yaml --num-gpus 2 OUTPUT_DIR out \
        --resume    # continue a run (killed or finished) from its last complete checkpoint
    python tools/train_net.py --config-file configs/vitb_384.yaml --eval-only \
        --paper-evaluation MODEL.WEIGHTS out/model_final.pth

``--paper-evaluation`` applies the paper's evaluation protocol (the four test sets, sliding
windows, 1 x 1 class pooling: gsnet.config.PAPER_EVALUATION_OVERRIDES) before the command
line's KEY VALUE overrides. ``--num-gpus N`` starts N processes; on a machine without GPUs
they run on the CPU (gloo).

Errors in the input (config, dataset files, weight files, OUTPUT_DIR, a non-finite loss, a full
disk) are reported as one line, ``train_net.py: error: <message>``, with exit status 2; ``--debug``
(or the environment variable GSNET_DEBUG=1) shows their traceback instead. Other exceptions
(bugs) keep their traceback.
"""

import os
import sys
import time

import torch
import yaml
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.multiprocessing import ProcessExitedException

import gsnet
from gsnet.allocator import keep_freed_memory
from gsnet.config import PAPER_EVALUATION_OVERRIDES
from gsnet.errors import ConfigError, user_error_message
from gsnet.evaluation import write_results_table
from gsnet.training import GSNetTrainer, check_output_dir

# Exit status of a command stopped by an error in its input (as argparse's usage errors).
USER_ERROR_STATUS = 2
# Seconds a secondary process waits before reporting an error of the input.
SECONDARY_REPORT_DELAY_S = 3


def setup(args):
    cfg = get_cfg()
    gsnet.add_gsnet_config(cfg)
    try:
        cfg.merge_from_file(args.config_file)
        if args.paper_evaluation:
            cfg.merge_from_list(list(PAPER_EVALUATION_OVERRIDES))
        cfg.merge_from_list(args.opts)
    except (OSError, KeyError, ValueError, AssertionError, yaml.YAMLError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ConfigError(
            f"The config does not load: {message}. Check the config file {args.config_file} "
            "and the KEY VALUE overrides (the keys are defined in Detectron2's defaults and "
            "gsnet/config.py)."
        ) from error
    cfg.freeze()
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


def main_reporting_errors(args):
    """``main`` in one process (launched by ``launch``): an error in the input is printed as one
    line and ends the process with status 2; anything else keeps its traceback."""
    try:
        return main(args)
    except Exception as error:
        message = None if args.debug else user_error_message(error)
        if message is None:
            raise
        if comm.get_rank() > 0:
            # Errors of the input usually strike every process: give the main process time to
            # report it (the launcher then stops this one) so that it is printed once.
            time.sleep(SECONDARY_REPORT_DELAY_S)
        print(f"train_net.py: error: {message}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_STATUS)


def argument_parser():
    """Detectron2's argument parser with GSNet's flags."""
    parser = default_argument_parser()
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of errors in the input (also: GSNET_DEBUG=1)",
    )
    parser.add_argument(
        "--paper-evaluation",
        action="store_true",
        help="evaluate with the paper's protocol: the four test sets, sliding windows, 1x1 "
        "class pooling (KEY VALUE overrides still apply after it)",
    )
    return parser


def cli(argv=None):
    parser = argument_parser()
    args = parser.parse_args(argv)
    args.debug = args.debug or os.environ.get("GSNET_DEBUG") == "1"
    if args.num_gpus > 1 and not torch.cuda.is_available():
        # Detectron2's launcher uses gloo without GPUs; share the cores among the processes.
        threads = max(1, (os.cpu_count() or 1) // args.num_gpus)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        launch(
            main_reporting_errors,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ProcessExitedException as error:
        if error.exit_code == USER_ERROR_STATUS:  # the process printed its error
            sys.exit(USER_ERROR_STATUS)
        raise


if __name__ == "__main__":
    cli()
