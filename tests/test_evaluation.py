"""The evaluator's numbers on a hand-made case, its input checks, and the results table."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from gsnet.evaluation import GSNetSemSegEvaluator, write_results_table

NAME = "gsnet_test_evaluation"
IGNORE = 255
# Ground truth of two images (2 x 3 and 1 x 2); class 2 ("c") never occurs in it.
GT = [np.array([[0, 0, 1], [1, IGNORE, 1]]), np.array([[1, 0]])]
PRED = [np.array([[0, 2, 1], [0, 1, 1]]), np.array([[1, 1]])]


@pytest.fixture
def dataset(tmp_path):
    records = []
    for i, gt in enumerate(GT):
        Image.fromarray(gt.astype(np.uint8)).save(tmp_path / f"gt{i}.png")
        records.append(
            {
                "file_name": str(tmp_path / f"img{i}.png"),
                "sem_seg_file_name": str(tmp_path / f"gt{i}.png"),
            }
        )
    DatasetCatalog.register(NAME, lambda: records)
    MetadataCatalog.get(NAME).set(stuff_classes=["a", "b", "c"], ignore_label=IGNORE)
    yield records
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def scores(pred, num_channels=3):
    """(C, H, W) one-hot scores whose argmax is ``pred``."""
    return torch.nn.functional.one_hot(torch.as_tensor(pred), 3).permute(2, 0, 1)[:num_channels]


def evaluate(records, preds, num_channels=3):
    evaluator = GSNetSemSegEvaluator(NAME, distributed=False)
    evaluator.reset()
    for record, pred in zip(records, preds):
        evaluator.process([record], [{"sem_seg": scores(pred, num_channels).float()}])
    return evaluator.evaluate()["sem_seg"]


def test_metrics_by_hand(dataset):
    # Counted over non-ignored pixels (7): class a: gt 3, pred 2, tp 1 -> IoU 1/4, ACC 1/3;
    # class b: gt 4, pred 4, tp 3 -> IoU 3/5, ACC 3/4; class c: no ground truth -> left out,
    # but its prediction on an "a" pixel is a miss for "a".
    res = evaluate(dataset, PRED)
    assert res["IoU-a"] == pytest.approx(100 / 4)
    assert res["IoU-b"] == pytest.approx(100 * 3 / 5)
    assert math.isnan(res["IoU-c"]) and math.isnan(res["ACC-c"])
    assert res["mIoU"] == pytest.approx(100 * (1 / 4 + 3 / 5) / 2)
    assert res["mACC"] == pytest.approx(100 * (1 / 3 + 3 / 4) / 2)
    assert res["pACC"] == pytest.approx(100 * 4 / 7)
    assert res["fwIoU"] == pytest.approx(100 * (3 / 7 * 1 / 4 + 4 / 7 * 3 / 5))


def test_fewer_channels_than_metadata_classes(dataset):
    # A model whose vocabulary is a prefix of the metadata list (2 of 3 classes).
    preds = [np.where(p == 2, 0, p) for p in PRED]
    res = evaluate(dataset, preds, num_channels=2)
    assert res["IoU-a"] == pytest.approx(100 * 2 / 4)  # gt 3, pred 3, tp 2
    assert res["pACC"] == pytest.approx(100 * 5 / 7)


def test_prediction_of_wrong_size_is_refused(dataset):
    evaluator = GSNetSemSegEvaluator(NAME, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match=r"is 2 x 2 .*gt0\.png is 3 x 2"):
        evaluator.process([dataset[0]], [{"sem_seg": torch.zeros(3, 2, 2)}])


def test_too_many_channels_are_refused(dataset):
    evaluator = GSNetSemSegEvaluator(NAME, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match="4 class channels .* 3 classes"):
        evaluator.process([dataset[0]], [{"sem_seg": torch.zeros(4, 2, 3)}])


def test_ground_truth_outside_the_classes_is_refused(dataset, tmp_path):
    Image.fromarray(np.array([[0, 7, 1], [1, 1, 1]], dtype=np.uint8)).save(tmp_path / "gt0.png")
    evaluator = GSNetSemSegEvaluator(NAME, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match=r"gt0.png holds label values \[7\]"):
        evaluator.process([dataset[0]], [{"sem_seg": scores(PRED[0]).float()}])


def result(miou, pacc):
    return {"sem_seg": {"mIoU": miou, "fwIoU": 1.0, "mACC": 2.0, "pACC": pacc, "IoU-x": math.nan}}


def test_results_table_files(tmp_path):
    table = write_results_table(
        {"FloodNet": result(40.0, 80.0), "FAST_val": result(20.0, 60.0)}, str(tmp_path / "out")
    )
    assert "| mean | 30.00 | 1.00 | 2.00 | 70.00 |" in table
    with open(tmp_path / "out" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["dataset"] for r in rows] == ["FloodNet", "FAST_val", "mean"]
    assert float(rows[2]["mIoU"]) == pytest.approx(30.0)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["FAST_val"]["sem_seg"]["IoU-x"] is None
    assert (tmp_path / "out" / "results.md").read_text().strip() == table


def test_results_per_class_csv(tmp_path):
    results = {"FloodNet": result(40.0, 80.0), "VDD_all_sem_seg": result(20.0, 60.0)}
    results["VDD_all_sem_seg"]["sem_seg"].update({"IoU-Road": 12.5, "ACC-Road": 50.0})
    write_results_table(results, str(tmp_path))
    with open(tmp_path / "results_per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"dataset": "FloodNet", "class": "x", "IoU": "", "ACC": ""},
        {"dataset": "VDD_all_sem_seg", "class": "x", "IoU": "", "ACC": ""},
        {"dataset": "VDD_all_sem_seg", "class": "Road", "IoU": "12.5000", "ACC": "50.0000"},
    ]


def test_results_table_rejects_an_unwrapped_result(tmp_path):
    with pytest.raises(ValueError, match="pass {dataset_name: result}"):
        write_results_table(result(1.0, 2.0), str(tmp_path))


def test_results_table_names_missing_metrics(tmp_path):
    with pytest.raises(ValueError, match=r"'FloodNet' lacks \['pACC'\]"):
        write_results_table(
            {"FloodNet": {"sem_seg": {"mIoU": 1, "fwIoU": 1, "mACC": 1}}}, str(tmp_path)
        )
