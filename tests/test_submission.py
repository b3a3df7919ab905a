"""gsnet.submission: the requeued command line, the rendezvous of a job's tasks, the sbatch file
of a SLURM submission, and a preempted two-task job of submitit's local executor that resumes
to the weights of an uninterrupted run."""

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from gsnet.launcher import master_port_for_job
from gsnet.submission import ToolJob, build_executor, rendezvous_environment, resumed_argv


def test_requeued_training_resumes_and_evaluation_starts_again():
    training = ToolJob("tools/train_net.py", ["--config-file", "c.yaml", "OUTPUT_DIR", "out"])
    requeued = training.checkpoint()
    assert requeued.function.argv == ["--resume", "--config-file", "c.yaml", "OUTPUT_DIR", "out"]
    assert requeued.function.script == os.path.abspath("tools/train_net.py")
    assert resumed_argv(requeued.function.argv) == requeued.function.argv
    evaluation = ["--eval-only", "--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pth"]
    assert resumed_argv(evaluation) == evaluation


def test_rendezvous_of_a_job_on_two_nodes():
    job = SimpleNamespace(job_id="81234", num_nodes=2, num_tasks=16, global_rank=9, local_rank=1,
                          hostnames=["gpu017", "gpu018"])  # fmt: skip
    assert rendezvous_environment(job, environ={}) == {
        "RANK": "9", "LOCAL_RANK": "1", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu017", "MASTER_PORT": str(master_port_for_job("81234")),
    }  # fmt: skip
    single = SimpleNamespace(**{**vars(job), "num_nodes": 1, "num_tasks": 2, "global_rank": 1})
    given = rendezvous_environment(single, environ={"MASTER_PORT": "23456"})
    assert given["MASTER_ADDR"] == "127.0.0.1" and given["MASTER_PORT"] == "23456"


def test_sbatch_file_of_a_slurm_submission(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"  # submitit's SLURM executor looks for srun
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    executor = build_executor(
        tmp_path / "jobs", nodes=2, gpus_per_node=8, cpus_per_task=10, partition="gpu",
        timeout_min=4320, sbatch_options={"constraint": "volta32gb", "account": "rs"},
    )  # fmt: skip
    sbatch = executor._executor._make_submission_file_text("python -m job", "uid").splitlines()
    for line in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=10",
                 "--partition=gpu", "--time=4320", "--constraint=volta32gb", "--account=rs",
                 "--signal=USR2@120"):  # fmt: skip
        assert f"#SBATCH {line}" in sbatch
    assert sbatch[-1].startswith("srun ") and sbatch[-1].endswith("python -m job")


def test_preempted_job_resumes_to_the_same_weights(
    short_training, two_process_weights, free_port, tmp_path, monkeypatch
):
    for name in os.environ.keys() - short_training.env.keys():
        monkeypatch.delenv(name)
    for name, value in {**short_training.env, "MASTER_PORT": str(free_port)}.items():
        monkeypatch.setenv(name, value)
    output = tmp_path / "run"
    executor = build_executor(tmp_path / "jobs", cluster="local", gpus_per_node=0,
                              tasks_per_node=2)  # fmt: skip
    job = executor.submit(ToolJob(short_training.train_net, short_training.argv(output)))
    try:
        # SLURM's preemption signal to both tasks (the children of the local job's controller)
        # once the checkpoint of iteration 1 (of 4) is the last one.
        tasks_file = Path(f"/proc/{job._process.pid}/task/{job._process.pid}/children")
        last_checkpoint = output / "last_checkpoint"
        deadline = time.monotonic() + 300
        while not (last_checkpoint.exists() and last_checkpoint.read_text() == "model_0000001.pth"):
            assert time.monotonic() < deadline and job.state == "RUNNING", "no checkpoint came"
            time.sleep(0.005)
        for task in tasks_file.read_text().split():
            os.kill(int(task), signal.SIGUSR2)
        job.results()  # raises if a task failed after the requeue
    finally:
        job.cancel()

    assert f"Requeued job {job.job_id}" in job.stdout()
    log = (output / "log.txt").read_text()
    assert "Starting training from iteration 0" in log and "from iteration 2" in log
    assert "World size: 2" in log
    weights = short_training.final_weights(output)
    assert weights.keys() == two_process_weights.keys()
    for name, value in weights.items():
        assert torch.equal(value, two_process_weights[name]), name
