"""A GSNet tool's run as a submitit job on a SLURM cluster, requeued and resumed after
preemption or a time limit (tools/submit.py is its command line).

Every task of the job is one process of the run (one GPU): :class:`ToolJob` turns the job's
ranks into PyTorch's env:// rendezvous, which :func:`gsnet.launcher.launch` reads, and runs the
tool's command line unchanged. When SLURM signals a preemption or the end of the time limit,
submitit asks task 0 for the job to requeue (:meth:`ToolJob.checkpoint`): a training run comes
back with ``--resume`` and continues from its last checkpoint, which ends with the same weights
as an uninterrupted run (the iterations since that checkpoint, at most
SOLVER.CHECKPOINT_PERIOD, are computed again); an evaluation runs again from the start.

Follows the submitit launchers of FAIR projects (DETR's and ConvNeXt's run_with_submitit.py).
submitit is optional: ``pip install -e '.[cluster]'`` (scripts/setup.sh installs it).
"""

import os
import runpy
import sys

from .launcher import master_port_for_job

try:
    import submitit
except ModuleNotFoundError as error:
    raise ModuleNotFoundError(
        "gsnet.submission needs submitit: pip install -e '.[cluster]' (scripts/setup.sh "
        "installs it)",
        name=error.name,
    ) from error

__all__ = ["ToolJob", "build_executor", "rendezvous_environment", "resumed_argv"]

# The sbatch signal that announces a preemption or the time limit comes this many seconds
# before SLURM stops the job: enough for task 0 to write the requeued submission.
SIGNAL_DELAY_S = 120


def resumed_argv(argv):
    """The command line that continues a run: ``--resume`` added for training (the options
    come before Detectron2's KEY VALUE overrides); an evaluation's command line unchanged."""
    if "--eval-only" in argv or "--resume" in argv:
        return list(argv)
    return ["--resume", *argv]


def rendezvous_environment(job_environment, environ=None):
    """PyTorch's env:// variables for this task of a submitit job.

    Args:
        job_environment (submitit.JobEnvironment): the task's ranks and the job's hosts.
        environ (Mapping[str, str] or None): the environment (None: ``os.environ``);
            MASTER_ADDR and MASTER_PORT already set there are kept.

    Returns:
        dict[str, str]: RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
        MASTER_PORT. The master is the job's first host (127.0.0.1 for a single machine); the
        port is derived from the job id, so every task finds the same.
    """
    environ = os.environ if environ is None else environ
    single_machine = job_environment.num_nodes == 1
    return {
        "RANK": str(job_environment.global_rank),
        "LOCAL_RANK": str(job_environment.local_rank),
        "WORLD_SIZE": str(job_environment.num_tasks),
        "LOCAL_WORLD_SIZE": str(job_environment.num_tasks // job_environment.num_nodes),
        "MASTER_ADDR": environ.get(
            "MASTER_ADDR", "127.0.0.1" if single_machine else job_environment.hostnames[0]
        ),
        "MASTER_PORT": environ.get("MASTER_PORT", str(master_port_for_job(job_environment.job_id))),
    }


class ToolJob(submitit.helpers.Checkpointable):
    """A tool's command line (tools/train_net.py ...), run by every task of a submitit job.

    Args:
        script (str): the path of the tool.
        argv (list[str]): its arguments.
    """

    def __init__(self, script, argv):
        self.script = os.path.abspath(script)
        self.argv = list(argv)

    def __call__(self):
        job_environment = submitit.JobEnvironment()
        if job_environment.num_tasks > 1:
            os.environ.update(rendezvous_environment(job_environment))
        saved_argv = sys.argv
        sys.argv = [self.script, *self.argv]
        try:
            runpy.run_path(self.script, run_name="__main__")
        finally:
            sys.argv = saved_argv

    def checkpoint(self):
        """The submission that submitit requeues after a preemption or a time limit."""
        return submitit.helpers.DelayedSubmission(ToolJob(self.script, resumed_argv(self.argv)))


def build_executor(
    folder,
    *,
    cluster="slurm",
    nodes=1,
    gpus_per_node=1,
    tasks_per_node=None,
    cpus_per_task=None,
    partition=None,
    timeout_min=60,
    sbatch_options=None,
    name="gsnet",
    max_timeouts=3,
):
    """A submitit executor for one process per GPU.

    Args:
        folder (str): where submitit writes the job's pickles and logs ("%j": the job id).
        cluster (str): "slurm"; "local" (processes on this machine) or "debug" (in this
            process) to try a job without a cluster.
        nodes (int): machines.
        gpus_per_node (int): GPUs per machine.
        tasks_per_node (int or None): processes per machine; None: one per GPU (at least 1).
            Other numbers only for machines without GPUs (CPU processes).
        cpus_per_task (int or None): CPU cores of each process (data-loader workers).
        partition (str or None): the SLURM partition.
        timeout_min (int): the time limit of each run of the job, in minutes.
        sbatch_options (dict[str, str] or None): further sbatch options ("constraint":
            "volta32gb", "account": ..., "qos": ...).
        name (str): the job's name.
        max_timeouts (int): how often the job is requeued after reaching its time limit
            (preemptions requeue it without limit).
    """
    executor = submitit.AutoExecutor(
        folder=folder, cluster=cluster, slurm_max_num_timeout=max_timeouts
    )
    parameters = {
        "name": name,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "tasks_per_node": tasks_per_node or max(1, gpus_per_node),
        "cpus_per_task": cpus_per_task,
        "timeout_min": timeout_min,
    }
    if cluster == "slurm":
        parameters.update(
            slurm_partition=partition,
            slurm_signal_delay_s=SIGNAL_DELAY_S,
            slurm_additional_parameters=dict(sbatch_options or {}),
        )
    executor.update_parameters(**parameters)
    return executor
