"""Toy datasets: every layout of the table, valid labels, determinism and the shared-class
design."""

import numpy as np
import pytest
from PIL import Image

from gsnet.data.datasets import GSNET_DATASETS, benchmark_datasets, class_lists
from gsnet.data.toy_datasets import make_toy_datasets, shared_classes

TRAIN = GSNET_DATASETS[0]


def read_pairs(root, spec):
    images = sorted((root / spec.image_dir).glob(f"*.{spec.image_ext}"))
    labels = sorted((root / spec.label_dir).glob(f"*.{spec.label_ext}"))
    assert [p.stem for p in images] == [p.stem for p in labels]
    return [
        (np.asarray(Image.open(i).convert("RGB")), np.asarray(Image.open(lbl)))
        for i, lbl in zip(images, labels)
    ]


def test_all_layouts_with_counts_and_sizes(toy_root):
    for spec in GSNET_DATASETS:
        pairs = read_pairs(toy_root, spec)
        assert len(pairs) == (6 if spec is TRAIN else 3), spec.name
        for image, label in pairs:
            expected = (32, 32) if spec is TRAIN else (32, 40)
            assert image.shape == (*expected, 3) and label.shape == expected


def test_label_values_are_classes_or_ignore(toy_root):
    for spec in GSNET_DATASETS:
        num_classes = len(class_lists(spec)[1])
        values = set()
        for _, label in read_pairs(toy_root, spec):
            values |= set(np.unique(label).tolist())
        assert values <= set(range(num_classes)) | {spec.ignore_label}, spec.name
        assert spec.ignore_label in values, spec.name  # the background


def test_floodnet_images_are_jpeg(toy_root):
    files = list((toy_root / "FloodNet/val+test/img").iterdir())
    assert files and all(f.suffix == ".jpg" for f in files)
    assert Image.open(files[0]).format == "JPEG"


def test_shared_classes_are_exact_lower_case_matches():
    shared = shared_classes()
    assert {name: shared[name] for name in benchmark_datasets("GSNet")[1:]} == {
        "FloodNet": ["Background", "water", "tree", "vehicle", "grass"],
        "FLAIR_test": ["water"],
        "FAST_val": ["Basketball-Court", "Bridge", "Roundabout", "Tennis-Court"],
        "potsdam_all": ["tree"],
    }
    assert shared["Potsdam_all_sem_seg"] == ["Tree"]
    assert shared["openearthmap_val"] == [
        "background", "grass", "pavement", "road", "tree", "water"
    ]  # fmt: skip


def mean_colours(pairs, names, ignore):
    """Lower-cased class name -> mean RGB of its pixels."""
    sums = {}
    for image, label in pairs:
        for value in np.unique(label):
            if value == ignore and ignore >= len(names):
                continue
            mask = label == value
            sums.setdefault(names[value].lower(), []).append(image[mask].reshape(-1, 3))
    return {name: np.concatenate(parts).mean(axis=0) for name, parts in sums.items()}


@pytest.fixture(scope="module")
def larger_toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("larger_toy")
    make_toy_datasets(root, num_train=40, num_test=6, image_size=48)
    return root


def test_shared_classes_look_like_their_training_class(larger_toy):
    train = mean_colours(read_pairs(larger_toy, TRAIN), class_lists(TRAIN)[0], 0)
    compared = 0
    for spec in GSNET_DATASETS[1:]:
        names = class_lists(spec)[1]
        test = mean_colours(read_pairs(larger_toy, spec), names, spec.ignore_label)
        for name in shared_classes()[spec.name]:
            if name.lower() in test and name.lower() in train:
                assert np.abs(test[name.lower()] - train[name.lower()]).max() < 20, name
                compared += 1
    assert compared >= 5


def test_test_images_are_mostly_shared_classes(larger_toy):
    for spec in GSNET_DATASETS[1:]:
        names = class_lists(spec)[1]
        shared = {names.index(n) for n in shared_classes()[spec.name]} - {spec.ignore_label}
        labels = np.stack([label for _, label in read_pairs(larger_toy, spec)])
        evaluated = labels[labels != spec.ignore_label]
        assert np.isin(evaluated, list(shared)).mean() > 0.5, spec.name
        assert not np.isin(evaluated, list(shared)).all(), spec.name  # some unshared classes


def test_deterministic_given_the_seed(tmp_path):
    kwargs = {"num_train": 2, "num_test": 1, "image_size": 24}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        make_toy_datasets(tmp_path / name, seed=seed, **kwargs)
    file = "FAST/val/images/toy_00000.png"
    assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a" / file).read_bytes() != (tmp_path / "c" / file).read_bytes()


def test_rewrites_an_earlier_toy_root(tmp_path):
    make_toy_datasets(tmp_path, num_train=3, num_test=3, image_size=24)
    make_toy_datasets(tmp_path, num_train=2, num_test=1, image_size=24)
    assert len(list((tmp_path / "LandDiscover50K/TR_Image").iterdir())) == 2
    assert len(list((tmp_path / "FLAIR/test/mask").iterdir())) == 1


def test_refuses_a_root_with_other_data(tmp_path):
    (tmp_path / "FloodNet").mkdir()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        make_toy_datasets(tmp_path, num_train=1, num_test=1, image_size=24)
    assert not (tmp_path / "LandDiscover50K").exists()


def test_default_sizes(tmp_path):
    written = make_toy_datasets(tmp_path)
    assert written == {spec.name: 64 if spec is TRAIN else 8 for spec in GSNET_DATASETS}


def test_other_benchmarks_layouts(toy_root):
    udd5 = sorted((toy_root / "UDD5/all/src").iterdir())
    assert [f.suffix for f in udd5] == [".JPG"] * 3 and Image.open(udd5[0]).format == "JPEG"
    openearthmap = toy_root / "OpenEarthMap/ann_dir/val/toy_00000.tif"
    assert Image.open(openearthmap).format == "TIFF"
    assert (toy_root / "DLRSD_split/train/D2masks/toy_00002.png").is_file()
