"""tools/model_summary.py: every config of configs/ builds and runs (on the meta device)."""

import glob
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True))
BASE = os.path.join(REPO_ROOT, "configs", "Base-GSNet.yaml")


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if p != BASE], ids=lambda p: os.path.relpath(p, REPO_ROOT)
)
def test_every_config_builds_and_runs(load_tool, path):
    row = load_tool("model_summary").summarize(path)
    assert 0 < row["trainable"] < row["parameters"]


def test_paper_row_and_table(load_tool, repo_root):
    tool = load_tool("model_summary")
    row = tool.summarize(os.path.join(repo_root, "configs", "vitb_384.yaml"))
    assert (row["parameters"], row["trainable"]) == (243_988_242, 29_006_865)
    assert row["generalist"] == "ViT-B/16 @ 384" and row["fusion"] == "QueryGuidedFusion"
    assert "RSIB DINO checkpoint" in row["weights"] and "openai" in row["weights"]
    table = tool.markdown_table([row])
    assert "| 243,988,242 | 29,006,865 |" in table


def test_large_backbones_need_their_weights(load_tool, repo_root):
    tool = load_tool("model_summary")
    path = os.path.join(repo_root, "configs", "backbones", "clip_vitl14_336_dinov3_vitl16_sat.yaml")
    row = tool.summarize(path)
    assert row["generalist"] == "ViT-L/14@336px @ 336"
    assert row["specialist"] == "vit_large_patch16_dinov3.sat493m @ 384"
    assert "timm `vit_large_patch16_dinov3.sat493m` pretrained weights" in row["weights"]


def test_a_bad_config_is_a_one_line_error(load_tool, repo_root, capsys):
    tool = load_tool("model_summary")
    path = os.path.join(repo_root, "configs", "vitb_384.yaml")
    with pytest.raises(SystemExit) as exit_info:
        tool.main([path, "--opts", "MODEL.SEM_SEG_HEAD.DINO_ARCH", "vit_nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Unknown specialist architecture 'vit_nope'" in err
    assert len(err.strip().splitlines()) == 1
