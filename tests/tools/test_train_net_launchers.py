"""tools/train_net.py started by torchrun (one machine, or two "machines" on this host) and by
a simulated srun: the same final weights as the same number of processes started by
Detectron2's launcher, the same evaluation as one process; a command line that contradicts the
launcher is one error line."""

import json
import os
import subprocess
import sys

import pytest
import torch

from gsnet.checkpoint import GSNetCheckpointer
from gsnet.training import GSNetTrainer


def torchrun(port, nnodes, nproc_per_node, node_rank):
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
        "--nproc-per-node", str(nproc_per_node), "--node-rank", str(node_rank),
        "--master-addr", "127.0.0.1", "--master-port", str(port),
    ]  # fmt: skip


def srun_task(port, rank):
    """A task of `srun --nodes 2 --ntasks-per-node 1` as SLURM would start it."""
    return [sys.executable], {
        "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "4242", "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": "0", "SLURM_NTASKS": "2", "SLURM_NNODES": "2",
        "SLURM_NODELIST": "127.0.0.[1-2]", "MASTER_PORT": str(port),
    }  # fmt: skip


# Each layout: the commands (launcher prefix, extra environment) that make up the run.
LAYOUTS = {
    "torchrun-1x2": lambda port: [(torchrun(port, 1, 2, 0), {})],
    "torchrun-2x1": lambda port: [(torchrun(port, 2, 1, rank), {}) for rank in (0, 1)],
    "srun-2x1": lambda port: [srun_task(port, rank) for rank in (0, 1)],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_weights_as_detectron2s_launcher(
    layout, short_training, two_process_weights, free_port, tmp_path
):
    output = tmp_path / "run"
    processes = []
    for index, (prefix, extra_env) in enumerate(LAYOUTS[layout](free_port)):
        log = open(tmp_path / f"stderr.{index}", "w")
        command = [*prefix, short_training.train_net, *short_training.argv(output)]
        env = {**short_training.env, **extra_env}
        processes.append(subprocess.Popen(command, env=env, stderr=log, stdout=log))
        log.close()
    for index, process in enumerate(processes):
        stderr = tmp_path / f"stderr.{index}"
        assert process.wait(timeout=600) == 0, stderr.read_text()[-3000:]
    assert "World size: 2" in (output / "log.txt").read_text()
    weights = short_training.final_weights(output)
    assert weights.keys() == two_process_weights.keys()
    for name, value in weights.items():
        assert torch.equal(value, two_process_weights[name]), name


def test_evaluation_under_torchrun_matches_one_process(
    short_training, two_process_weights, free_port, tmp_path, repo_root, make_toy_cfg,
    make_toy_model, toy_root, register_root,
):  # fmt: skip
    weights = tmp_path / "weights.pth"
    torch.save({"model": two_process_weights}, weights)
    test_sets = "('potsdam_all', 'FloodNet')"
    output = tmp_path / "eval"
    done = subprocess.run(
        [*torchrun(free_port, 1, 2, 0), short_training.train_net, "--eval-only",
         "--config-file", os.path.join(repo_root, "configs", "toy.yaml"),
         "OUTPUT_DIR", str(output), "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights),
         "DATASETS.TEST", test_sets],
        env=short_training.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())

    register_root(str(toy_root))
    model = make_toy_model().eval()
    GSNetCheckpointer(model).load(str(weights))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process
    try:
        expected = GSNetTrainer.test(make_toy_cfg("DATASETS.TEST", test_sets), model)
    finally:
        torch.set_num_threads(threads)
    assert list(results) == list(expected)
    for name in expected:
        for metric in ("mIoU", "fwIoU", "mACC", "pACC"):
            assert results[name]["sem_seg"][metric] == expected[name]["sem_seg"][metric]


def test_num_gpus_under_torchrun_is_one_error_line(
    load_tool, repo_root, tmp_path, monkeypatch, capsys
):
    for name in [name for name in os.environ if name.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    torchrun_env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}  # fmt: skip
    for name, value in torchrun_env.items():
        monkeypatch.setenv(name, value)
    train_net = load_tool("train_net")
    config = os.path.join(repo_root, "configs", "toy.yaml")
    with pytest.raises(SystemExit) as raised:
        train_net.cli(["--num-gpus", "4", "--config-file", config, "OUTPUT_DIR", str(tmp_path)])
    assert raised.value.code == 2
    assert capsys.readouterr().err == (
        "train_net.py: error: torchrun started 2 process(es) per machine on 1 machine(s), but "
        "the command line asks for 4 per machine on 1: drop --num-gpus and --num-machines "
        "(torchrun's --nproc-per-node and --nnodes set them; one process per GPU).\n"
    )
    assert not os.listdir(tmp_path)
