"""Dataset descriptors: a dataset of one's own registered from a YAML/JSON file, its label mapping
and the one-line errors of a bad descriptor."""

import json

import numpy as np
import pytest
import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from gsnet.data.checks import check_dataset
from gsnet.data.class_names import load_class_names
from gsnet.data.datasets import get_dataset_spec
from gsnet.data.descriptors import read_descriptor, register_descriptor
from gsnet.errors import DescriptorError

CLASSES = ["road", "tree", "roof"]


@pytest.fixture
def parcels(toy_root, tmp_path):
    """A dataset of one's own: the toy Potsdam images, labels 1..3 for the classes and 0 for
    unlabelled (so a label mapping is needed), and its descriptor."""
    images, labels = tmp_path / "parcels" / "images", tmp_path / "parcels" / "masks"
    images.mkdir(parents=True)
    labels.mkdir()
    for image in sorted((toy_root / "PotsdamSplit/img_dir/val").glob("*.png")):
        Image.open(image).save(images / f"{image.stem}.tif")
        label = np.asarray(Image.open(toy_root / "PotsdamSplit/ann_dir/val" / image.name))
        Image.fromarray((label % 4).astype(np.uint8)).save(labels / image.name)
    descriptor = {
        "name": "parcels_val",
        "images": "parcels/images",
        "labels": "parcels/masks",
        "image_suffix": ".tif",
        "classes": CLASSES,
        "label_mapping": {0: 255, 1: 0, 2: 1, 3: 2},
    }
    return tmp_path, descriptor


def write(folder, descriptor, name="parcels.yaml"):
    file = folder / name
    if name.endswith(".json"):
        file.write_text(json.dumps(descriptor))
    else:
        file.write_text(yaml.safe_dump(descriptor))
    return file


def test_descriptor_registers_like_a_built_in_dataset(parcels):
    folder, descriptor = parcels
    file = write(folder, descriptor)
    assert register_descriptor(str(file)) == "parcels_val"
    records = DatasetCatalog.get("parcels_val")
    assert len(records) == 3
    assert records[0]["file_name"] == str(folder / "parcels/images/toy_00000.tif")
    assert records[0]["label_mapping"] == ((0, 255), (1, 0), (2, 1), (3, 2))
    meta = MetadataCatalog.get("parcels_val")
    assert meta.stuff_classes == CLASSES and meta.ignore_label == 255
    assert meta.evaluator_type == "sem_seg" and meta.label_mapping == {0: 255, 1: 0, 2: 1, 3: 2}
    assert load_class_names(meta.class_json) == CLASSES  # the vocabulary eval and predict read
    assert get_dataset_spec("parcels_val").benchmark == "descriptor"


def test_descriptor_dataset_passes_the_checks_after_its_label_mapping(parcels):
    folder, descriptor = parcels
    register_descriptor(str(write(folder, descriptor)))
    report = check_dataset("parcels_val")
    assert report.ok, report.problems
    assert report.num_pairs == 3

    del descriptor["label_mapping"]  # the files' 3 is then no class index of 3 classes
    register_descriptor(str(write(folder, descriptor)))
    problems = check_dataset("parcels_val").problems
    assert len(problems) == 1 and "hold values [3]" in problems[0]


def test_json_descriptor_with_a_class_file(parcels):
    folder, descriptor = parcels
    (folder / "classes.json").write_text(json.dumps(CLASSES))
    descriptor.update(name="parcels_json", classes="classes.json")
    file = write(folder, descriptor, "parcels.json")
    spec = read_descriptor(str(file))
    assert (spec.name, spec.image_ext, spec.label_ext) == ("parcels_json", "tif", "png")
    assert load_class_names(file) == CLASSES


def test_missing_folder_names_the_descriptor(parcels):
    folder, descriptor = parcels
    descriptor.update(name="parcels_missing", images="nowhere")
    file = write(folder, descriptor)
    register_descriptor(str(file))
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get("parcels_missing")
    message = str(info.value)
    assert f"{folder}/nowhere does not exist" in message and str(file) in message
    assert "'images'" in message


@pytest.mark.parametrize(
    "change, field",
    [
        ({"name": ""}, "name"),
        ({"name": "FloodNet"}, "name"),
        ({"images": 3}, "images"),
        ({"image_suffix": "_sat.tif"}, "image_suffix"),
        ({"classes": []}, "classes"),
        ({"classes": ["a", "A"]}, "classes"),
        ({"classes": "missing.json"}, "classes"),
        ({"ignore_label": -1}, "ignore_label"),
        ({"label_mapping": [1, 2]}, "label_mapping"),
        ({"label_mapping": {1: 3}}, "label_mapping"),
        ({"label_mapping": {"x": 0}}, "label_mapping"),
        ({"classs": ["a"]}, "classs"),
    ],
)
def test_bad_descriptor_names_the_file_and_the_field(parcels, change, field):
    folder, descriptor = parcels
    file = write(folder, {**descriptor, **change})
    with pytest.raises(DescriptorError) as info:
        read_descriptor(str(file))
    message = str(info.value)
    assert message.startswith(f"{file}: field '{field}': ") and "\n" not in message


def test_missing_field_and_unparsable_file(parcels):
    folder, descriptor = parcels
    del descriptor["labels"]
    with pytest.raises(DescriptorError, match="field 'labels': missing"):
        read_descriptor(str(write(folder, descriptor)))
    broken = folder / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(DescriptorError, match=r"broken.yaml: not valid YAML at line 2") as raised:
        read_descriptor(str(broken))
    assert "\n" not in str(raised.value) and str(raised.value).count("broken.yaml") == 1
    listing = folder / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(DescriptorError, match="a mapping of fields"):
        read_descriptor(str(listing))
