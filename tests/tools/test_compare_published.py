"""tools/compare_published.py without the published code: its argument errors, the random
weight files it gives the published loaders, and how it compares and reports outputs."""

import math
import os
import subprocess
import sys

import pytest
import timm
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

TINY_CLIP = {
    "vision_width": 64,
    "vision_layers": 2,
    "patch_size": 16,
    "grid": 2,
    "embed_dim": 16,
    "text_width": 32,
    "text_layers": 2,
    "context_length": 77,
    "vocab_size": 100,
}
TINY_DINO = {"width": 32, "depth": 2, "patch_size": 8, "grid": 2}


@pytest.fixture
def tool(load_tool):
    return load_tool("compare_published")


def shapes(state):
    return {key: tuple(value.shape) for key, value in state.items()}


def test_a_folder_that_is_no_checkout_is_refused_naming_what_is_missing(tool, tmp_path, capsys):
    (tmp_path / "gs_net").mkdir()
    (tmp_path / "gs_net" / "GSNet.py").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--published", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("compare_published.py: error: ")
    assert "not a checkout of the published GSNet code" in message
    assert "configs/vitb_384.yaml" in message and "gs_net/config.py" in message
    assert "gs_net/GSNet.py" not in message  # present
    assert "\n" not in message


def test_a_missing_folder_is_refused(tool, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--published", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "no such folder" in capsys.readouterr().err


def test_an_output_in_a_missing_folder_is_refused_before_any_work(tool, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--published", str(tmp_path), "--output", str(tmp_path / "no" / "r.json")])
    assert exit_info.value.code == 2
    assert "its folder does not exist" in capsys.readouterr().err


def test_random_clip_file_has_openai_layout_and_loads_like_openai_files(tool, tmp_path):
    state = tool.openai_clip_state_dict(torch.Generator().manual_seed(0), TINY_CLIP)
    reference = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=100, width=32, heads=1, layers=2),
        quick_gelu=True,
    )  # open_clip keeps OpenAI's key names
    integers = {"input_resolution", "context_length", "vocab_size"}
    assert shapes({k: v for k, v in state.items() if k not in integers}) == shapes(
        reference.state_dict()
    )

    path = tmp_path / "clip.pt"
    tool.write_torchscript_state(state, path)
    loaded = torch.jit.load(str(path), map_location="cpu")
    assert loaded.input_resolution.item() == 32  # what the published clip.load reads
    assert set(loaded.state_dict()) == set(state)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_random_dino_state_has_the_vit_layout(tool):
    state = tool.dino_state_dict(torch.Generator().manual_seed(0), TINY_DINO)
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0, qkv_bias=True
    )
    assert shapes(state) == shapes(reference.state_dict())


def test_random_weights_leave_no_default_value(tool):
    """Norm scales away from 1, biases, tokens and embeddings away from 0: a norm or padding
    token handled wrongly changes the outputs."""
    generator = torch.Generator().manual_seed(0)
    state = {
        **tool.openai_clip_state_dict(generator, TINY_CLIP),
        **tool.dino_state_dict(generator, TINY_DINO),
    }
    norm_scales = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 1]
    assert norm_scales and all((v - 1).abs().min() > 0 and (v - 1).std() > 0.1 for v in norm_scales)
    others = [v for k, v in state.items() if not k.endswith("weight") and v.is_floating_point()]
    assert all(v.abs().max() > 0 for v in others)
    padding = tool.random_tensor("padding_tokens", (1, 1, 128), generator)
    assert padding.std() > 0.05
    matrix = tool.random_tensor("mlp.fc1.weight", (512, 256), generator)
    assert matrix.std() == pytest.approx(256**-0.5, rel=0.05)  # fan-in scaling


def test_inputs_are_fixed_by_the_seed(tool):
    first, again, other = tool.make_inputs(0), tool.make_inputs(0), tool.make_inputs(1)
    assert torch.equal(first["sliding"][0]["image"], again["sliding"][0]["image"])
    assert not torch.equal(first["sliding"][0]["image"], other["sliding"][0]["image"])
    assert [b[0]["image"].shape[1:] for b in first["plain"]] == list(tool.PLAIN_IMAGE_SIZES)
    labels = torch.stack([x["sem_seg"] for x in first["train"]])
    assert labels.dtype == torch.int64 and labels.max() < tool.TRAIN_NUM_CLASSES
    assert (labels == 0).any()  # ignored pixels (IGNORE_VALUE 0) are part of the batch


def test_parameters_are_matched_by_value_whatever_their_names(tool):
    a, b, c = torch.randn(3, 4), torch.randn(3, 4), torch.randn(5)
    published = {"clip.q_proj_weight": a, "clip.v_proj_weight": b, "head.weight": c}
    project = {"generalist.v": b.clone(), "generalist.q": a.clone(), "decoder.w": torch.randn(5)}
    pairs, unmatched_published, unmatched_project = tool.match_parameters(published, project)
    assert sorted(pairs) == [
        ("clip.q_proj_weight", "generalist.q"),
        ("clip.v_proj_weight", "generalist.v"),
    ]
    assert unmatched_published == ["head.weight"] and unmatched_project == ["decoder.w"]


def fake_outputs(tool, *, logits, scores, loss, gradient, parameters=(10, 4)):
    """What a run of either model returns, with tiny tensors."""
    total, trainable = parameters
    result = {f"plain_{i}": (logits, scores) for i in range(len(tool.PLAIN_IMAGE_SIZES))}
    result["sliding"] = (logits, scores)
    result["loss"] = loss
    result["gradients"] = {"w": gradient, "q": torch.zeros(2)}
    result["parameters"] = {"total": total, "trainable": trainable}
    return result


def test_comparison_rows_and_table(tool):
    logits, scores, gradient = torch.randn(1, 5, 4, 4), torch.rand(5, 8, 8), torch.randn(3)
    published = fake_outputs(tool, logits=logits, scores=scores, loss=0.5, gradient=gradient)
    project = fake_outputs(
        tool,
        logits=logits + 5e-5,
        scores=scores + 2e-4,
        loss=0.5 * (1 + 1e-7),
        gradient=gradient * 1.01,
    )
    pairs = [("w", "w"), ("q", "q")]  # "q": a zero gradient on both sides
    gradients = tool.gradient_differences(published["gradients"], project["gradients"], pairs)
    assert gradients["tensors"]["worst"] == pytest.approx(0.01, rel=1e-4)
    rows = {row["check"]: row for row in tool.compare(published, project, gradients, [])}

    logit_rows = [row for name, row in rows.items() if "head logits" in name]
    assert len(logit_rows) == 3 and all(row["ok"] for row in logit_rows)
    assert logit_rows[0]["difference"] == pytest.approx(5e-5, rel=1e-2)
    score_rows = [row for name, row in rows.items() if ": scores at" in name]
    assert len(score_rows) == 3 and not any(row["ok"] for row in score_rows)  # 2e-4 > 1e-4
    loss = rows["training loss, batch of 2"]
    assert loss["ok"] and loss["relative"] and loss["difference"] == pytest.approx(1e-7, rel=1e-3)
    norms = rows["gradients of the 2 trainable tensors: norms (worst)"]
    assert not norms["ok"] and norms["difference"] == pytest.approx(0.01, rel=1e-4)
    assert rows["parameter count, total"]["ok"] and rows["parameter count, trainable"]["ok"]

    table = tool.format_table(list(rows.values()))
    lines = table.splitlines()
    assert lines[0] == "| check | max. abs. difference (or relative) | tolerance | ok |"
    assert len(lines) == 2 + len(rows)
    assert "| training loss, batch of 2 | relative 1.0e-07 | 1.0e-06 | yes |" in lines
    assert "| parameter count, total | 0 | 0 | yes |" in lines
    assert sum("**NO**" in line for line in lines) == 4  # the three score rows and the norms


def test_unmatched_tensors_and_different_shapes_fail(tool):
    logits, scores, gradient = torch.randn(1, 5, 4, 4), torch.rand(5, 8, 8), torch.randn(3)
    published = fake_outputs(tool, logits=logits, scores=scores, loss=0.5, gradient=gradient)
    project = fake_outputs(
        tool, logits=logits[:, :4], scores=scores, loss=0.5, gradient=gradient, parameters=(10, 3)
    )
    gradients = tool.gradient_differences(published["gradients"], project["gradients"], [])
    rows = {row["check"]: row for row in tool.compare(published, project, gradients, ["q"])}
    assert math.isinf(
        rows["plain inference, 448 x 576 image: head logits (1 x 5 x 4 x 4)"]["difference"]
    )
    assert not rows["gradients of the 2 trainable tensors: norms (worst)"]["ok"]
    assert not rows["parameter count, trainable"]["ok"]


def test_gradients_far_below_the_largest_are_compared_against_a_noise_floor(tool):
    """An analytically zero gradient (rounding noise on both sides) does not fail the check;
    a real difference in a small gradient above the floor does."""
    large = torch.ones(4)
    published = {"large": large, "noise": torch.full((4,), 1e-12), "small": torch.full((4,), 1e-3)}
    project = {"large": large, "noise": torch.full((4,), 4e-12), "small": torch.full((4,), 1e-3)}
    pairs = [(name, name) for name in published]
    worst = tool.gradient_differences(published, project, pairs)
    floor = tool.GRADIENT_NOISE_FLOOR * 2  # of the largest gradient norm, ||large|| = 2
    assert worst["norms"]["worst"] == pytest.approx(6e-12 / floor, rel=1e-3)
    project["small"] = torch.full((4,), 1.1e-3)
    worst = tool.gradient_differences(published, project, pairs)
    assert worst["norms"] == {"worst": pytest.approx(0.1, rel=1e-3), "tensor": "small"}


def test_a_package_the_published_code_needs_is_named_when_missing(tool, tmp_path, repo_root):
    for name in tool.PUBLISHED_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "gs_net" / "__init__.py").write_text("import a_package_nobody_installed\n")
    # A process of its own: the published model's process imports the tool by its file.
    tool_file = os.path.join(repo_root, "tools", "compare_published.py")
    completed = subprocess.run(
        [sys.executable, tool_file, "--published", tmp_path],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": repo_root},
        timeout=300,
    )
    assert completed.returncode == 2
    message = completed.stderr.strip().splitlines()[-1]
    assert message.startswith("compare_published.py: error: the published code")
    assert "imports 'a_package_nobody_installed', which is not installed" in message
    assert str(tmp_path / "requirements.txt") in message
