"""gsnet.data.checks and tools/check_datasets.py on generated trees with planted problems."""

import shutil

import numpy as np
import pytest
from PIL import Image

from gsnet.data.checks import check_dataset
from gsnet.data.toy_datasets import make_toy_datasets


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_datasets(root, num_train=4, num_test=3, image_size=24)
    return root


@pytest.fixture
def root(clean_root, tmp_path, register_root):
    """A private copy of the toy tree, registered; the default root is restored after."""
    copy = tmp_path / "root"
    shutil.copytree(clean_root, copy)
    register_root(str(copy))
    return copy


@pytest.fixture
def tool(load_tool):
    return load_tool("check_datasets")


def test_clean_tree_passes(root, tool, capsys):
    assert tool.main(["--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "FloodNet: OK; 3 images, 3 labels, 3 pairs" in out
    assert "All 5 dataset(s) OK" in out


def test_unmatched_files(root):
    (root / "FloodNet/val+test/lbl/toy_00001.png").unlink()
    shutil.copy(root / "FloodNet/val+test/img/toy_00002.jpg", root / "FloodNet/val+test/img/x.jpg")
    report = check_dataset("FloodNet")
    assert (report.num_images, report.num_labels, report.num_pairs) == (4, 2, 2)
    assert any("2 image(s) without a label: toy_00001.jpg, x.jpg" in p for p in report.problems)


def test_label_values_outside_the_classes(root):
    label = np.zeros((24, 30), dtype=np.uint8)
    label[0, 0] = 40  # Potsdam has classes 0..5 (5 = clutter, ignored)
    Image.fromarray(label).save(root / "PotsdamSplit/ann_dir/val/toy_00000.png")
    report = check_dataset("potsdam_all")
    assert len(report.problems) == 1
    assert "hold values [40]" in report.problems[0] and "toy_00000.png" in report.problems[0]


def test_ignore_label_outside_the_class_list_is_allowed(root):
    label = np.full((24, 30), 255, dtype=np.uint8)
    Image.fromarray(label).save(root / "FAST/val/semlabels/toy_00000.png")
    assert check_dataset("FAST_val").ok


def test_size_mismatch_and_colour_labels(root):
    labels = root / "FLAIR/test/mask"
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(labels / "toy_00000.png")
    Image.fromarray(np.zeros((24, 30, 3), dtype=np.uint8)).save(labels / "toy_00001.png")
    problems = "\n".join(check_dataset("FLAIR_test").problems)
    assert "1 label(s) differ in size" in problems
    assert "toy_00000.png 30x20 vs image 30x24" in problems
    assert "1 label(s) have several channels" in problems and "toy_00001.png" in problems


def test_unreadable_image(root):
    (root / "LandDiscover50K/TR_Image/toy_00003.png").write_bytes(b"not a png")
    report = check_dataset("LandDiscover_50K")
    assert any("1 pair(s) cannot be read" in p for p in report.problems)


def test_missing_dataset_prints_expected_tree(tmp_path, tool, capsys, register_root):
    # register_root restores the default registration after the tool re-registers.
    assert tool.main(["--root", str(tmp_path), "--only", "FAST_val"]) == 1
    out = capsys.readouterr().out
    assert f"image folder {tmp_path}/FAST/val/images does not exist" in out
    assert "FAST/val/semlabels/*.png (or FAST/val/semlabels/gray/*.png)" in out
    assert "FloodNet" not in out


def test_problem_makes_the_tool_fail(root, tool, capsys):
    (root / "PotsdamSplit/img_dir/val/toy_00002.png").unlink()
    assert tool.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "Problems in: potsdam_all." in out and "PotsdamSplit/ann_dir/val/*.png" in out


def test_default_is_the_paper_five_and_benchmark_selects_others(root, tool, capsys):
    assert tool.main(["--root", str(root), "--benchmark", "OVRSISBench"]) == 0
    out = capsys.readouterr().out
    assert "All 12 dataset(s) OK" in out and "VDD_all_sem_seg: OK; 3 images" in out
    assert "FloodNet" not in out
    assert tool.main(["--root", str(root), "--benchmark", "all"]) == 0
    assert "All 18 dataset(s) OK" in capsys.readouterr().out


def test_descriptor_is_checked(root, tool, capsys, tmp_path):
    descriptor = tmp_path / "mine.yaml"
    descriptor.write_text(
        f"name: mine_val\nimages: {root}/VDD/src\nlabels: {root}/VDD/gt\nimage_suffix: .JPG\n"
        "classes: classes.json\nignore_label: 255\n"
    )
    (tmp_path / "classes.json").write_text('["a", "b", "c", "d", "e", "f", "g"]')
    assert tool.main(["--descriptor", str(descriptor)]) == 0
    assert "mine_val: OK; 3 images, 3 labels, 3 pairs" in capsys.readouterr().out

    (root / "VDD/gt/toy_00001.png").unlink()
    assert tool.main(["--descriptor", str(descriptor)]) == 1
    assert "Fix the files, or the descriptor's fields." in capsys.readouterr().out


def test_bad_descriptor_is_one_line_with_status_2(tool, capsys, tmp_path, register_root):
    descriptor = tmp_path / "bad.yaml"
    descriptor.write_text("name: bad\nimages: i\nlabels: l\nclasses: [a]\nignore_label: x\n")
    with pytest.raises(SystemExit) as raised:
        tool.main(["--descriptor", str(descriptor)])
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"check_datasets.py: error: {descriptor}: field 'ignore_label': got 'x'; give a label "
        "value 0..65535 (often 255)."
    )
