"""Robustness: the resumable data stream, crash-safe checkpoints, RNG states, the finite-loss stop,
which errors count as the user's, and readers fed damaged files (a seeded fuzz test)."""

import errno
import io
import os
import random
import zlib

import numpy as np
import pytest
import torch
from detectron2.engine import HookBase
from detectron2.utils.events import EventStorage
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset

from gsnet.checkpoint import GSNetCheckpointer, load_specialist_weights, write_file_atomically
from gsnet.data.dataset_mapper import read_image_file
from gsnet.data.sampling import ResumableTrainLoader, ShuffledStream, seeded_augmentation
from gsnet.errors import (
    CheckpointWriteError,
    GSNetUserError,
    InputFileError,
    NonFiniteLossError,
    user_error_message,
)
from gsnet.evaluation import load_label_map
from gsnet.predictor import ImageReadError
from gsnet.predictor import read_image as predictor_read_image
from gsnet.training import (
    GSNetTrainer,
    GSNetTrainLoop,
    capture_rng_states,
    restore_rng_states,
)


# ---------------------------------------------------------------------- resumable data stream
def fake_mapper(record):
    """A sample that records what the stream and the augmentation RNGs gave."""
    return dict(record, numpy_draw=int(np.random.randint(1 << 30)), python_draw=random.random())


# 7 images of both orientations (width > height for even indices), so that batches of 2 leave
# images waiting in an orientation bucket.
RECORDS = [
    {"file_name": f"img{i}", "width": 40 if i % 2 == 0 else 30, "height": 30} for i in range(7)
]


def batches(loader, count):
    """The next ``count`` batches, each with the loader's state right after it."""
    iterator = iter(loader)
    return [(next(iterator), loader.state_dict()) for _ in range(count)]


def make_loader(**kwargs):
    options = {"batch_size": 2, "seed": 5, "num_workers": 0} | kwargs
    return ResumableTrainLoader(RECORDS, fake_mapper, **options)


def test_resumed_stream_continues_exactly_after_any_batch():
    reference = batches(make_loader(), 10)
    assert any(state["waiting"] for _, state in reference), "no batch left images waiting"
    for k in (0, 3, 6):
        resumed = make_loader(seed=99)  # the state carries the seed
        resumed.load_state_dict(reference[k][1])
        assert [b for b, _ in batches(resumed, 3)] == [b for b, _ in reference[k + 1 : k + 4]]


def test_stream_does_not_depend_on_workers():
    reference = batches(make_loader(), 6)
    with_workers = make_loader(num_workers=2)
    with_workers.load_state_dict(reference[1][1])
    assert [b for b, _ in batches(with_workers, 4)] == [b for b, _ in reference[2:6]]


def test_batches_have_one_orientation_and_cover_each_epoch():
    stream = ShuffledStream(len(RECORDS), seed=5)
    assert sorted(stream[p] for p in range(7)) == list(range(7))
    assert sorted(stream[p] for p in range(7, 14)) == list(range(7))
    for batch, _ in batches(make_loader(), 8):
        assert len({s["width"] > s["height"] for s in batch}) == 1


def test_processes_share_one_stream():
    def positions(rank):
        loader = make_loader(aspect_ratio_grouping=False, rank=rank, world_size=2)
        return [s["file_name"] for batch, _ in batches(loader, 3) for s in batch]

    stream = ShuffledStream(len(RECORDS), seed=5)
    expected = [f"img{stream[p]}" for p in range(12)]
    assert positions(0) == expected[0::2] and positions(1) == expected[1::2]


def test_restart_with_another_number_of_processes():
    loader = make_loader(aspect_ratio_grouping=False)
    loader.restart(seed=5, completed_batches=3)
    assert loader.state_dict() == {"seed": 5, "world_size": 1, "taken": 6, "waiting": []}
    with pytest.raises(ValueError, match="use restart"):
        loader.load_state_dict(dict(loader.state_dict(), world_size=2))


def test_negative_seed_draws_a_random_data_seed(make_toy_cfg, toy_root, register_root):
    register_root(str(toy_root))
    seeds = {GSNetTrainer.build_train_loader(make_toy_cfg("SEED", -1)).seed for _ in range(3)}
    assert all(isinstance(seed, int) and seed >= 0 for seed in seeds) and len(seeds) > 1


def test_seeded_augmentation_is_reproducible_and_restores_the_global_generators():
    np.random.seed(1)
    random.seed(1)
    expected_numpy, expected_python = np.random.rand(), random.random()
    np.random.seed(1)
    random.seed(1)
    draws = []
    for _ in range(2):
        with seeded_augmentation(3, 17):
            draws.append((np.random.rand(), random.random()))
    assert draws[0] == draws[1]
    assert (np.random.rand(), random.random()) == (expected_numpy, expected_python)


def test_rng_states_survive_a_checkpoint_file(tmp_path):
    random.seed(4)
    np.random.seed(4)
    torch.manual_seed(4)
    torch.save({"rng": capture_rng_states()}, tmp_path / "state.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng_states(torch.load(tmp_path / "state.pth", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


# ---------------------------------------------------------------------- checkpoints
@pytest.fixture
def checkpointer(tmp_path):
    model = torch.nn.Linear(2, 2)
    checkpointer = GSNetCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_0000001")
    return checkpointer


def test_atomic_write_replaces_or_keeps(tmp_path):
    target = tmp_path / "file"
    write_file_atomically(str(target), lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_file_atomically(str(target), fail)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file"]


def test_full_disk_keeps_the_previous_checkpoint(checkpointer, tmp_path, monkeypatch):
    before = (tmp_path / "model_0000001.pth").read_bytes()

    def full_disk(data, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as raised:
        checkpointer.save("model_0000003")
    message = str(raised.value)
    assert message.startswith("Disk full: could not write " + str(tmp_path / "model_0000003.pth"))
    assert str(tmp_path / "model_0000001.pth") in message and "--resume" in message
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def test_partial_files_of_a_killed_write_are_removed(checkpointer, tmp_path):
    (tmp_path / ".model_0000003.pth.1a2b3c4d.partial").write_bytes(b"half")
    checkpointer.remove_partial_files()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]


def test_checkpoint_files_are_not_private(checkpointer, tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "model_0000001.pth").st_mode & 0o777 == 0o666 & ~umask


def test_unreadable_checkpoints_are_named(checkpointer, tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((tmp_path / "model_0000001.pth").read_bytes()[:100])
    with pytest.raises(InputFileError, match=f"Cannot read checkpoint {truncated}"):
        checkpointer.load(str(truncated))
    with pytest.raises(InputFileError, match="Weights file not found: .*missing.pth"):
        checkpointer.resume_or_load(str(tmp_path / "missing.pth"), resume=False)
    (tmp_path / "last_checkpoint").write_text("model_0000099.pth")
    with pytest.raises(InputFileError, match="names .*model_0000099.pth, which does not exist"):
        checkpointer.resume_or_load("", resume=True)


class _TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, batch):
        return {"loss": self.linear(torch.stack(batch)).float().pow(2).mean()}


def test_gradient_scaler_state_is_checkpointed():
    def fp16_loop():
        model = _TinyModel()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return GSNetTrainLoop(
            model, [[torch.ones(2)]] * 3, optimizer, precision=torch.float16, device_type="cpu"
        )

    loop = fp16_loop()
    with EventStorage(0):
        loop.run_step()
    loop.grad_scaler.update(new_scale=1024.0)
    resumed = fp16_loop()
    resumed.load_state_dict(loop.state_dict())
    assert resumed.grad_scaler.get_scale() == 1024.0


# ---------------------------------------------------------------------- non-finite loss
class _Snapshot(HookBase):
    """Keeps the weights as they were when an iteration started."""

    def before_step(self):
        self.weights = {k: v.clone() for k, v in self.trainer.model.state_dict().items()}


def test_non_finite_loss_stops_before_the_optimizer_step(
    make_toy_cfg, toy_root, register_root, tmp_path
):
    register_root(str(toy_root))
    cfg = make_toy_cfg(
        "OUTPUT_DIR", tmp_path, "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 1,
        "SOLVER.IMS_PER_BATCH", 1, "DATALOADER.NUM_WORKERS", 0, "DATASETS.TEST", "()",
        "SEED", 1,
    )  # fmt: skip
    trainer = GSNetTrainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer._trainer.model
    forward = model.forward

    def forward_nan_at_iteration_1(data):
        losses = forward(data)
        factor = float("nan") if trainer.iter == 1 else 1.0
        return {name: loss * factor for name, loss in losses.items()}

    model.forward = forward_nan_at_iteration_1
    snapshot = _Snapshot()
    trainer.register_hooks([snapshot])
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.train()
    message = str(raised.value)
    assert message.startswith("Training stopped at iteration 1: the loss is not finite")
    assert "loss_sem_seg=nan" in message and "optimizer step was not applied" in message
    assert f"last complete checkpoint is {tmp_path / 'model_0000000.pth'}" in message
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshot.weights[name]), name
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == ["model_0000000.pth"]


# ---------------------------------------------------------------------- which errors are the user's
def test_user_errors_and_bugs_are_told_apart(tmp_path):
    assert user_error_message(GSNetUserError("fix this")) == "fix this"
    with pytest.raises(FileNotFoundError) as raised:  # raised by GSNet's own code
        load_specialist_weights(None, str(tmp_path / "missing.pth"))
    assert "missing.pth" in user_error_message(raised.value)
    with pytest.raises(ValueError) as raised:  # raised inside NumPy: a bug
        np.zeros(2).reshape(3)
    assert user_error_message(raised.value) is None


class _FailingItems(IterableDataset):
    def __iter__(self):
        read_image_file("/nonexistent/picture.png")
        yield 0


def test_error_of_a_data_loader_worker_is_unwrapped():
    with pytest.raises(InputFileError) as raised:
        next(iter(DataLoader(_FailingItems(), batch_size=None, num_workers=1)))
    assert "DataLoader worker" in str(raised.value)
    message = user_error_message(raised.value)
    assert message.startswith("Cannot read image /nonexistent/picture.png: FileNotFoundError")
    assert "Traceback" not in message


# ---------------------------------------------------------------------- readers fed damaged files
def _encoded_images():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    grey = rng.integers(0, 40, (24, 20), dtype=np.uint8)
    sources = {}
    for name, image, fmt in (
        ("rgb.png", Image.fromarray(rgb), "PNG"),
        ("palette.png", Image.fromarray(grey).convert("P"), "PNG"),
        ("grey.png", Image.fromarray(grey), "PNG"),
        ("rgb.jpg", Image.fromarray(rgb), "JPEG"),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        sources[name] = buffer.getvalue()
    return sources


def _png_claiming_size(png, width, height):
    """``png`` with its IHDR chunk (bytes 8-33) rewritten to claim another size (valid CRC)."""
    header = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]
    return png[:12] + header + zlib.crc32(header).to_bytes(4, "big") + png[33:]


def _damaged_files(folder, count, seed=0):
    """Damaged image files: truncations, flipped bytes, random bytes, a valid header followed by
    noise, an empty file, a PNG with a broken chunk (PIL raises SyntaxError) and a PNG whose
    header claims 100,000 x 100,000 pixels (DecompressionBombError)."""
    rng = random.Random(seed)
    sources = _encoded_images()
    png = sources["rgb.png"]
    # The IDAT chunk (at byte 33) declared 100 bytes shorter: the decoder reads compressed data
    # as the next chunk's header.
    idat_length = int.from_bytes(png[33:37], "big") - 100
    files = {
        "empty.png": b"",
        "broken_chunk.png": png[:33] + idat_length.to_bytes(4, "big") + png[37:],
        "bomb.png": _png_claiming_size(png, 100_000, 100_000),
    }
    for i in range(count):
        name, data = rng.choice(sorted(sources.items()))
        kind = i % 4
        if kind == 0:
            data = data[: rng.randrange(len(data))]
        elif kind == 1:
            data = bytearray(data)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:
            data = rng.randbytes(rng.randrange(1, 200))
        else:
            data = data[:8] + rng.randbytes(rng.randrange(1, 300))
        files[f"case{i}_{name}"] = bytes(data)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return sorted(folder / name for name in files)


READERS = {
    "training mapper": (lambda path: read_image_file(str(path), "RGB"), InputFileError),
    "evaluation label": (lambda path: load_label_map(str(path)), InputFileError),
    "predictor": (predictor_read_image, ImageReadError),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_damaged_files_give_a_clean_error_naming_the_file(reader, tmp_path):
    read, error_type = READERS[reader]
    failures = []
    for path in _damaged_files(tmp_path, count=200):
        try:
            read(path)
        except error_type as error:
            if str(path) not in str(error):
                failures.append(f"{path.name}: message does not name the file: {error}")
        except Exception as error:
            failures.append(f"{path.name}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


# Damage that PIL rejects with exceptions other than OSError: the predictor still names the file.
PIL_SPECIAL_CASES = ("broken_chunk.png", "bomb.png")


@pytest.mark.parametrize("name", PIL_SPECIAL_CASES)
def test_predictor_names_files_that_pil_rejects_with_other_errors(name, tmp_path):
    path = next(p for p in _damaged_files(tmp_path, 0) if p.name == name)
    with pytest.raises(ImageReadError, match=name):
        predictor_read_image(path)
