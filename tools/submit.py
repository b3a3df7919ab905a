#!/usr/bin/env python
"""Submit training or evaluation (tools/train_net.py) to a SLURM cluster with submitit.

    python tools/submit.py --nodes 2 --gpus-per-node 8 --partition gpu --time 72:00:00 \\
        -- --config-file configs/vitb_384.yaml OUTPUT_DIR output/vitb_384
    python tools/submit.py --gpus-per-node 4 --time 120 -- --config-file configs/vitb_384.yaml \\
        --eval-only --paper-evaluation MODEL.WEIGHTS output/vitb_384/model_final.pth \\
        OUTPUT_DIR output/vitb_384_eval

The arguments after ``--`` are train_net.py's, without --num-gpus and --num-machines: each task
is one process with one GPU. After a preemption or the time limit the job is requeued, and a
training run continues from its last checkpoint (``--resume``) to the same weights as an
uninterrupted run (gsnet.submission). The job's logs go to --job-dir (default
OUTPUT_DIR/submitit). ``--cluster local`` runs the job on this machine instead (one
process per task) and waits for it: a way to try a submission without a cluster.
"""

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

TRAIN_NET = Path(__file__).resolve().parent / "train_net.py"
# train_net.py's flags that the job's shape decides.
LAUNCHER_FLAGS = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url")
TIME_LIMIT = re.compile(
    r"^(?:(?:(?P<days>\d+)-)?(?P<hours>\d+):(?P<minutes>\d\d):(?P<seconds>\d\d)|(?P<total>\d+))$"
)


def time_limit_minutes(text):
    """sbatch's minutes ("90"), HH:MM:SS ("72:00:00") or D-HH:MM:SS ("3-00:00:00"), in whole
    minutes (seconds rounded up)."""
    match = TIME_LIMIT.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time limit: give minutes (90), HH:MM:SS or D-HH:MM:SS"
        )
    if match["total"] is not None:
        return int(match["total"])
    days, hours, minutes, seconds = (
        int(match[key] or 0) for key in ("days", "hours", "minutes", "seconds")
    )
    return (days * 24 + hours) * 60 + minutes + (seconds > 0)


def sbatch_option(text):
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. constraint=volta32gb)")
    return key.lstrip("-"), value


def argument_parser():
    parser = argparse.ArgumentParser(
        prog="submit.py",
        description="Submit tools/train_net.py (training or --eval-only) to SLURM with submitit.",
        usage="%(prog)s [options] -- TRAIN_NET_ARGS ...",
    )
    parser.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per machine (default 1)")
    parser.add_argument(
        "--tasks-per-node",
        type=int,
        help="processes per machine (default: one per GPU); other numbers only without GPUs",
    )
    parser.add_argument("--cpus-per-task", type=int, help="CPU cores per process")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument(
        "--time",
        type=time_limit_minutes,
        default=60,
        help="time limit of each run of the job: minutes, HH:MM:SS or D-HH:MM:SS (default 60)",
    )
    parser.add_argument(
        "--sbatch",
        type=sbatch_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further sbatch option, e.g. --sbatch constraint=volta32gb (repeatable)",
    )
    parser.add_argument("--name", default="gsnet", help="job name (default gsnet)")
    parser.add_argument("--job-dir", help="submitit's folder (default OUTPUT_DIR/submitit)")
    parser.add_argument(
        "--max-timeouts",
        type=int,
        default=3,
        help="requeues after the time limit (default 3; preemptions requeue without limit)",
    )
    parser.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="slurm (default), or local: run the job's tasks on this machine and wait",
    )
    parser.add_argument("train_net_args", nargs=argparse.REMAINDER, help="-- then train_net.py's")
    return parser


def parse_args(argv=None):
    parser = argument_parser()
    args = parser.parse_args(argv)
    tool_args = args.train_net_args[1:] if args.train_net_args[:1] == ["--"] else None
    if not tool_args:
        parser.error("give train_net.py's arguments after --, e.g. -- --config-file CONFIG ...")
    args.train_net_args = tool_args
    flags = [flag for flag in LAUNCHER_FLAGS if flag in tool_args]
    if flags:
        parser.error(
            f"{', '.join(flags)}: each task is one process with one GPU; give --nodes and "
            "--gpus-per-node instead"
        )
    if args.gpus_per_node > 0 and args.tasks_per_node not in (None, args.gpus_per_node):
        parser.error(
            f"--tasks-per-node {args.tasks_per_node} with --gpus-per-node {args.gpus_per_node}: "
            "one process per GPU"
        )
    if args.job_dir is None:
        if "OUTPUT_DIR" not in tool_args[:-1]:
            parser.error("give --job-dir, or OUTPUT_DIR DIR among train_net.py's arguments")
        args.job_dir = os.path.join(tool_args[tool_args.index("OUTPUT_DIR") + 1], "submitit")
    if args.cluster == "slurm" and shutil.which("sbatch") is None:
        parser.error("sbatch not found: submit from a SLURM login node (or try --cluster local)")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        from gsnet.submission import ToolJob, build_executor
    except ModuleNotFoundError as error:
        if error.name != "submitit":
            raise
        argument_parser().error("submitit is not installed: pip install -e '.[cluster]'")
    executor = build_executor(
        args.job_dir,
        cluster=args.cluster,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        tasks_per_node=args.tasks_per_node,
        cpus_per_task=args.cpus_per_task,
        partition=args.partition,
        timeout_min=args.time,
        sbatch_options=dict(args.sbatch),
        name=args.name,
        max_timeouts=args.max_timeouts,
    )
    job = executor.submit(ToolJob(TRAIN_NET, args.train_net_args))
    print(f"Submitted job {job.job_id}; its logs: {job.paths.stdout} and {job.paths.stderr}.")
    if args.cluster == "local":
        try:
            job.results()
        except Exception as error:  # submitit's FailedJobError or UncompletedJobError
            print(f"submit.py: error: job {job.job_id} failed: {error}", file=sys.stderr)
            return 1
        print(f"Job {job.job_id} finished.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
