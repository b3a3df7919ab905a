"""tools/train_net.py on bad inputs (one line on stderr, exit status 2, nothing overwritten) and a
run killed with SIGKILL and resumed (the same final weights as an uninterrupted run).

Most runs call the tool's ``cli()`` in this process (a subprocess costs seconds of imports);
the killed run and one exit-status check are subprocesses.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gsnet.checkpoint import GSNetCheckpointer

TRAIN_IMAGES = "LandDiscover50K/TR_Image"
TRAIN_LABELS = "LandDiscover50K/GT_ID"
# A short CPU run on the toy tree, without evaluation.
RUN_OPTS = [
    "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4",
    "SOLVER.CHECKPOINT_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()",
    "SEED", "1",
]  # fmt: skip


@pytest.fixture
def train_net(load_tool):
    """tools/train_net.py as a module; the log handlers its runs add are removed after."""
    loggers = [logging.getLogger(name) for name in ("detectron2", "fvcore", "gsnet")]
    handlers = {logger.name: list(logger.handlers) for logger in loggers}
    yield load_tool("train_net")
    for logger in loggers:
        for handler in logger.handlers[:]:
            if handler not in handlers[logger.name]:
                logger.removeHandler(handler)
                handler.close()


@pytest.fixture
def root(toy_root, tmp_path, register_root):
    """A registered private copy of the toy tree (6 training pairs of 32 x 32)."""
    copy = tmp_path / "datasets"
    shutil.copytree(toy_root, copy)
    register_root(str(copy))
    return copy


@pytest.fixture
def two_pair_root(root):
    """The toy tree with two training pairs: both are in the first batch."""
    for stem in ("toy_00002", "toy_00003", "toy_00004", "toy_00005"):
        (root / TRAIN_IMAGES / f"{stem}.png").unlink()
        (root / TRAIN_LABELS / f"{stem}.png").unlink()
    return root


def run_failing(train_net, capsys, repo_root, output_dir, *opts, flags=()):
    """Run the tool; check exit status 2 and one error line without traceback; return it."""
    argv = [*flags, "--config-file", os.path.join(repo_root, "configs", "toy.yaml")]
    with pytest.raises(SystemExit) as raised:
        train_net.cli([*argv, "OUTPUT_DIR", str(output_dir), *RUN_OPTS, *opts])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("train_net.py: error: ")]
    assert len(errors) == 1, err
    return err[err.index("train_net.py: error: ") :]


def write_file(path, content):
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return str(path)


# ---------------------------------------------------------------------- the dataset
def test_missing_dataset_root(train_net, capsys, repo_root, tmp_path, register_root):
    register_root(str(tmp_path / "nowhere"))
    message = run_failing(train_net, capsys, repo_root, tmp_path / "out")
    assert f"Dataset 'LandDiscover_50K': folder {tmp_path}/nowhere/{TRAIN_IMAGES} does not" in (
        message
    )
    assert "Expected layout:" in message and "DETECTRON2_DATASETS" in message


def test_incomplete_dataset_root(train_net, capsys, repo_root, tmp_path, root):
    shutil.rmtree(root / TRAIN_LABELS)
    message = run_failing(train_net, capsys, repo_root, tmp_path / "out")
    assert f"folder {root / TRAIN_LABELS} does not exist" in message


@pytest.mark.parametrize(
    "folder, expected",
    [
        (TRAIN_LABELS, "1 image(s) in {images} have no *.png label in {labels}: toy_00003.png"),
        (TRAIN_IMAGES, "1 label(s) in {labels} have no *.png image in {images}: toy_00003.png"),
    ],
)
def test_unpaired_files(train_net, capsys, repo_root, tmp_path, root, folder, expected):
    (root / folder / "toy_00003.png").unlink()
    message = run_failing(train_net, capsys, repo_root, tmp_path / "out")
    images, labels = root / TRAIN_IMAGES, root / TRAIN_LABELS
    assert expected.format(images=images, labels=labels) in message


@pytest.mark.parametrize("workers", ["0", "1"])
def test_truncated_image_stops_training_with_the_file_named(
    train_net, capsys, repo_root, tmp_path, two_pair_root, workers
):
    image = two_pair_root / TRAIN_IMAGES / "toy_00001.png"
    image.write_bytes(image.read_bytes()[:200])
    message = run_failing(
        train_net, capsys, repo_root, tmp_path / "out", "DATALOADER.NUM_WORKERS", workers
    )
    assert message.startswith(
        f"train_net.py: error: Training stopped at iteration 0: Cannot read image {image}: "
    )
    assert "No checkpoint was written yet" in message


def test_label_of_another_size(train_net, capsys, repo_root, tmp_path, two_pair_root):
    label = two_pair_root / TRAIN_LABELS / "toy_00001.png"
    Image.open(label).crop((0, 0, 32, 24)).save(label)
    message = run_failing(train_net, capsys, repo_root, tmp_path / "out")
    image = two_pair_root / TRAIN_IMAGES / "toy_00001.png"
    assert f"Label {label} is 32 x 24 (W x H) but its image {image} is 32 x 32" in message


def test_label_values_outside_the_classes(train_net, capsys, repo_root, tmp_path, two_pair_root):
    label = two_pair_root / TRAIN_LABELS / "toy_00001.png"
    values = np.array(Image.open(label))
    values[:4, :4] = 77
    Image.fromarray(values).save(label)
    message = run_failing(train_net, capsys, repo_root, tmp_path / "out")
    assert f"Label {label} holds values [77] that are neither a class index (0..39" in message
    assert "nor the ignore value 0" in message


# ---------------------------------------------------------------------- class names
@pytest.mark.parametrize(
    "content, expected",
    [
        ("[]", "holds an empty list"),
        ('["road", "tree"', "is not valid JSON"),
        ('["road", "Road"]', "entry 1 ('Road') repeats entry 0 ('road')"),
    ],
)
def test_bad_class_json(train_net, capsys, repo_root, tmp_path, root, content, expected):
    classes = write_file(tmp_path / "classes.json", content)
    message = run_failing(
        train_net, capsys, repo_root, tmp_path / "out",
        "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", classes,
    )  # fmt: skip
    assert f"Class-name file {classes}" in message and expected in message


def test_num_classes_contradicting_the_class_json(train_net, capsys, repo_root, tmp_path, root):
    message = run_failing(
        train_net, capsys, repo_root, tmp_path / "out", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "12"
    )
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES=12 contradicts TRAIN_CLASS_JSON" in message


# ---------------------------------------------------------------------- weight files
@pytest.mark.parametrize(
    "key, content, expected",
    [
        ("MODEL.WEIGHTS", None, "Weights file not found: {file} (MODEL.WEIGHTS)"),
        ("MODEL.WEIGHTS", b"not a checkpoint", "Cannot read checkpoint {file}: "),
        (
            "MODEL.SEM_SEG_HEAD.DINO_WEIGHTS",
            None,
            "Specialist (RSIB) weight file (MODEL.SEM_SEG_HEAD.DINO_WEIGHTS) not found: {file}",
        ),
        (
            "MODEL.SEM_SEG_HEAD.DINO_WEIGHTS",
            b"\x80\x04garbage",
            "Specialist (RSIB) weight file (MODEL.SEM_SEG_HEAD.DINO_WEIGHTS) {file} is not a "
            "readable PyTorch file",
        ),
        ("MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS", None, "CLIP weight file not found: {file}"),
        (
            "MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS",
            b"PK\x03\x04 truncated zip",
            "CLIP weight file (MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS) {file} is not a readable",
        ),
    ],
)
def test_missing_or_corrupt_weights(
    train_net, capsys, repo_root, tmp_path, root, key, content, expected
):
    file = tmp_path / "weights.pth"
    if content is not None:
        file.write_bytes(content)
    message = run_failing(train_net, capsys, repo_root, tmp_path / "out", key, str(file))
    assert expected.format(file=file) in message


def test_checkpoint_of_another_architecture(
    train_net, capsys, repo_root, tmp_path, root, make_toy_model
):
    model = make_toy_model("MODEL.SEM_SEG_HEAD.NUM_LAYERS", "1")
    GSNetCheckpointer(model, save_dir=str(tmp_path)).save("other")
    weights = tmp_path / "other.pth"
    message = run_failing(
        train_net, capsys, repo_root, tmp_path / "out", "MODEL.WEIGHTS", str(weights)
    )
    assert f"Checkpoint {weights} does not fit this model" in message
    assert "unexpected keys" in message or "missing keys" in message


# ---------------------------------------------------------------------- output and config
def test_output_dir_that_cannot_be_written(train_net, capsys, repo_root, tmp_path, root):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    message = run_failing(train_net, capsys, repo_root, blocker / "out")
    assert f"OUTPUT_DIR {blocker / 'out'} cannot be written: Not a directory" in message
    assert sorted(os.listdir(tmp_path)) == ["a_file", "datasets"]
    assert blocker.read_text() == "keep me"


def test_earlier_run_is_not_overwritten(train_net, capsys, repo_root, tmp_path, root):
    output = tmp_path / "out"
    output.mkdir()
    write_file(output / "last_checkpoint", "model_0000001.pth")
    write_file(output / "model_0000001.pth", b"weights")
    message = run_failing(train_net, capsys, repo_root, output)
    assert "already holds a training run (last checkpoint: model_0000001.pth)" in message
    assert "--resume" in message
    assert sorted(os.listdir(output)) == ["last_checkpoint", "model_0000001.pth"]
    assert (output / "model_0000001.pth").read_bytes() == b"weights"


def test_unknown_config_key(train_net, capsys, repo_root, tmp_path, root):
    message = run_failing(train_net, capsys, repo_root, tmp_path / "out", "SOLVER.MAX_ITERS", "3")
    assert "The config does not load: Non-existent key: SOLVER.MAX_ITERS." in message


@pytest.mark.parametrize("learning_rate", ["0.0", "-0.001"])
def test_learning_rate_that_is_not_positive(
    train_net, capsys, repo_root, tmp_path, root, learning_rate
):
    message = run_failing(
        train_net, capsys, repo_root, tmp_path / "out", "SOLVER.BASE_LR", learning_rate
    )
    assert f"SOLVER.BASE_LR is {float(learning_rate)}; it must be a positive" in message


def test_unknown_dataset_name(train_net, capsys, repo_root, tmp_path, root):
    message = run_failing(
        train_net, capsys, repo_root, tmp_path / "out", "DATASETS.TRAIN", "('LandDiscover',)"
    )
    assert "DATASETS.TRAIN names ['LandDiscover'], which is not registered." in message
    assert "LandDiscover_50K" in message


def test_debug_shows_the_traceback(train_net, repo_root, tmp_path, register_root):
    register_root(str(tmp_path / "nowhere"))
    argv = ["--debug", "--config-file", os.path.join(repo_root, "configs", "toy.yaml")]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_net.cli([*argv, "OUTPUT_DIR", str(tmp_path / "out"), *RUN_OPTS])


def test_exit_status_of_a_subprocess(repo_root, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "nowhere"))
    command = [
        sys.executable, os.path.join(repo_root, "tools", "train_net.py"),
        "--config-file", os.path.join(repo_root, "configs", "toy.yaml"),
        "OUTPUT_DIR", str(tmp_path / "out"), *RUN_OPTS,
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train_net.py: error: Dataset 'LandDiscover_50K': folder " in result.stderr


# ---------------------------------------------------------------------- killed and resumed
def mixed_orientation_root(root):
    """Half of the training pairs cropped to 32 x 24 (W x H), so that batches of one
    orientation leave images waiting at a checkpoint."""
    for stem in ("toy_00001", "toy_00003", "toy_00005"):
        for folder in (TRAIN_IMAGES, TRAIN_LABELS):
            path = root / folder / f"{stem}.png"
            Image.open(path).crop((0, 0, 32, 24)).save(path)


def final_weights(output_dir):
    return torch.load(os.path.join(output_dir, "model_final.pth"), weights_only=True)["model"]


def test_killed_run_resumes_to_the_same_weights(train_net, repo_root, tmp_path, root):
    mixed_orientation_root(root)
    argv = ["--config-file", os.path.join(repo_root, "configs", "toy.yaml")]

    # Killed with SIGKILL once the checkpoint of iteration 1 (of 4) is the last one.
    killed = tmp_path / "killed"
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))
    command = [sys.executable, os.path.join(repo_root, "tools", "train_net.py"), *argv]
    process = subprocess.Popen(
        [*command, "OUTPUT_DIR", str(killed), *RUN_OPTS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last_checkpoint = killed / "last_checkpoint"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if last_checkpoint.exists() and last_checkpoint.read_text() == "model_0000001.pth":
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    state = torch.load(killed / "model_0000001.pth", weights_only=True)["trainer"]
    assert state["resume"]["processes"][0]["data"]["waiting"], "nothing waited in a bucket"

    # Resumed with the same command plus --resume (and a data-loader worker: the data do not
    # depend on the number of workers), and an uninterrupted run.
    train_net.cli(["--resume", *argv, "OUTPUT_DIR", str(killed), *RUN_OPTS,
                   "DATALOADER.NUM_WORKERS", "1"])  # fmt: skip
    train_net.cli([*argv, "OUTPUT_DIR", str(tmp_path / "uninterrupted"), *RUN_OPTS])
    resumed, uninterrupted = final_weights(killed), final_weights(tmp_path / "uninterrupted")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name
