import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from gsnet.checkpoint import GSNetCheckpointer
from gsnet.data.class_names import load_class_names
from gsnet.evaluation import compare_precisions, load_label_map

TEST_SETS = ["FloodNet", "FLAIR_test", "FAST_val", "potsdam_all"]


class HalfWrongInLowPrecision:
    """Stands in for GSNet: in fp32 it predicts the ground truth; in any other precision the
    right half of every image gets the next class instead."""

    def __init__(self, num_classes, ignore_label):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.inference_precision = torch.float32

    def __call__(self, inputs):
        outputs = []
        for x in inputs:
            label = load_label_map(x["sem_seg_file_name"])
            label[label == self.ignore_label] = 0
            if self.inference_precision != torch.float32:
                right = label[:, label.shape[1] // 2 :]
                right[:] = (right + 1) % self.num_classes
            scores = torch.nn.functional.one_hot(torch.from_numpy(label), self.num_classes)
            outputs.append({"sem_seg": scores.permute(2, 0, 1).float()})
        return outputs


def test_agreement_and_miou_of_both_precisions(toy_root, register_root):
    register_root(toy_root)
    name = "potsdam_all"
    metadata = MetadataCatalog.get(name)
    model = HalfWrongInLowPrecision(
        len(load_class_names(metadata.class_json)), metadata.ignore_label
    )
    dicts = DatasetCatalog.get(name)
    result = compare_precisions(model, [[d] for d in dicts], name, torch.bfloat16)

    labels = [load_label_map(d["sem_seg_file_name"]) for d in dicts]
    left = [np.zeros(label.shape, bool) for label in labels]
    for mask in left:
        mask[:, : mask.shape[1] // 2] = True
    labelled = [label != metadata.ignore_label for label in labels]
    expected_labelled = sum((m & lab).sum() for m, lab in zip(left, labelled)) / sum(
        lab.sum() for lab in labelled
    )
    assert result["images"] == len(dicts)
    assert result["pixel_agreement"] == pytest.approx(
        100 * sum(m.sum() for m in left) / sum(m.size for m in left)
    )
    assert result["labelled_pixel_agreement"] == pytest.approx(100 * expected_labelled)
    assert result["mIoU_fp32"] == pytest.approx(100.0)
    assert result["mIoU_low"] < 90.0
    assert result["mIoU_difference"] == pytest.approx(result["mIoU_low"] - 100.0)
    assert model.inference_precision == torch.float32  # restored


def test_fp32_against_itself_is_refused():
    with pytest.raises(ValueError, match="compares fp32 with a lower precision"):
        compare_precisions(None, [], "FloodNet", torch.float32)


def test_max_images_stops_early(toy_root, register_root):
    register_root(toy_root)
    metadata = MetadataCatalog.get("FloodNet")
    model = HalfWrongInLowPrecision(
        len(load_class_names(metadata.class_json)), metadata.ignore_label
    )
    batches = [[d] for d in DatasetCatalog.get("FloodNet")]
    result = compare_precisions(model, batches, "FloodNet", torch.float16, max_images=2)
    assert result["images"] == 2 < len(batches)


def test_tool_compares_the_four_test_sets(
    load_tool, toy_root, register_root, make_toy_model, repo_root, tmp_path, capsys
):
    register_root(toy_root)
    weights = tmp_path / "toy.pth"
    GSNetCheckpointer(make_toy_model(), save_dir=str(tmp_path)).save("toy")
    tool = load_tool("compare_precision")
    status = tool.main(
        [
            "--config-file", os.path.join(repo_root, "configs", "toy.yaml"),
            "--weights", str(weights),
            "--max-images", "1",
            "--json", str(tmp_path / "precision.json"),
            "MODEL.DEVICE", "cpu",
        ]
    )  # fmt: skip
    assert status == 0
    table = capsys.readouterr().out
    report = json.loads((tmp_path / "precision.json").read_text())
    assert report["precision"] == "bfloat16"
    assert list(report["datasets"]) == TEST_SETS
    for name, result in report["datasets"].items():
        assert name in table
        assert result["images"] == 1
        assert 0 <= result["pixel_agreement"] <= 100
        assert 0 <= result["labelled_pixel_agreement"] <= 100


def test_tool_errors(load_tool, repo_root, tmp_path, capsys):
    tool = load_tool("compare_precision")
    config = os.path.join(repo_root, "configs", "toy.yaml")
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", config, "--weights", missing])
    assert exit_info.value.code == 2
    assert f"Weights file not found: {missing}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", config, "--weights", missing, "--max-images", "0"])
    assert exit_info.value.code == 2
    assert "--max-images must be at least 1, got 0" in capsys.readouterr().err
