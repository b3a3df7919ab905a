"""gsnet.demo, the web demo's logic without the page: the model it serves, the vocabulary, and
one upload through the toy model (downloads, overlay size, georeference, memory errors)."""

import csv
import subprocess
import sys

import pytest
import rasterio
import torch

from gsnet.data.class_names import CLASS_JSON_DIR, load_class_names
from gsnet.demo import (
    OVERLAY_MAX_SIDE,
    PAPER_CONFIG,
    QUICKSTART_WEIGHTS,
    TOY_CONFIG,
    DemoInputError,
    choose_model,
    parse_vocabulary,
    quickstart_examples,
    segment_upload,
)
from gsnet.errors import ConfigError
from gsnet.predictor import Predictor

CLASSES = "building, road, tree, water"


class ConstantModel:
    """Stands in for GSNet: every pixel scores highest for the last class."""

    def eval(self):
        return self

    def __call__(self, batched_inputs, class_names):
        T = len(class_names)
        scores = torch.arange(1, T + 1, dtype=torch.float32) / T
        return [
            {"sem_seg": scores.view(T, 1, 1).expand(T, x["height"], x["width"])}
            for x in batched_inputs
        ]


class FailingModel(ConstantModel):
    """Raises ``error`` on every call."""

    def __init__(self, error):
        self.error = error

    def __call__(self, batched_inputs, class_names):
        raise self.error


@pytest.fixture(scope="module")
def predictor(toy_model):
    return Predictor.from_model(toy_model, tile_size=96, progress=False)


def test_choose_model_takes_the_given_weights_with_the_paper_config_by_default(tmp_path):
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"")
    model = choose_model(weights=weights)
    assert (model.config, model.weights, model.note) == (PAPER_CONFIG, weights, "")


def test_choose_model_offers_the_quickstart_toy_model_and_says_so(tmp_path):
    toy_weights = tmp_path / QUICKSTART_WEIGHTS
    toy_weights.parent.mkdir()
    toy_weights.write_bytes(b"")
    model = choose_model(quickstart_output=tmp_path)
    assert (model.config, model.weights) == (TOY_CONFIG, toy_weights)
    assert "toy model" in model.note and str(toy_weights) in model.note


def test_choose_model_without_weights_or_toy_model_says_how_to_get_them(tmp_path):
    with pytest.raises(ConfigError, match=r"--weights model\.pth.*scripts/quickstart\.sh"):
        choose_model(quickstart_output=tmp_path)
    with pytest.raises(ConfigError, match="needs --weights"):
        choose_model(config=TOY_CONFIG, quickstart_output=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        choose_model(weights=tmp_path / "missing.pth")


def test_quickstart_examples_are_one_image_per_toy_test_set(toy_root, tmp_path):
    (tmp_path / "datasets").symlink_to(toy_root)
    examples = quickstart_examples(tmp_path)
    assert len(examples) == 4
    assert all(path.is_file() for path, _ in examples)
    assert examples[0][0].suffix == ".jpg"  # FloodNet, first of the test sets
    assert parse_vocabulary(examples[0][1]) == load_class_names(CLASS_JSON_DIR / "floodnet.json")
    assert quickstart_examples(tmp_path / "elsewhere") == []


def test_vocabulary_takes_commas_and_new_lines_and_refuses_too_many():
    assert parse_vocabulary("building,\nroad\ntree, ") == ["building", "road", "tree"]
    with pytest.raises(DemoInputError, match="at most 2"):
        parse_vocabulary("a, b, c", max_classes=2)
    with pytest.raises(DemoInputError, match="given twice"):
        parse_vocabulary("road, Road")


def test_png_gives_overlay_of_its_size_legend_statistics_and_downloads(
    predictor, write_scene, tmp_path
):
    write_scene(tmp_path / "scene.png", 110, 150)  # 2 x 2 tiles of 96 px
    stages = []
    result = segment_upload(
        predictor,
        tmp_path / "scene.png",
        CLASSES,
        output_dir=tmp_path,
        progress=lambda fraction, desc: stages.append(desc),
    )
    assert result.overlay.size == (150, 110)
    assert [entry.name for entry in result.legend] == ["building", "road", "tree", "water"]
    assert sum(entry.percent for entry in result.legend) == pytest.approx(100)
    assert sum(row["pixels"] for row in result.statistics) == 110 * 150
    assert not result.area_known
    assert [path.name for path in result.files] == [
        "scene_labels.png", "scene_stats.csv", "scene_overlay.png"
    ]  # fmt: skip
    with open(tmp_path / "scene_stats.csv", newline="") as file:
        assert [row["class"] for row in csv.DictReader(file)] == [
            "building",
            "road",
            "tree",
            "water",
        ]
    assert stages[0] == "reading the image" and "110 x 150 px into 4 classes" in stages[1]


def test_geotiff_gives_a_georeferenced_label_map_and_areas(predictor, write_scene, tmp_path):
    write_scene(tmp_path / "scene.tif", 40, 56)
    result = segment_upload(predictor, tmp_path / "scene.tif", CLASSES, output_dir=tmp_path)
    assert result.area_known
    assert sum(row["area_m2"] for row in result.statistics) == pytest.approx(40 * 56 * 0.25)
    with rasterio.open(tmp_path / "scene_labels.tif") as labels:
        assert labels.crs.to_epsg() == 32633 and (labels.height, labels.width) == (40, 56)
    assert tmp_path / "scene_labels.tif" in result.files


def test_overlay_of_a_large_image_is_shrunk_and_the_labels_are_not(write_scene, tmp_path):
    width = OVERLAY_MAX_SIDE + 52
    write_scene(tmp_path / "wide.png", 21, width)
    predictor = Predictor.from_model(ConstantModel(), tile_size=width, progress=False)
    result = segment_upload(predictor, tmp_path / "wide.png", "a, b", output_dir=tmp_path)
    assert result.overlay.size == (OVERLAY_MAX_SIDE, round(21 * OVERLAY_MAX_SIDE / width))
    assert result.overlay.getpixel((OVERLAY_MAX_SIDE - 1, 0)) != (255, 255, 255)  # no legend
    assert result.statistics[1]["pixels"] == 21 * width


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8e11"),
        MemoryError(),
    ],
)
def test_out_of_memory_is_a_one_line_message_naming_the_classes(error, write_scene, tmp_path):
    write_scene(tmp_path / "scene.png", 20, 30)
    predictor = Predictor.from_model(FailingModel(error), tile_size=32, progress=False)
    with pytest.raises(DemoInputError, match="into 4 classes: too many classes") as raised:
        segment_upload(predictor, tmp_path / "scene.png", CLASSES, output_dir=tmp_path)
    assert "\n" not in str(raised.value)


def test_other_errors_of_the_model_keep_their_traceback(write_scene, tmp_path):
    write_scene(tmp_path / "scene.png", 20, 30)
    predictor = Predictor.from_model(FailingModel(RuntimeError("shape mismatch")), tile_size=32)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        segment_upload(predictor, tmp_path / "scene.png", CLASSES, output_dir=tmp_path)


def test_import_gsnet_and_gsnet_demo_do_not_import_gradio():
    code = "import sys, gsnet, gsnet.demo; print('gradio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
