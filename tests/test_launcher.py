"""gsnet.launcher: the placement that torchrun or srun gives a process, the checks of their
environments, and a process group of two simulated srun tasks."""

import json
import subprocess
import sys
import textwrap

import pytest

from gsnet.errors import ConfigError
from gsnet.launcher import (
    ProcessPlacement,
    first_slurm_host,
    launch,
    master_port_for_job,
    placement,
)

TORCHRUN = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}  # fmt: skip
SRUN = {"SLURM_STEP_ID": "0", "SLURM_JOB_ID": "81234", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "8", "SLURM_NNODES": "2", "SLURM_NODELIST": "gpu[017-018]"}  # fmt: skip


@pytest.mark.parametrize("nodelist, host", [
    ("node7", "node7"),
    ("gpu[003-005,010],cpu1", "gpu003"),
    ("cpu1,gpu[003-005]", "cpu1"),
    ("rack[1-2]-node[07-08]", "rack1-node07"),
    ("127.0.0.[1-2]", "127.0.0.1"),
])  # fmt: skip
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_slurm_host(nodelist) == host


def test_torchrun_placement():
    found = placement(TORCHRUN)
    assert found == ProcessPlacement("torchrun", 3, 1, 4, 2, "env://")
    assert found.num_machines == 2


def test_srun_placement_and_its_master():
    found = placement(SRUN)
    port = master_port_for_job("81234")
    assert found == ProcessPlacement("srun", 5, 1, 8, 4, f"tcp://gpu017:{port}")
    assert master_port_for_job("81235") != port
    overridden = placement(SRUN | {"MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "23456"})
    assert overridden.init_method == "tcp://10.1.2.3:23456"
    step = SRUN | {"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NUM_NODES": "1",
                   "SLURM_STEP_NODELIST": "gpu018", "SLURM_PROCID": "1"}  # fmt: skip
    assert placement(step) == ProcessPlacement("srun", 1, 1, 2, 2, f"tcp://gpu018:{port}")


def test_torchrun_wins_inside_srun_and_a_batch_script_is_no_step():
    assert placement(SRUN | TORCHRUN).launcher == "torchrun"
    batch_script = {name: value for name, value in SRUN.items() if name != "SLURM_STEP_ID"}
    assert placement(batch_script) is None
    assert placement({}) is None


@pytest.mark.parametrize("environ, message", [
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": None}, "WORLD_SIZE are set but LOCAL_WORLD_SIZE not"),
    ({**TORCHRUN, "MASTER_ADDR": None, "MASTER_PORT": None},
     "are set but MASTER_ADDR, MASTER_PORT not: start the processes with torchrun"),
    ({**TORCHRUN, "RANK": "three"}, "RANK='three' is not an integer"),
    ({**TORCHRUN, "RANK": "4"}, "rank 4 of 4 and local rank 1 of 2 per machine, which do not"),
    ({**SRUN, "SLURM_NTASKS": "7"}, "srun placed 7 tasks on 2 node(s), not the same number"),
    ({**SRUN, "SLURM_NODELIST": None}, "SLURM_PROCID is set but SLURM_NODELIST not"),
    ({**SRUN, "SLURM_JOB_ID": None}, "Neither MASTER_PORT nor SLURM_JOB_ID is set"),
])  # fmt: skip
def test_inconsistent_environments(environ, message):
    environ = {name: value for name, value in environ.items() if value is not None}
    with pytest.raises(ConfigError) as raised:
        placement(environ)
    assert message in str(raised.value)


@pytest.mark.parametrize("num_gpus, num_machines", [(0, 1), (1, 0), (-2, 1)])
def test_fewer_than_one_process_or_machine_is_refused(num_gpus, num_machines):
    started = []
    with pytest.raises(ConfigError, match="both must be at least 1"):
        launch(started.append, num_gpus, num_machines=num_machines, args=("main",))
    assert started == []


def test_command_line_contradicting_the_launcher(monkeypatch):
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    started = []
    with pytest.raises(ConfigError, match=r"torchrun started 2 process\(es\) per machine on 2 "):
        launch(started.append, 8, args=("main",))
    assert started == []


PROBE = """
import json, sys
import torch
import torch.distributed as dist
from detectron2.utils import comm
from gsnet.launcher import launch

def report(path):
    total = torch.tensor([comm.get_rank() + 1.0])
    dist.all_reduce(total)
    numbers = [comm.get_rank(), comm.get_local_rank(), comm.get_local_size(),
               comm.get_world_size(), total.item(), dist.get_backend()]
    with open(f"{path}.{comm.get_rank()}", "w") as f:
        json.dump(numbers, f)

launch(report, 1, args=(sys.argv[1],))
"""


def test_two_srun_tasks_on_one_node_form_a_process_group(short_training, free_port, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    slurm = {"SLURM_STEP_ID": "0", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_NNODES": "1",
             "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(free_port)}  # fmt: skip
    tasks = [
        subprocess.Popen(
            [sys.executable, str(probe), str(tmp_path / "report")],
            env={**short_training.env, **slurm, "SLURM_PROCID": rank, "SLURM_LOCALID": rank},
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in ("0", "1")
    ]
    for task in tasks:
        _, stderr = task.communicate(timeout=300)
        assert task.returncode == 0, stderr[-3000:]
    reports = [json.loads((tmp_path / f"report.{rank}").read_text()) for rank in (0, 1)]
    # rank, local rank, local size, world size, sum of rank + 1 over the group, backend
    assert reports == [[0, 0, 2, 2, 3.0, "gloo"], [1, 1, 2, 2, 3.0, "gloo"]]
