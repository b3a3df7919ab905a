"""Registration of the table's datasets: names, metadata, pairing and errors on generated trees."""

import shutil

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from gsnet.data.class_names import load_class_names
from gsnet.data.datasets import (
    GSNET_DATASETS,
    benchmark_datasets,
    get_dataset_spec,
    invalid_label_values,
    remap_labels,
)

NAMES = ["LandDiscover_50K", "FloodNet", "FLAIR_test", "FAST_val", "potsdam_all"]


def copy_tree(toy_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(toy_root, root)
    return root


def test_import_registers_the_five_names():
    assert benchmark_datasets("GSNet") == NAMES
    assert [spec.name for spec in GSNET_DATASETS[: len(NAMES)]] == NAMES
    for name in NAMES:
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).evaluator_type == "sem_seg"


@pytest.mark.parametrize(
    "name, ignore_label, num_json, num_metadata",
    [
        ("LandDiscover_50K", 0, 40, 40),
        ("FloodNet", 0, 10, 10),
        ("FLAIR_test", 12, 12, 13),
        ("FAST_val", 255, 37, 37),
        ("potsdam_all", 5, 5, 6),
    ],
)
def test_metadata(name, ignore_label, num_json, num_metadata):
    meta = MetadataCatalog.get(name)
    assert meta.ignore_label == ignore_label
    model_classes = load_class_names(meta.class_json)
    assert len(model_classes) == num_json
    assert len(meta.stuff_classes) == num_metadata
    assert meta.class_json.endswith(get_dataset_spec(name).class_json)


def test_metadata_exceptions_are_the_documented_ones():
    flair = MetadataCatalog.get("FLAIR_test").stuff_classes
    assert flair[1:3] == ["pervious surface", "impervious surface"]
    assert flair[12] == "other"
    assert MetadataCatalog.get("potsdam_all").stuff_classes[5] == "clutter"
    for name in ["LandDiscover_50K", "FloodNet", "FAST_val"]:
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == load_class_names(meta.class_json)


def test_registration_under_a_root_lists_every_pair(toy_root, register_root):
    assert register_root(str(toy_root))[: len(NAMES)] == NAMES
    counts = {name: len(DatasetCatalog.get(name)) for name in NAMES}
    assert counts == {name: 6 if name == "LandDiscover_50K" else 3 for name in NAMES}
    record = DatasetCatalog.get("FloodNet")[0]
    assert record["file_name"].endswith("FloodNet/val+test/img/toy_00000.jpg")
    assert record["sem_seg_file_name"].endswith("FloodNet/val+test/lbl/toy_00000.png")
    assert MetadataCatalog.get("FloodNet").image_root == f"{toy_root}/FloodNet/val+test/img"


def test_reregistration_replaces_the_previous_root(toy_root, tmp_path, register_root):
    register_root(str(tmp_path / "elsewhere"))
    register_root(str(toy_root))
    assert MetadataCatalog.get("potsdam_all").sem_seg_root.startswith(str(toy_root))
    assert len(DatasetCatalog.get("potsdam_all")) == 3


def test_fast_labels_in_gray_subfolder(toy_root, tmp_path, register_root):
    root = copy_tree(toy_root, tmp_path)
    labels = root / "FAST/val/semlabels"
    (labels / "gray").mkdir()
    for label in labels.glob("*.png"):
        label.rename(labels / "gray" / label.name)
    register_root(str(root))
    assert MetadataCatalog.get("FAST_val").sem_seg_root == str(labels / "gray")
    records = DatasetCatalog.get("FAST_val")
    assert len(records) == 3
    assert all("/semlabels/gray/" in r["sem_seg_file_name"] for r in records)


def test_fast_labels_directly_in_semlabels(toy_root, register_root):
    register_root(str(toy_root))
    assert MetadataCatalog.get("FAST_val").sem_seg_root.endswith("FAST/val/semlabels")


def test_unmatched_image_and_label_are_errors(toy_root, tmp_path, register_root):
    root = copy_tree(toy_root, tmp_path)
    (root / "PotsdamSplit/ann_dir/val/toy_00001.png").unlink()
    shutil.copy(
        root / "PotsdamSplit/ann_dir/val/toy_00002.png",
        root / "PotsdamSplit/ann_dir/val/orphan.png",
    )
    register_root(str(root))
    with pytest.raises(ValueError) as info:
        DatasetCatalog.get("potsdam_all")
    message = str(info.value)
    assert "1 image(s)" in message and "toy_00001.png" in message
    assert "1 label(s)" in message and "orphan.png" in message


def test_missing_folder_shows_expected_tree(tmp_path, register_root):
    register_root(str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get("FLAIR_test")
    message = str(info.value)
    assert f"{tmp_path}/FLAIR/test/image does not exist" in message
    assert "FLAIR/test/mask/*.png" in message
    assert "12 = 'other' is ignored" in message


def test_wrong_extension_is_explained(toy_root, tmp_path, register_root):
    root = copy_tree(toy_root, tmp_path)
    for image in (root / "FloodNet/val+test/img").glob("*.jpg"):
        image.rename(image.with_suffix(".JPG"))
    register_root(str(root))
    with pytest.raises(FileNotFoundError, match=r"no \*\.jpg file.*\.JPG: 3"):
        DatasetCatalog.get("FloodNet")


# The rows of the other benchmarks: (name, model classes = evaluation classes, ignore label).
OTHER_BENCHMARKS = [
    ("DLRSD_train_sem_seg", 17, 255),
    ("DLRSD_val_sem_seg", 17, 255),
    ("DLRSD_all_sem_seg", 17, 255),
    ("iSAID_train_sem_seg", 15, 255),
    ("iSAID_val_sem_seg", 15, 255),
    ("iSAID_all_sem_seg", 15, 255),
    ("Potsdam_all_sem_seg", 6, 255),
    ("Vaihingen_all_sem_seg", 6, 255),
    ("LoveDA_all_sem_seg", 8, 255),
    ("uavid_all_sem_seg", 8, 255),
    ("UDD5_all_sem_seg", 5, 255),
    ("VDD_all_sem_seg", 7, 255),
    ("openearthmap_val", 9, 255),
]


def test_the_table_holds_exactly_these_benchmarks():
    assert [spec.name for spec in GSNET_DATASETS] == NAMES + [n for n, _, _ in OTHER_BENCHMARKS]
    assert benchmark_datasets("SegEarth-OV") == ["openearthmap_val"]
    assert len(benchmark_datasets("OVRSISBench")) == 12


@pytest.mark.parametrize("name, num_classes, ignore_label", OTHER_BENCHMARKS)
def test_other_benchmarks_metadata(name, num_classes, ignore_label):
    meta = MetadataCatalog.get(name)
    assert meta.ignore_label == ignore_label
    assert meta.stuff_classes == load_class_names(meta.class_json)
    assert len(meta.stuff_classes) == num_classes


def test_ovrsisbench_class_strings_as_distributed():
    assert MetadataCatalog.get("Potsdam_all_sem_seg").stuff_classes[-1] == "Clutter/background"
    assert MetadataCatalog.get("LoveDA_all_sem_seg").stuff_classes[:2] == ["no-data", "Background"]
    assert MetadataCatalog.get("VDD_all_sem_seg").stuff_classes[0] == "Other"
    assert MetadataCatalog.get("DLRSD_train_sem_seg").class_json.endswith(
        "datasets/ovrsisbench/dlrsd.json"
    )


def test_other_benchmarks_register_under_a_root(toy_root, register_root):
    register_root(str(toy_root))
    for name, _, _ in OTHER_BENCHMARKS:
        assert len(DatasetCatalog.get(name)) == 3, name
    record = DatasetCatalog.get("UDD5_all_sem_seg")[0]
    assert record["file_name"].endswith("UDD5/all/src/toy_00000.JPG")
    assert record["sem_seg_file_name"].endswith("UDD5/all/gt/toy_00000.png")


def test_other_benchmark_missing_folder_shows_expected_tree(tmp_path, register_root):
    register_root(str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get("LoveDA_all_sem_seg")
    message = str(info.value)
    assert f"{tmp_path}/LoveDA/images_png does not exist" in message
    assert "LoveDA/masks_png/*.png" in message and "255 = unlabelled (ignored)" in message
    assert "--only LoveDA_all_sem_seg" in message


def test_remap_labels_maps_listed_values_and_keeps_the_others():
    label = np.array([[0, 1, 2], [3, 7, 0]])
    mapped = remap_labels(label, ((0, 255), (1, 0), (2, 1)))
    assert mapped.tolist() == [[255, 0, 1], [3, 7, 255]]
    assert label.tolist() == [[0, 1, 2], [3, 7, 0]]  # the input is left as it was
    assert remap_labels(label, ()) is label


def test_invalid_label_values_are_the_values_outside_classes_and_ignore():
    label = np.array([[0, 1, 2], [255, 7, -1]])
    assert invalid_label_values(label, num_classes=3, ignore_value=255) == [-1, 7]
    assert invalid_label_values(label[:1], num_classes=3, ignore_value=255) == []
