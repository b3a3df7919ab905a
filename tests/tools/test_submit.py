"""tools/submit.py: time limits, the errors of its command line, what it submits, and its
message when submitit is not installed (the package imports without it)."""

import argparse
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

import gsnet.submission


@pytest.fixture
def submit(load_tool):
    return load_tool("submit")


@pytest.mark.parametrize("text, minutes", [
    ("90", 90), ("72:00:00", 4320), ("3-00:00:00", 4320), ("1-12:30:00", 2190), ("0:01:30", 2),
])  # fmt: skip
def test_time_limits(submit, text, minutes):
    assert submit.time_limit_minutes(text) == minutes


def test_time_limit_that_is_no_time(submit):
    with pytest.raises(argparse.ArgumentTypeError, match="'1h' is not a time limit"):
        submit.time_limit_minutes("1h")


@pytest.mark.parametrize("argv, message", [
    ([], "give train_net.py's arguments after --"),
    (["--", "--num-gpus", "2", "OUTPUT_DIR", "out"], "--num-gpus: each task is one process"),
    (["--gpus-per-node", "4", "--tasks-per-node", "2", "--", "OUTPUT_DIR", "out"],
     "--tasks-per-node 2 with --gpus-per-node 4: one process per GPU"),
    (["--", "--config-file", "c.yaml"], "give --job-dir, or OUTPUT_DIR DIR"),
    (["--sbatch", "constraint", "--", "OUTPUT_DIR", "out"],
     "argument --sbatch: 'constraint' is not KEY=VALUE"),
    (["--time", "soon", "--", "OUTPUT_DIR", "out"], "argument --time: 'soon' is not a time limit"),
    (["--", "OUTPUT_DIR", "out"], "sbatch not found: submit from a SLURM login node"),
])  # fmt: skip
def test_bad_command_lines(submit, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(SystemExit) as raised:
        submit.main(argv)
    assert raised.value.code == 2
    assert f"submit.py: error: {message}" in capsys.readouterr().err


def test_what_is_submitted(submit, monkeypatch, capsys):
    submitted = {}

    class Executor:
        def submit(self, job):
            submitted["job"] = job
            return SimpleNamespace(
                job_id="123", paths=SimpleNamespace(stdout="123_0_log.out", stderr="123_0_log.err")
            )

    def build_executor(folder, **parameters):
        submitted.update(folder=folder, parameters=parameters)
        return Executor()

    monkeypatch.setattr(gsnet.submission, "build_executor", build_executor)
    monkeypatch.setattr(submit.shutil, "which", lambda name: f"/usr/bin/{name}")
    tool_args = ["--config-file", "configs/vitb_384.yaml", "OUTPUT_DIR", "out"]
    options = ["--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu", "--time", "72:00:00",
               "--sbatch", "constraint=volta32gb"]  # fmt: skip
    assert submit.main([*options, "--", *tool_args]) == 0
    assert submitted["folder"] == os.path.join("out", "submitit")
    assert submitted["parameters"] == {
        "cluster": "slurm", "nodes": 2, "gpus_per_node": 8, "tasks_per_node": None,
        "cpus_per_task": None, "partition": "gpu", "timeout_min": 4320,
        "sbatch_options": {"constraint": "volta32gb"}, "name": "gsnet", "max_timeouts": 3,
    }  # fmt: skip
    assert submitted["job"].script == str(submit.TRAIN_NET) and submitted["job"].argv == tool_args
    out = capsys.readouterr().out
    assert "Submitted job 123; its logs: 123_0_log.out and 123_0_log.err." in out


BLOCKED_SUBMITIT = """
import runpy, sys
sys.modules["submitit"] = None  # as if it were not installed
import gsnet, gsnet.launcher, gsnet.training
sys.argv = ["submit.py", "--cluster", "local", "--", "OUTPUT_DIR", "out"]
runpy.run_path({script!r}, run_name="__main__")
"""


def test_without_submitit(repo_root):
    script = os.path.join(repo_root, "tools", "submit.py")
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_SUBMITIT.format(script=script)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.endswith(
        "submit.py: error: submitit is not installed: pip install -e '.[cluster]'\n"
    )
