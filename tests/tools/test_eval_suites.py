"""Evaluation suites end to end on the toy trees: the OVRSISBench suite (eight sets, each with its
own vocabulary, one table) and a dataset of one's own from a descriptor with a label mapping."""

import csv

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

from gsnet.config import OVRSISBENCH_TEST_SETS
from gsnet.data import GSNetSemanticDatasetMapper
from gsnet.evaluation import write_results_table
from gsnet.training import GSNetTrainer


@pytest.fixture
def evaluate_suite(load_tool, repo_root, toy_root, register_root, toy_model, tmp_path):
    """evaluate_suite(SUITE, KEY, VALUE, ...) -> (results, output folder), as eval.sh runs it."""
    register_root(str(toy_root))
    train_net = load_tool("train_net")

    def evaluate(suite, *opts):
        argv = ["--config-file", f"{repo_root}/configs/toy.yaml", "--eval-only", "--suite", suite]
        args = train_net.argument_parser().parse_args(
            [*argv, "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", *opts,
             "OUTPUT_DIR", str(tmp_path / "out")]
        )  # fmt: skip
        cfg = train_net.setup(args)
        results = GSNetTrainer.test(cfg, toy_model)
        write_results_table(results, cfg.OUTPUT_DIR)
        return results, tmp_path / "out"

    return evaluate


def test_ovrsisbench_suite_writes_one_table(evaluate_suite):
    results, out = evaluate_suite("ovrsisbench")
    assert tuple(results) == OVRSISBENCH_TEST_SETS
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["dataset"] for row in rows] == [*OVRSISBENCH_TEST_SETS, "mean"]
    mean = np.mean([results[name]["sem_seg"]["mIoU"] for name in OVRSISBENCH_TEST_SETS])
    assert float(rows[-1]["mIoU"]) == pytest.approx(mean, abs=1e-4)
    with open(out / "results_per_class.csv") as f:
        per_class = [(row["dataset"], row["class"]) for row in csv.DictReader(f)]
    assert ("LoveDA_all_sem_seg", "no-data") in per_class
    assert ("Potsdam_all_sem_seg", "Clutter/background") in per_class
    assert sum(name == "DLRSD_all_sem_seg" for name, _ in per_class) == 17


def own_dataset(toy_root, tmp_path):
    """The toy VDD set with labels stored as value + 1 (0 = unlabelled), and its descriptor."""
    labels = tmp_path / "own_labels"
    labels.mkdir()
    for label_file in (toy_root / "VDD/gt").glob("*.png"):
        label = np.asarray(Image.open(label_file)).astype(np.int64)
        stored = np.where(label == 255, 0, label + 1).astype(np.uint8)
        Image.fromarray(stored).save(labels / label_file.name)
    mapping = ", ".join(f"{value + 1}: {value}" for value in range(7))
    descriptor = tmp_path / "own.yaml"
    descriptor.write_text(
        f"name: own_vdd\nimages: {toy_root}/VDD/src\nlabels: own_labels\nimage_suffix: .JPG\n"
        f"classes: [other, wall, road, vegetation, vehicle, roof, water]\n"
        f"label_mapping: {{0: 255, {mapping}}}\n"
    )
    return descriptor


def test_descriptor_dataset_evaluates_like_its_built_in_twin(evaluate_suite, toy_root, tmp_path):
    descriptor = own_dataset(toy_root, tmp_path)
    results, out = evaluate_suite(
        "own_vdd,VDD_all_sem_seg", "DATASETS.DESCRIPTORS", f"('{descriptor}',)"
    )
    own, built_in = results["own_vdd"]["sem_seg"], results["VDD_all_sem_seg"]["sem_seg"]
    # The same pixels and (case aside) the same vocabulary: the mapping restores the labels.
    for metric in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert own[metric] == pytest.approx(built_in[metric]), metric
    assert "| own_vdd |" in (out / "results.md").read_text()


def test_training_mapper_applies_the_label_mapping(toy_root, tmp_path, make_toy_cfg):
    from gsnet.data.descriptors import register_descriptor

    register_descriptor(str(own_dataset(toy_root, tmp_path)))
    cfg = make_toy_cfg(
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "255"
    )
    mapper = GSNetSemanticDatasetMapper(cfg, True)
    record = DatasetCatalog.get("own_vdd")[0]
    values = set(mapper(record)["sem_seg"].unique().tolist())
    assert values <= set(range(7)) | {255} and 255 in values
