"""Starting the processes of a run: torchrun, SLURM's srun, or Detectron2's launcher.

A run has one process per GPU (on machines without GPUs, CPU processes that talk over gloo).
Who started the processes is read from the environment, here and nowhere else:

- torchrun, or any launcher of PyTorch's env:// rendezvous: RANK, LOCAL_RANK, WORLD_SIZE,
  LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
- SLURM's srun (a job step, SLURM_STEP_ID set): SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS,
  SLURM_NNODES (tasks per node = SLURM_NTASKS / SLURM_NNODES) and SLURM_NODELIST, whose first
  node is the master. MASTER_ADDR and MASTER_PORT, when set, name the master and its port
  instead; the default port is derived from SLURM_JOB_ID, so that every task agrees on it.
  (The step's own SLURM_STEP_NUM_TASKS, SLURM_STEP_NUM_NODES and SLURM_STEP_NODELIST win over
  the job's values.) A batch script that runs Python without srun is no step: its process is
  alone and starts its own, as on a workstation;
- otherwise, or when torchrun or srun started a single process, Detectron2's ``launch`` starts
  the command line's ``--num-gpus`` processes per machine itself.

:func:`launch` takes the arguments of ``detectron2.engine.launch``, so a tool switches by
importing it from here instead.
"""

import os
import re
import time
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm
from torch.multiprocessing import ProcessExitedException

from .errors import USER_ERROR_STATUS, ConfigError, GSNetUserError, reporting_user_errors

__all__ = [
    "DEFAULT_TIMEOUT",
    "ProcessPlacement",
    "first_slurm_host",
    "launch",
    "launch_tool",
    "master_port_for_job",
    "placement",
]

# The master port of a cluster job without MASTER_PORT: its job id mapped into this range
# (above the well-known ports, below Linux's default ephemeral range 32768-60999).
JOB_PORT_BASE = 12000
JOB_PORT_COUNT = 20000
# What each launcher calls its numbers of processes per machine and of machines.
_LAUNCHER_FLAGS = {
    "torchrun": "torchrun's --nproc-per-node and --nnodes",
    "srun": "srun's --ntasks-per-node and --nodes",
}
# Seconds a process other than the main one waits before it reports an error of the input:
# such an error usually strikes every process, and is then printed once, by the main process
# (the launcher stops the others when it exits).
SECONDARY_REPORT_DELAY_S = 5


@dataclass(frozen=True)
class ProcessPlacement:
    """Where this process sits in a run whose processes torchrun or srun started.

    Attributes:
        launcher (str): "torchrun" or "srun".
        rank (int): the process's rank among all processes, 0 .. world_size - 1.
        local_rank (int): its rank on its machine, 0 .. local_world_size - 1.
        world_size (int): the number of processes.
        local_world_size (int): the number of processes on each machine.
        init_method (str): the rendezvous of ``torch.distributed.init_process_group``.
    """

    launcher: str
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    init_method: str

    @property
    def num_machines(self):
        return self.world_size // self.local_world_size


def _integer(environ, *names):
    """The integer value of the first of ``names`` that is set in ``environ``."""
    name = next(name for name in names if name in environ)
    try:
        return int(environ[name])
    except ValueError:
        raise ConfigError(
            f"The environment variable {name}={environ[name]!r} is not an integer."
        ) from None


def master_port_for_job(job_id):
    """The rendezvous port of a cluster job (SLURM's "1234" or "1234_5" of an array job): the
    same for all its tasks, different for jobs submitted one after the other."""
    return JOB_PORT_BASE + zlib.crc32(str(job_id).encode()) % JOB_PORT_COUNT


def first_slurm_host(nodelist):
    """The first host of a SLURM node list ("gpu[003-005,010],cpu1" -> "gpu003"; a name with
    several bracketed ranges, "rack[1-2]-node[07-08]", gives "rack1-node07")."""
    depth = 0
    for end, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            nodelist = nodelist[:end]
            break
    # Each range keeps its first value with its zero padding: [003-005,010] -> 003.
    return re.sub(r"\[([^\]\-,]+)[^\]]*\]", r"\1", nodelist.strip())


def placement(environ=None):
    """The :class:`ProcessPlacement` that torchrun or srun gave this process, or None when
    neither started it (see the module docstring for the variables read).

    Args:
        environ (Mapping[str, str] or None): the environment; None reads ``os.environ``.

    Raises:
        ConfigError: the variables are incomplete or contradict each other.
    """
    environ = os.environ if environ is None else environ
    if all(name in environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        missing = [
            name
            for name in ("LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
            if name not in environ
        ]
        if missing:
            raise ConfigError(
                f"RANK, LOCAL_RANK and WORLD_SIZE are set but {', '.join(missing)} not: start "
                "the processes with torchrun, or set them (LOCAL_WORLD_SIZE: the processes per "
                "machine; MASTER_ADDR and MASTER_PORT: the rendezvous of process 0)."
            )
        found = ProcessPlacement(
            launcher="torchrun",
            rank=_integer(environ, "RANK"),
            local_rank=_integer(environ, "LOCAL_RANK"),
            world_size=_integer(environ, "WORLD_SIZE"),
            local_world_size=_integer(environ, "LOCAL_WORLD_SIZE"),
            init_method="env://",
        )
    elif "SLURM_STEP_ID" in environ and "SLURM_PROCID" in environ:
        found = _slurm_placement(environ)
    else:
        return None
    _check_placement(found)
    return found


def _slurm_placement(environ):
    required = ("SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NNODES", "SLURM_NODELIST")
    missing = [name for name in required if name not in environ]
    if missing:
        raise ConfigError(
            f"SLURM_PROCID is set but {', '.join(missing)} not: start the processes with srun."
        )
    world_size = _integer(environ, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    num_nodes = _integer(environ, "SLURM_STEP_NUM_NODES", "SLURM_NNODES")
    if num_nodes < 1 or world_size % num_nodes:
        raise ConfigError(
            f"srun placed {world_size} tasks on {num_nodes} node(s), not the same number on "
            "each: give srun --ntasks-per-node (one task per GPU)."
        )
    host = environ.get("MASTER_ADDR") or first_slurm_host(
        environ.get("SLURM_STEP_NODELIST") or environ["SLURM_NODELIST"]
    )
    if "MASTER_PORT" in environ:
        port = _integer(environ, "MASTER_PORT")
    elif "SLURM_JOB_ID" in environ:
        port = master_port_for_job(environ["SLURM_JOB_ID"])
    else:
        raise ConfigError("Neither MASTER_PORT nor SLURM_JOB_ID is set: set MASTER_PORT.")
    return ProcessPlacement(
        launcher="srun",
        rank=_integer(environ, "SLURM_PROCID"),
        local_rank=_integer(environ, "SLURM_LOCALID"),
        world_size=world_size,
        local_world_size=world_size // num_nodes,
        init_method=f"tcp://{host}:{port}",
    )


def _check_placement(found):
    if not (
        0 <= found.rank < found.world_size
        and 0 <= found.local_rank < found.local_world_size
        and found.world_size % found.local_world_size == 0
    ):
        raise ConfigError(
            f"{found.launcher} gave this process rank {found.rank} of {found.world_size} and "
            f"local rank {found.local_rank} of {found.local_world_size} per machine, which do "
            "not fit together."
        )


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """Run ``main_func(*args)`` in every process of the run (the arguments of
    ``detectron2.engine.launch``).

    Started by torchrun or srun (more than one process): this process joins their process
    group (nccl on GPUs, gloo on the CPU), takes the GPU of its local rank and calls
    ``main_func``; ``num_gpus_per_machine`` and ``num_machines`` must then be 1 or agree with
    the launcher's numbers, and ``machine_rank`` and ``dist_url`` are not used. Otherwise
    Detectron2's launcher starts ``num_gpus_per_machine`` processes on this machine.

    Args:
        main_func (callable): the function each process runs.
        num_gpus_per_machine (int): processes per machine (GPUs) for Detectron2's launcher.
        num_machines, machine_rank, dist_url: the machines for Detectron2's launcher.
        args (tuple): the arguments of ``main_func``.
        timeout (timedelta): how long collective operations wait.

    Raises:
        ConfigError: the launcher's environment is inconsistent, contradicts the command
            line, or has more processes per machine than GPUs.
    """
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ConfigError(
            f"--num-gpus {num_gpus_per_machine} and --num-machines {num_machines}: both must be "
            "at least 1 (on a machine without GPUs, --num-gpus N starts N CPU processes)."
        )
    found = placement()
    if found is None or found.world_size == 1:
        if num_gpus_per_machine > 1 and not torch.cuda.is_available():
            # Detectron2's launcher uses gloo without GPUs; share the cores among the processes.
            threads = max(1, (os.cpu_count() or 1) // num_gpus_per_machine)
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        detectron2_launch(
            _run_and_leave_together,
            num_gpus_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=(main_func, *args),
            timeout=timeout,
        )
        return
    if num_gpus_per_machine not in (1, found.local_world_size) or num_machines not in (
        1,
        found.num_machines,
    ):
        raise ConfigError(
            f"{found.launcher} started {found.local_world_size} process(es) per machine on "
            f"{found.num_machines} machine(s), but the command line asks for "
            f"{num_gpus_per_machine} per machine on {num_machines}: drop --num-gpus and "
            f"--num-machines ({_LAUNCHER_FLAGS[found.launcher]} set them; one process per GPU)."
        )
    backend = _use_local_gpu(found)
    dist.init_process_group(
        backend=backend,
        init_method=found.init_method,
        rank=found.rank,
        world_size=found.world_size,
        timeout=timeout,
    )
    # Detectron2's comm.get_local_rank() and get_local_size() read this group.
    comm.create_local_process_group(found.local_world_size)
    comm.synchronize()
    _run_and_leave_together(main_func, *args)


def launch_tool(tool, main_func, args):
    """Run a tool's ``main_func(args)`` in every process of the run (:func:`launch` with the
    command line's ``args.num_gpus``, ``num_machines``, ``machine_rank`` and ``dist_url``),
    reporting errors of the input as every tool does (:func:`gsnet.errors.reporting_user_errors`
    with ``args.debug``): one line, printed once, and exit status 2.

    Args:
        tool (str): the tool's file name, e.g. "train_net.py".
        main_func (callable): the function each process runs; picklable.
        args (argparse.Namespace): the parsed command line.
    """
    with reporting_user_errors(tool, debug=args.debug):
        try:
            launch(
                _reporting_user_errors_in_process,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(tool, main_func, args),
            )
        except ProcessExitedException as error:
            if error.exit_code == USER_ERROR_STATUS:  # the process has printed its error
                raise SystemExit(USER_ERROR_STATUS) from None
            raise


def _reporting_user_errors_in_process(tool, main_func, args):
    with reporting_user_errors(tool, debug=args.debug):
        try:
            main_func(args)
        except GSNetUserError:
            if comm.get_rank() > 0:
                time.sleep(SECONDARY_REPORT_DELAY_S)
            raise


def _run_and_leave_together(main_func, *args):
    """``main_func(*args)``; then, in a run of several processes, wait for every process to be
    done and close the process group, so that no process exits while another still talks to
    it (a process whose peer has gone can abort at exit in gloo's threads)."""
    main_func(*args)
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()


def _use_local_gpu(found):
    """Make the GPU of this process the current CUDA device; the backend to use."""
    if not torch.cuda.is_available():
        return "gloo"
    count = torch.cuda.device_count()
    if count == 1:
        # One visible GPU: either one process per machine, or srun/CUDA_VISIBLE_DEVICES gave
        # each task its own.
        torch.cuda.set_device(0)
    elif count >= found.local_world_size:
        torch.cuda.set_device(found.local_rank)
    else:
        raise ConfigError(
            f"{found.launcher} started {found.local_world_size} processes on this machine but "
            f"it has {count} GPUs: start one process per GPU."
        )
    return "nccl"
