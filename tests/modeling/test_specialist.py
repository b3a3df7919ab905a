import pytest
import torch
from torch.nn import functional as F

from gsnet.checkpoint import load_specialist_weights
from gsnet.modeling.specialist import SpecialistEncoder


def _encoder(guidance=(8, 4)):
    torch.manual_seed(0)
    return SpecialistEncoder(
        arch="toy", feature_resolution=(4, 4), out_channels=16, guidance_channels=guidance
    )


def test_output_shapes():
    encoder = _encoder()
    assert encoder.input_size == (64, 64)  # twice the cost-volume grid, patch 8
    out = encoder(torch.randn(2, 3, 64, 64))
    assert out["dense"].shape == (2, 16, 4, 4)
    assert out["guidance"][0].shape == (2, 8, 8, 8)
    assert out["guidance"][1].shape == (2, 4, 16, 16)
    assert _encoder(guidance=(0, 0))(torch.randn(1, 3, 64, 64))["guidance"] == [None, None]


def test_positional_resize_uses_dino_scale_factor():
    encoder = _encoder()
    pos = encoder.vit.pos_embed  # the toy pretraining grid is 8 x 8; resize it to 12 x 12
    encoder.grid = (12, 12)
    resized = encoder.positional_embedding()
    grid = pos[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    by_scale = F.interpolate(grid, scale_factor=(12.1 / 8, 12.1 / 8), mode="bicubic")
    by_size = F.interpolate(grid, size=(12, 12), mode="bicubic")
    assert resized.shape == (1, 145, pos.shape[-1])
    torch.testing.assert_close(resized[:, 1:], by_scale.permute(0, 2, 3, 1).reshape(1, 144, -1))
    assert not torch.allclose(by_scale, by_size)  # the recipe matters


def test_loads_dino_checkpoint_with_teacher_and_prefixes(tmp_path):
    source = _encoder()
    state = {f"module.backbone.{k}": v.clone() for k, v in source.vit.state_dict().items()}
    state["module.head.mlp.0.weight"] = torch.zeros(3)  # DINO's projection head: ignored
    path = tmp_path / "rsib.pth"
    torch.save({"teacher": state, "epoch": 3}, path)
    target = _encoder()
    torch.nn.init.zeros_(target.vit.cls_token)
    load_specialist_weights(target, str(path))
    torch.testing.assert_close(target.vit.cls_token, source.vit.cls_token)


def test_missing_backbone_keys_are_an_error(tmp_path):
    state = _encoder().vit.state_dict()
    del state["norm.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="missing keys.*norm.weight"):
        load_specialist_weights(_encoder(), str(path))
