#!/usr/bin/env python
"""Train or evaluate GSNet (Detectron2's train_net shape: setup / main / launch).

    python tools/train_net.py --config-file configs/vitb_384.yaml --num-gpus 2 OUTPUT_DIR out
    python tools/train_net.py --config-file configs/vitb_384.yaml --eval-only \
        MODEL.WEIGHTS out/model_final.pth TEST.SLIDING_WINDOW True \
        MODEL.SEM_SEG_HEAD.POOLING_SIZES "[1,1]"

``--num-gpus N`` starts N processes; on a machine without GPUs they run on the CPU (gloo).
"""

import os

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm

import gsnet
from gsnet.evaluation import write_results_table
from gsnet.training import GSNetTrainer


def setup(args):
    cfg = get_cfg()
    gsnet.add_gsnet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = GSNetTrainer.build_model(cfg)
        gsnet.GSNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = GSNetTrainer.test(cfg, model)
        if comm.is_main_process():
            write_results_table(results, cfg.OUTPUT_DIR)
        return results
    trainer = GSNetTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli():
    args = default_argument_parser().parse_args()
    if args.num_gpus > 1 and not torch.cuda.is_available():
        # Detectron2's launcher uses gloo without GPUs; share the cores among the processes.
        threads = max(1, (os.cpu_count() or 1) // args.num_gpus)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
