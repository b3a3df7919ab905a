import argparse
import fractions
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor

from gsnet.checkpoint import (
    GSNetCheckpointer,
    UnsafeCheckpointError,
    convert_released_state_dict,
    is_released_layout,
    load_clip_weights,
    load_specialist_weights,
    load_weight_file,
)

# The published module tree, written out independently of the rename table under test:
# this project's key prefix -> the published code's key prefix.
HEAD = "sem_seg_head.predictor.transformer."
TO_PUBLISHED = [
    (r"^generalist\.clip\.", "sem_seg_head.predictor.clip_model."),
    (r"^generalist\.guidance_upsample\.0\.", "upsample1."),
    (r"^generalist\.guidance_upsample\.1\.", "upsample2."),
    (r"^specialist\.vit\.", "dino_model."),
    (r"^specialist\.dense_projection\.", "dino_down_sample."),
    (r"^specialist\.guidance_projection\.0\.", "dino_decod_proj1."),
    (r"^specialist\.guidance_projection\.1\.", "dino_decod_proj2."),
    (r"^sem_seg_head\.fusion\.cost_embed\.", HEAD + "conv1."),
    (r"^sem_seg_head\.fusion\.specialist_embed\.", HEAD + "conv2."),
    (r"^sem_seg_head\.fusion\.fuse\.", HEAD + "fusion_corr."),
    (r"^sem_seg_head\.appearance_guidance\.", HEAD + "guidance_projection."),
    (r"^sem_seg_head\.text_guidance\.", HEAD + "text_guidance_projection."),
    (r"^sem_seg_head\.layers\.(\d+)\.spatial\.", HEAD + r"layers.\1.swin_block."),
    (
        r"^sem_seg_head\.layers\.(\d+)\.classes\.attention\.",
        HEAD + r"layers.\1.attention.attention.",
    ),
    (r"^sem_seg_head\.layers\.(\d+)\.classes\.mlp\.", HEAD + r"layers.\1.attention.MLP."),
    (r"^sem_seg_head\.layers\.(\d+)\.classes\.", HEAD + r"layers.\1.attention."),
    (r"^sem_seg_head\.decoder\.generalist_guidance\.", HEAD + "CLIP_decoder_guidance_projection."),
    (r"^sem_seg_head\.decoder\.specialist_guidance\.", HEAD + "DINO_decoder_guidance_projection."),
    (r"^sem_seg_head\.decoder\.up_blocks\.0\.conv\.", HEAD + "Fusiondecoder1.conv.double_conv."),
    (r"^sem_seg_head\.decoder\.up_blocks\.1\.conv\.", HEAD + "Fusiondecoder2.conv.double_conv."),
    (r"^sem_seg_head\.decoder\.up_blocks\.0\.", HEAD + "Fusiondecoder1."),
    (r"^sem_seg_head\.decoder\.up_blocks\.1\.", HEAD + "Fusiondecoder2."),
    (r"^sem_seg_head\.decoder\.head\.", HEAD + "head."),
]


def to_published_layout(model):
    state = {}
    for key, value in model.state_dict().items():
        for pattern, replacement in TO_PUBLISHED:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                state[new_key] = value.clone()
                break
        else:
            raise AssertionError(f"no published name for {key}")
    # The published checkpoint also stores the shifted-window masks as buffers.
    for layer in range(len(model.sem_seg_head.layers)):
        state[HEAD + f"layers.{layer}.swin_block.block_2.attn_mask"] = torch.zeros(1)
    return state


def test_released_checkpoint_loads_unchanged(tmp_path, make_toy_model):
    source = make_toy_model(seed=3)
    released = to_published_layout(source)
    assert is_released_layout(released)
    path = tmp_path / "released.pth"
    torch.save({"model": released, "iteration": 29999}, path)
    target = make_toy_model(seed=4)
    GSNetCheckpointer(target).load(str(path))
    for name, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[name]), name


def test_conversion_tool_round_trip(tmp_path, make_toy_model, repo_root):
    source = make_toy_model(seed=5)
    released, converted = tmp_path / "released.pth", tmp_path / "converted.pth"
    torch.save({"model": to_published_layout(source)}, released)
    tool = [sys.executable, f"{repo_root}/tools/convert_checkpoint.py", str(released)]
    done = subprocess.run([*tool, str(converted)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = torch.load(converted, weights_only=False)["model"]
    assert not is_released_layout(state) and set(state) == set(source.state_dict())
    again = subprocess.run([*tool, str(converted)], capture_output=True, text=True)
    assert again.returncode == 2
    expected = f"convert_checkpoint.py: error: {converted} exists; pass --overwrite to replace it."
    assert again.stderr.strip().endswith(expected)
    (tmp_path / "a_file").write_text("")
    unwritable = tmp_path / "a_file" / "converted.pth"
    failed = subprocess.run([*tool, str(unwritable)], capture_output=True, text=True)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert f"convert_checkpoint.py: error: Cannot write {unwritable}: " in failed.stderr


def test_unknown_published_keys_are_reported():
    with pytest.raises(ValueError, match="no rename rule"):
        convert_released_state_dict({"dino_model.cls_token": 0, "upsample9.weight": 0})


def test_clip_weights_from_an_open_clip_state_dict(tmp_path, make_toy_model):
    # An open_clip state dict (packed attention) loads into the split q/k/v model, with the
    # published fp16 rounding of the projection weights.
    import open_clip

    from gsnet.modeling.generalist import CLIP_ARCHITECTURES

    spec = CLIP_ARCHITECTURES["toy"]["model_kwargs"]
    torch.manual_seed(0)
    reference = open_clip.model.CLIP(**spec, quick_gelu=True)
    path = tmp_path / "clip.pt"
    torch.save(reference.state_dict(), path)
    model = make_toy_model()
    load_clip_weights(model.generalist, str(path))
    packed = reference.visual.transformer.resblocks[0].attn.in_proj_weight
    split = model.generalist.clip.visual.transformer.resblocks[0].attn
    width = spec["vision_cfg"]["width"]
    torch.testing.assert_close(split.k_proj_weight, packed[width : 2 * width].half().float())
    torch.testing.assert_close(
        model.generalist.clip.visual.class_embedding, reference.visual.class_embedding
    )  # not rounded


# ---------------------------------------------------------------------- every loader
def _released_file(tmp_path, source):
    """A released-layout checkpoint with the plain objects such files hold next to tensors."""
    path = tmp_path / "released.pth"
    checkpoint = {
        "model": to_published_layout(source),
        "iteration": np.int64(29999),
        "metrics": {"mIoU": np.float64(41.5), "per_class": np.zeros(3, np.float32)},
        "args": argparse.Namespace(config_file="configs/vitb_384.yaml"),
    }
    torch.save(checkpoint, path)
    return path


def _load_state_dict(path, model, cfg):
    state = torch.load(path, weights_only=True)["model"]
    model.load_state_dict(state)
    return model


def _detection_checkpointer(path, model, cfg):
    DetectionCheckpointer(model).load(str(path))
    return model


def _default_predictor(path, model, cfg):
    cfg.MODEL.WEIGHTS = str(path)
    return DefaultPredictor(cfg).model


def _gsnet_checkpointer(path, model, cfg):
    GSNetCheckpointer(model).load(str(path))
    return model


@pytest.mark.parametrize(
    "load",
    [_load_state_dict, _detection_checkpointer, _default_predictor, _gsnet_checkpointer],
    ids=["load_state_dict", "DetectionCheckpointer", "DefaultPredictor", "GSNetCheckpointer"],
)
def test_released_checkpoint_loads_through_every_loader(
    tmp_path, make_toy_model, make_toy_cfg, load
):
    source = make_toy_model(seed=3)
    path = _released_file(tmp_path, source)
    loaded = load(path, make_toy_model(seed=4), make_toy_cfg())
    expected = source.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_objects_beyond_the_allow_list_need_the_opt_in(tmp_path, make_toy_model):
    model = make_toy_model()
    path = tmp_path / "odd.pth"
    torch.save({"model": model.state_dict(), "ratio": fractions.Fraction(1, 3)}, path)
    refused = r"fractions\.Fraction.*ALLOW_UNSAFE_UNPICKLING"
    with pytest.raises(UnsafeCheckpointError, match=refused):
        GSNetCheckpointer(model).load(str(path))
    with pytest.raises(UnsafeCheckpointError, match="DINO_WEIGHTS"):
        load_weight_file(path, what="Specialist weight file (MODEL.SEM_SEG_HEAD.DINO_WEIGHTS)")
    loaded = load_weight_file(path, what="Checkpoint", allow_unsafe_unpickling=True)
    assert loaded["ratio"] == fractions.Fraction(1, 3)
    GSNetCheckpointer(model, allow_unsafe_unpickling=True).load(str(path))


def test_specialist_file_with_numpy_and_namespace_loads_safely(tmp_path, make_toy_model):
    model = make_toy_model()
    path = tmp_path / "rsib.pth"
    teacher = {f"backbone.{k}": v for k, v in model.specialist.vit.state_dict().items()}
    torch.save({"teacher": teacher, "epoch": np.int64(100), "args": argparse.Namespace()}, path)
    load_specialist_weights(make_toy_model(seed=1).specialist, str(path))
