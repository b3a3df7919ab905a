import os

from gsnet.config import PAPER_TEST_SETS


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
