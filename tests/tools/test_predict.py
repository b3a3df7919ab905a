"""tools/predict.py end to end with the toy model: outputs, georeference, statistics, summary,
--overwrite, and one clear message with a non-zero exit status for each user error."""

import csv
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from gsnet.checkpoint import GSNetCheckpointer
from gsnet.errors import ConfigError

CLASSES = "building,road,tree,water"
TRANSFORM = from_origin(500000, 5000000, 0.5, 0.5)  # 0.25 m^2 pixels


@pytest.fixture
def tool(load_tool):
    return load_tool("predict")


@pytest.fixture(scope="module")
def weights(toy_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    GSNetCheckpointer(toy_model, save_dir=str(folder)).save("model")
    return str(folder / "model.pth")


@pytest.fixture(scope="module")
def config(repo_root):
    return os.path.join(repo_root, "configs", "toy.yaml")


def _write_geotiff(path, height, width):
    data = np.random.default_rng(0).integers(0, 4000, (4, height, width), dtype=np.uint16)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=4,
        dtype="uint16",
        crs="EPSG:32633",
        transform=TRANSFORM,
    ) as dataset:
        dataset.write(data)


def _write_png(path, height, width):
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _argv(config, weights, inputs, out, classes=CLASSES):
    """The tool's command line (--input takes each of ``inputs``)."""
    return [
        "--config", config, "--weights", str(weights), "--classes", classes,
        "--input", *map(str, inputs), "--output", str(out),
    ]  # fmt: skip


def _fails(capsys, tool, argv):
    """Run the tool expecting an error; returns its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        tool.main(argv)
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_geotiff_and_png_give_every_output_and_a_summary(tool, config, weights, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_geotiff(inputs / "scene.tif", 80, 120)  # two tiles of the toy's 96 px
    _write_png(inputs / "photo.png", 40, 50)
    out = tmp_path / "out"
    assert tool.main(_argv(config, weights, [inputs], out)) == 0

    with rasterio.open(out / "scene_labels.tif") as dataset:
        assert dataset.crs.to_epsg() == 32633 and dataset.transform == TRANSFORM
        assert dataset.dtypes == ("uint8",) and dataset.shape == (80, 120)
        assert dataset.nodata == 255 and dataset.profile["tiled"]
        scene_labels = dataset.read(1)
    photo = Image.open(out / "photo_labels.png")
    assert photo.mode == "P"
    for stem, labels in (("scene", scene_labels), ("photo", np.asarray(photo))):
        assert labels.max() < 4
        assert (out / f"{stem}_overlay.png").is_file()
        stats = json.loads((out / f"{stem}_stats.json").read_text())
        assert sum(c["pixels"] for c in stats["classes"]) == labels.size
        assert sum(c["percent"] for c in stats["classes"]) == pytest.approx(100)
        assert [c["pixels"] for c in stats["classes"]] == [
            int((labels == i).sum()) for i in range(4)
        ]
    assert np.asarray(photo).shape == (40, 50)
    assert not (out / "photo_labels.tif").exists() and not (out / "scene_labels.png").exists()
    assert not list(out.glob(".*"))  # no temporary file left

    with open(out / "scene_stats.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["class"] for r in rows] == CLASSES.split(",")
    for row in rows:
        assert float(row["area_m2"]) == pytest.approx(int(row["pixels"]) * 0.25)

    summary = json.loads((out / "summary.json").read_text())
    assert sorted(os.path.basename(e["image"]) for e in summary["images"]) == [
        "photo.png",
        "scene.tif",
    ]
    assert summary["images"][1]["crs"] == "EPSG:32633"
    assert sum(t["pixels"] for t in summary["total"]) == 80 * 120 + 40 * 50
    assert summary["total"][0]["area_m2"] is None  # the PNG has no pixel area
    with open(out / "summary.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 2 * 4


def test_existing_outputs_are_kept_unless_overwrite(tool, config, weights, tmp_path, capsys):
    _write_png(tmp_path / "photo.png", 30, 40)
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo_labels.png").write_bytes(b"old")
    argv = _argv(config, weights, [tmp_path / "photo.png"], out)
    err = _fails(capsys, tool, argv)
    assert "photo_labels.png" in err and "--overwrite" in err
    assert (out / "photo_labels.png").read_bytes() == b"old"
    assert not (out / "photo_overlay.png").exists()  # checked before running the model

    assert tool.main([*argv, "--overwrite"]) == 0
    assert Image.open(out / "photo_labels.png").size == (40, 30)


@pytest.mark.parametrize(
    "classes, message", [("", "No class names"), (" , ", "No class names"), ("a,b,A", "twice")]
)
def test_bad_class_names_are_reported(tool, config, weights, tmp_path, capsys, classes, message):
    _write_png(tmp_path / "photo.png", 10, 10)
    argv = _argv(config, weights, [tmp_path / "photo.png"], tmp_path / "out", classes=classes)
    assert message in _fails(capsys, tool, argv)


def test_missing_weights_are_reported(tool, config, tmp_path, capsys):
    _write_png(tmp_path / "photo.png", 10, 10)
    missing = tmp_path / "missing.pth"
    err = _fails(capsys, tool, _argv(config, missing, [tmp_path / "photo.png"], tmp_path / "out"))
    assert "Weights file not found" in err and str(missing) in err


@pytest.mark.parametrize("content", ["incompatible", "corrupt"])
def test_unusable_checkpoint_is_reported(tool, config, tmp_path, capsys, content):
    path = tmp_path / "other.pth"
    if content == "incompatible":
        torch.save({"model": {"backbone.weight": torch.zeros(3)}}, path)
    else:
        path.write_bytes(b"\x00garbage")
    _write_png(tmp_path / "photo.png", 10, 10)
    err = _fails(capsys, tool, _argv(config, path, [tmp_path / "photo.png"], tmp_path / "out"))
    assert f"Cannot load weights {path}" in err
    if content == "incompatible":
        assert "does not fit this model" in err


def test_unmatched_input_is_reported(tool, config, weights, tmp_path, capsys):
    pattern = str(tmp_path / "*.tif")
    err = _fails(capsys, tool, _argv(config, weights, [pattern], tmp_path / "out"))
    assert "matched no image file" in err and pattern in err


def test_unwritable_output_folder_is_reported(tool, config, weights, tmp_path, capsys):
    _write_png(tmp_path / "photo.png", 10, 10)
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "out"
    err = _fails(capsys, tool, _argv(config, weights, [tmp_path / "photo.png"], out))
    assert "is not writable" in err and str(out) in err


def test_a_full_disk_while_writing_is_one_line_naming_the_file(
    tool, config, weights, tmp_path, capsys, monkeypatch
):
    _write_png(tmp_path / "photo.png", 10, 10)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "photo_overlay.png")

    monkeypatch.setattr(tool, "write_overlay", disk_full)
    err = _fails(capsys, tool, _argv(config, weights, [tmp_path / "photo.png"], tmp_path / "out"))
    assert err.strip().splitlines()[-1] == (
        "predict.py: error: photo_overlay.png: No space left on device. Free space or choose "
        "another --output; the images already complete are kept."
    )


def test_debug_shows_the_traceback_of_an_input_error(tool, config, tmp_path):
    _write_png(tmp_path / "photo.png", 10, 10)
    argv = _argv(config, tmp_path / "missing.pth", [tmp_path / "photo.png"], tmp_path / "out")
    with pytest.raises(ConfigError, match="Weights file not found"):
        tool.main(["--debug", *argv])


def test_inputs_with_the_same_stem_are_refused(tool, config, weights, tmp_path, capsys):
    _write_png(tmp_path / "scene.png", 10, 10)
    _write_geotiff(tmp_path / "scene.tif", 10, 10)
    inputs = [tmp_path / "scene.png", tmp_path / "scene.tif"]
    err = _fails(capsys, tool, _argv(config, weights, inputs, tmp_path / "out"))
    assert "would write the same outputs" in err


def test_unreadable_image_is_named_and_the_others_are_done(tool, config, weights, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    _write_png(tmp_path / "good.png", 20, 30)
    out = tmp_path / "out"
    err = _fails(capsys, tool, _argv(config, weights, [tmp_path / "*.png"], out))
    assert "broken.png" in err and "could not be read" in err
    assert (out / "good_labels.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert [os.path.basename(f["image"]) for f in summary["failed"]] == ["broken.png"]


def test_config_overrides_after_input_are_not_inputs(tool, tmp_path):
    _write_png(tmp_path / "a.png", 10, 10)
    argv = [
        "--config", "c.yaml", "--weights", "w.pth", "--classes", "x", "--output", "out",
        "--input", str(tmp_path / "a.png"), "MODEL.DEVICE", "cpu", "TEST.SLIDING_WINDOW", "True",
    ]  # fmt: skip
    args = tool.parse_args(argv)
    assert args.input == [str(tmp_path / "a.png")]
    assert args.opts == ["MODEL.DEVICE", "cpu", "TEST.SLIDING_WINDOW", "True"]


def _write_scene_with_border(path, height, width, border):
    """A uint16 GeoTIFF whose first ``border`` columns hold no data (nodata 0 in every band)."""
    data = np.random.default_rng(2).integers(1, 4000, (4, height, width), dtype=np.uint16)
    data[:, :, :border] = 0
    with rasterio.open(
        path, "w", driver="GTiff", height=height, width=width, count=4, dtype="uint16",
        crs="EPSG:32633", transform=TRANSFORM, nodata=0, tiled=True, blockxsize=64,
        blockysize=64,
    ) as dataset:  # fmt: skip
        dataset.write(data)


def test_nodata_gets_the_label_files_nodata_and_stays_out_of_the_statistics(
    tool, config, weights, tmp_path
):
    _write_scene_with_border(tmp_path / "scene.tif", 150, 260, border=100)
    out = tmp_path / "out"
    argv = [*_argv(config, weights, [tmp_path / "scene.tif"], out), "--scores", "--bands", "3,2,1"]
    assert tool.main(argv) == 0
    with rasterio.open(out / "scene_labels.tif") as dataset:
        assert dataset.nodata == 255
        labels = dataset.read(1)
    assert (labels[:, :100] == 255).all() and (labels[:, 100:] < 4).all()
    with rasterio.open(out / "scene_scores.tif") as dataset:
        assert dataset.count == 4 and dataset.descriptions == tuple(CLASSES.split(","))
        scores = dataset.read()
    assert np.isnan(scores[:, :, :100]).all() and (scores[:, :, 100:] >= 0).all()
    stats = json.loads((out / "scene_stats.json").read_text())
    assert stats["nodata_pixels"] == 150 * 100 and stats["valid_pixels"] == 150 * 160
    assert sum(c["pixels"] for c in stats["classes"]) == 150 * 160
    assert sum(c["percent"] for c in stats["classes"]) == pytest.approx(100)


def test_cloud_optimized_output(tool, config, weights, tmp_path):
    _write_geotiff(tmp_path / "scene.tif", 40, 50)
    out = tmp_path / "out"
    assert tool.main([*_argv(config, weights, [tmp_path / "scene.tif"], out), "--cog"]) == 0
    with rasterio.open(out / "scene_labels.tif") as dataset:
        assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dataset.crs.to_epsg() == 32633 and dataset.nodata == 255


def test_rerun_keeps_complete_images_and_redoes_interrupted_ones(tool, config, weights, tmp_path):
    _write_png(tmp_path / "done.png", 20, 30)
    _write_png(tmp_path / "killed.png", 20, 30)
    out = tmp_path / "out"
    assert tool.main(_argv(config, weights, [tmp_path / "done.png"], out)) == 0
    done_stats = (out / "done_stats.json").stat().st_mtime_ns
    # What a run killed while writing killed.png leaves: temporary files only.
    (out / ".killed_labels.png.partial").write_bytes(b"half")
    assert tool.main(_argv(config, weights, [tmp_path / "*.png"], out)) == 0
    assert (out / "done_stats.json").stat().st_mtime_ns == done_stats  # kept
    assert (out / "killed_stats.json").is_file() and not list(out.glob(".*"))
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["images"]) == 2
    assert tool.main([*_argv(config, weights, [tmp_path / "*.png"], out), "--overwrite"]) == 0
    assert (out / "done_stats.json").stat().st_mtime_ns != done_stats


def test_complete_outputs_of_other_class_names_are_refused(tool, config, weights, tmp_path, capsys):
    _write_png(tmp_path / "photo.png", 10, 10)
    out = tmp_path / "out"
    assert tool.main(_argv(config, weights, [tmp_path / "photo.png"], out)) == 0
    err = _fails(capsys, tool, _argv(config, weights, [tmp_path / "photo.png"], out, "a,b"))
    assert "other class names" in err and "--overwrite" in err


@pytest.mark.parametrize(
    "option, message",
    [
        (["--tile-size", "0"], "--tile-size must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--bands", "4,x,2"], "three 1-based band numbers"),
        (["--num-gpus", "0"], "--num-gpus must be at least 1"),
    ],
)
def test_bad_option_values_are_one_line_errors(
    tool, config, weights, tmp_path, capsys, option, message
):
    _write_png(tmp_path / "photo.png", 10, 10)
    argv = [*_argv(config, weights, [tmp_path / "photo.png"], tmp_path / "out"), *option]
    assert message in _fails(capsys, tool, argv)


def test_class_name_too_long_for_the_text_encoder_is_one_line(
    tool, config, weights, tmp_path, capsys
):
    _write_png(tmp_path / "photo.png", 10, 10)
    classes = "road," + "very " * 80 + "long"
    err = _fails(
        capsys, tool, _argv(config, weights, [tmp_path / "photo.png"], tmp_path / "o", classes)
    )
    assert "is too long for the text encoder" in err and "77-token" in err
    assert len(err.strip().splitlines()) == 1


def test_two_processes_write_what_one_process_writes(config, weights, tmp_path, repo_root):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_scene_with_border(inputs / "scene.tif", 230, 150, border=30)  # 4 tile rows
    _write_png(inputs / "a.png", 30, 40)
    _write_png(inputs / "b.png", 50, 20)
    # One thread per process in both runs: a thread count can change a float's last bit.
    env = {**os.environ, "PYTHONPATH": repo_root, "OMP_NUM_THREADS": "1"}
    outputs = []
    for processes in (1, 2):
        out = tmp_path / f"out{processes}"
        command = [
            sys.executable, os.path.join(repo_root, "tools", "predict.py"),
            *_argv(config, weights, [inputs], out), "--scores", "--num-gpus", str(processes),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        outputs.append(out)
    names = sorted(p.name for p in outputs[0].iterdir())
    assert names == sorted(p.name for p in outputs[1].iterdir()) and len(names) == 17
    for name in names:
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name
