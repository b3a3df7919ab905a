import os

import pytest
from detectron2.data import DatasetCatalog

from gsnet.config import OVRSISBENCH_TEST_SETS, PAPER_TEST_SETS


def parse(train_net, repo_root, tmp_path, *argv):
    parser = train_net.argument_parser()
    config = os.path.join(repo_root, "configs", "toy.yaml")
    args = parser.parse_args(["--config-file", config, *argv, "OUTPUT_DIR", str(tmp_path)])
    return train_net.setup(args)


def test_paper_evaluation_flag_sets_the_protocol_before_the_overrides(
    load_tool, repo_root, tmp_path
):
    train_net = load_tool("train_net")
    cfg = parse(train_net, repo_root, tmp_path / "a", "--eval-only", "--paper-evaluation")
    assert tuple(cfg.DATASETS.TEST) == PAPER_TEST_SETS
    assert cfg.TEST.SLIDING_WINDOW and list(cfg.MODEL.SEM_SEG_HEAD.POOLING_SIZES) == [1, 1]

    cfg = parse(
        train_net, repo_root, tmp_path / "b", "--paper-evaluation",
        "DATASETS.TEST", "('FloodNet',)",
    )  # fmt: skip
    assert tuple(cfg.DATASETS.TEST) == ("FloodNet",)  # the command line wins

    cfg = parse(train_net, repo_root, tmp_path / "c")
    assert not cfg.TEST.SLIDING_WINDOW


def test_suite_flag_sets_a_named_suite_or_a_list(load_tool, repo_root, tmp_path):
    train_net = load_tool("train_net")
    cfg = parse(train_net, repo_root, tmp_path / "a", "--eval-only", "--suite", "ovrsisbench")
    assert tuple(cfg.DATASETS.TEST) == OVRSISBENCH_TEST_SETS
    assert not cfg.TEST.SLIDING_WINDOW and list(cfg.MODEL.SEM_SEG_HEAD.POOLING_SIZES) == [1, 1]

    cfg = parse(train_net, repo_root, tmp_path / "b", "--suite", "FloodNet, openearthmap_val")
    assert tuple(cfg.DATASETS.TEST) == ("FloodNet", "openearthmap_val")
    assert cfg.TEST.SLIDING_WINDOW  # a list is evaluated with the paper's protocol

    with pytest.raises(SystemExit):  # one protocol at a time
        parse(train_net, repo_root, tmp_path / "c", "--paper-evaluation", "--suite", "paper")


def test_descriptors_of_the_config_are_registered_at_setup(
    load_tool, repo_root, tmp_path, toy_root
):
    descriptor = tmp_path / "own.yaml"
    descriptor.write_text(
        f"name: own_setup_val\nimages: {toy_root}/VDD/src\nlabels: {toy_root}/VDD/gt\n"
        "image_suffix: .JPG\nclasses: [a, b, c, d, e, f, g]\n"
    )
    train_net = load_tool("train_net")
    parse(
        train_net, repo_root, tmp_path / "out", "--suite", "own_setup_val",
        "DATASETS.DESCRIPTORS", f"('{descriptor}',)",
    )  # fmt: skip
    assert len(DatasetCatalog.get("own_setup_val")) == 3
