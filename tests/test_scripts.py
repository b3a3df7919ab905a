"""scripts/train.sh and scripts/eval.sh: argument handling and the command lines they build.

GSNET_PYTHON points the scripts at a stand-in interpreter that prints its arguments, so these
tests check exactly what would be launched without starting a training run.
"""

import os
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def echo_python(tmp_path):
    stand_in = tmp_path / "python"
    stand_in.write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n')
    stand_in.chmod(0o755)
    return str(stand_in)


def run(script, *args, python=None):
    env = {**os.environ, "GSNET_PYTHON": python} if python else dict(os.environ)
    return subprocess.run(
        ["sh", os.path.join(REPO_ROOT, "scripts", script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "needs CONFIG, NUM_GPUS and OUTPUT_DIR"),
        (("configs/missing.yaml", "1", "out"), "config file 'configs/missing.yaml' not found"),
        (("configs/toy.yaml", "two", "out"), "NUM_GPUS must be a positive integer"),
        (("configs/toy.yaml", "0", "out"), "NUM_GPUS must be a positive integer"),
        (("configs/toy.yaml", "1", "out", "SOLVER.MAX_ITER"), "has no value"),
        (("configs/toy.yaml", "1", "out", "--frobnicate"), "unknown option '--frobnicate'"),
        (("configs/toy.yaml", "1", "out", "--dist-url"), "--dist-url needs a value"),
    ],
)
def test_train_sh_rejects_bad_arguments(args, message):
    done = run("train.sh", *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_train_sh_builds_the_launch_command(echo_python):
    done = run(
        "train.sh",
        "configs/toy.yaml",
        "2",
        "out dir",
        "SOLVER.BASE_LR",
        "0.1",
        "DATASETS.TEST",
        "('potsdam_all',)",
        "--num-machines",
        "2",
        "--machine-rank",
        "1",
        "--dist-url",
        "tcp://127.0.0.1:5000",
        "--resume",
        python=echo_python,
    )
    assert done.returncode == 0, done.stderr
    argv = done.stdout.splitlines()
    assert argv[0].endswith("tools/train_net.py")
    assert argv[argv.index("--config-file") + 1] == "configs/toy.yaml"
    assert argv[argv.index("--num-gpus") + 1] == "2"
    assert argv[argv.index("--num-machines") + 1] == "2"
    assert argv[argv.index("--machine-rank") + 1] == "1"
    assert argv[argv.index("--dist-url") + 1] == "tcp://127.0.0.1:5000"
    assert "--resume" in argv
    assert argv[argv.index("OUTPUT_DIR") + 1] == "out dir"
    assert argv[argv.index("DATASETS.TEST") + 1] == "('potsdam_all',)"
    assert argv[argv.index("SOLVER.BASE_LR") + 1] == "0.1"


def test_eval_sh_applies_the_paper_protocol(echo_python, tmp_path):
    (tmp_path / "model_final.pth").write_bytes(b"")
    done = run("eval.sh", "configs/vitb_384.yaml", "1", str(tmp_path), python=echo_python)
    assert done.returncode == 0, done.stderr
    argv = done.stdout.splitlines()
    assert "--eval-only" in argv and "--paper-evaluation" in argv
    assert argv[argv.index("MODEL.WEIGHTS") + 1] == f"{tmp_path}/model_final.pth"


def test_eval_sh_weights_override_and_missing_weights(echo_python, tmp_path):
    done = run(
        "eval.sh",
        "configs/toy.yaml",
        "1",
        str(tmp_path),
        "MODEL.WEIGHTS",
        "w.pth",
        python=echo_python,
    )
    argv = done.stdout.splitlines()
    assert argv.count("MODEL.WEIGHTS") == 1 and argv[argv.index("MODEL.WEIGHTS") + 1] == "w.pth"
    missing = run("eval.sh", "configs/toy.yaml", "1", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "pass MODEL.WEIGHTS" in missing.stderr


def test_eval_sh_suite_replaces_the_paper_protocol(echo_python, tmp_path):
    done = run(
        "eval.sh",
        "configs/toy.yaml",
        "1",
        str(tmp_path),
        "MODEL.WEIGHTS",
        "w.pth",
        "--suite",
        "ovrsisbench",
        python=echo_python,
    )
    assert done.returncode == 0, done.stderr
    argv = done.stdout.splitlines()
    assert argv[argv.index("--suite") + 1] == "ovrsisbench"
    assert "--paper-evaluation" not in argv
    missing = run("eval.sh", "configs/toy.yaml", "1", str(tmp_path), "--suite")
    assert missing.returncode == 2 and "--suite needs a value" in missing.stderr
    training = run("train.sh", "configs/toy.yaml", "1", str(tmp_path), "--suite", "paper")
    assert training.returncode == 2 and "unknown option '--suite'" in training.stderr
