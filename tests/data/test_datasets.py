"""Registration of the five datasets: names, metadata, pairing and errors on generated trees."""

import shutil

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from gsnet.data.class_names import load_class_names
from gsnet.data.datasets import GSNET_DATASETS, get_dataset_spec

NAMES = ["LandDiscover_50K", "FloodNet", "FLAIR_test", "FAST_val", "potsdam_all"]


def copy_tree(toy_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(toy_root, root)
    return root


def test_import_registers_the_five_names():
    assert [spec.name for spec in GSNET_DATASETS] == NAMES
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
    assert register_root(str(toy_root)) == NAMES
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
