"""tools/predict.py end to end with the toy model: outputs, georeference, statistics, summary,
--overwrite, and one clear message with a non-zero exit status for each user error."""

import csv
import json
import os

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from gsnet.checkpoint import GSNetCheckpointer

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

    for stem, size in (("scene", (80, 120)), ("photo", (40, 50))):
        labels = np.asarray(Image.open(out / f"{stem}_labels.png"))
        assert Image.open(out / f"{stem}_labels.png").mode == "P" and labels.shape == size
        assert labels.max() < 4
        assert (out / f"{stem}_overlay.png").is_file()
        stats = json.loads((out / f"{stem}_stats.json").read_text())
        assert sum(c["pixels"] for c in stats["classes"]) == size[0] * size[1]
        assert sum(c["percent"] for c in stats["classes"]) == pytest.approx(100)
        assert [c["pixels"] for c in stats["classes"]] == [
            int((labels == i).sum()) for i in range(4)
        ]
    assert not (out / "photo_labels.tif").exists()

    with rasterio.open(out / "scene_labels.tif") as dataset:
        assert dataset.crs.to_epsg() == 32633 and dataset.transform == TRANSFORM
        assert dataset.dtypes == ("uint8",) and dataset.shape == (80, 120)
        np.testing.assert_array_equal(
            dataset.read(1), np.asarray(Image.open(out / "scene_labels.png"))
        )
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
