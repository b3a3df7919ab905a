import pytest
import torch
from detectron2.layers import ShapeSpec
from torch.nn import functional as F

from gsnet.checkpoint import load_specialist_weights
from gsnet.errors import ConfigError, InputFileError
from gsnet.modeling import specialist as specialist_module
from gsnet.modeling.specialist import TimmSpecialistEncoder, dino_positional_embedding

COST_VOLUME = ShapeSpec(channels=16, height=4, width=4, stride=16)


def _encoder(guidance=(8, 4), arch="toy", input_size=(64, 64), cost_volume=COST_VOLUME):
    torch.manual_seed(0)
    return TimmSpecialistEncoder(
        arch=arch, cost_volume_shape=cost_volume, input_size=input_size, guidance_channels=guidance
    )


def test_output_shapes():
    encoder = _encoder()
    assert encoder.grid == (8, 8)  # twice the cost-volume grid, patch 8
    out = encoder(torch.randn(2, 3, 64, 64))
    assert out["dense"].shape == (2, 16, 4, 4)
    assert out["guidance_2x"].shape == (2, 8, 8, 8)
    assert out["guidance_4x"].shape == (2, 4, 16, 16)
    for name, tensor in out.items():
        spec = encoder.output_shape()[name]
        assert (spec.channels, spec.height, spec.width) == tuple(tensor.shape[1:]), name
    assert set(_encoder(guidance=(0, 0))(torch.randn(1, 3, 64, 64))) == {"dense"}


def test_paper_specialist_keeps_the_published_layers():
    # The released checkpoint's layout: a 2x2 stride-2 dense projection, a 1x1 conv at 2x and a
    # 2x2 transposed conv at 4x (ViT-B/8 at 384: a 48 x 48 grid for the 24 x 24 cost volume).
    paper = ShapeSpec(channels=512, height=24, width=24, stride=16)
    with torch.device("meta"):
        encoder = _encoder((256, 128), "vit_base_patch8", (384, 384), paper)
    assert encoder.grid == (48, 48)
    assert encoder.dense_projection.kernel_size == (2, 2)
    first, second = encoder.guidance_projection
    assert type(first) is torch.nn.Conv2d and first.kernel_size == (1, 1)
    assert type(second) is torch.nn.ConvTranspose2d and second.stride == (2, 2)
    assert sum(p.numel() for p in encoder.vit.parameters()) == 85_807_872


def test_positional_resize_uses_dino_scale_factor():
    pos = torch.randn(1, 65, 24)  # an 8 x 8 pretraining grid; resize it to 12 x 12
    resized = dino_positional_embedding(pos, (12, 12))
    grid = pos[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    by_scale = F.interpolate(grid, scale_factor=(12.1 / 8, 12.1 / 8), mode="bicubic")
    by_size = F.interpolate(grid, size=(12, 12), mode="bicubic")
    assert resized.shape == (1, 145, 24)
    torch.testing.assert_close(resized[:, 1:], by_scale.permute(0, 2, 3, 1).reshape(1, 144, -1))
    assert not torch.allclose(by_scale, by_size)  # the recipe matters
    assert dino_positional_embedding(pos, (8, 8)) is pos


def test_timm_calls_the_positional_hook_the_paper_specialist_replaces():
    # The paper specialist replaces timm's private VisionTransformer._pos_embed (DINO's recipe):
    # this fails if timm renames it or stops calling it from forward_intermediates.
    encoder = _encoder()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        dino = encoder(images)["dense"]
        del encoder.vit._pos_embed  # timm's own resize of the 8 x 8 grid (a no-op here)
        timm_own = encoder(images)["dense"]
        encoder.vit._pos_embed = lambda x: encoder._dino_pos_embed(x) + 1.0
        shifted = encoder(images)["dense"]
    torch.testing.assert_close(dino, timm_own)  # same grid: both recipes keep the weights
    assert not torch.allclose(shifted, dino)


@pytest.mark.parametrize(
    "timm_name, kwargs",
    [
        ("vit_base_patch14_reg4_dinov2", {"embed_dim": 32, "depth": 3, "num_heads": 2}),
        ("vit_base_patch14_dinov2", {"embed_dim": 32, "depth": 3, "num_heads": 2}),
        ("vit_small_patch16_dinov3", {"embed_dim": 32, "depth": 3, "num_heads": 2}),
    ],
)
def test_dinov2_and_dinov3_specialists(monkeypatch, timm_name, kwargs):
    # Layer scale, registers and RoPE: timm's own blocks and positions, any grid ratio.
    spec = {"timm_name": timm_name, "positions": "timm", "model_kwargs": kwargs}
    monkeypatch.setitem(specialist_module.SPECIALIST_ARCHITECTURES, "tiny", spec)
    patch = 14 if "patch14" in timm_name else 16
    for ratio in (1, 2):
        encoder = _encoder(arch="tiny", input_size=(4 * ratio * patch,) * 2)
        out = encoder(torch.randn(2, 3, 4 * ratio * patch, 4 * ratio * patch))
        assert out["dense"].shape == (2, 16, 4, 4)
        assert out["guidance_4x"].shape == (2, 4, 16, 16)


def test_a_grid_that_does_not_fit_names_the_sizes_to_use():
    with pytest.raises(ConfigError, match=r"3 x 3 token grid.*use e.g. \[32, 32\] or \[64, 64\]"):
        _encoder(input_size=(24, 24))
    with pytest.raises(ConfigError, match="multiples of 8"):
        _encoder(input_size=(60, 60))
    with pytest.raises(ConfigError, match="Unknown specialist architecture 'vit_nope'"):
        _encoder(arch="vit_nope")


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


def test_loads_a_timm_state_dict(tmp_path):
    source = _encoder()
    path = tmp_path / "timm.pth"
    torch.save(source.vit.state_dict(), path)
    target = _encoder()
    torch.nn.init.zeros_(target.vit.pos_embed)
    load_specialist_weights(target, str(path))
    torch.testing.assert_close(target.vit.pos_embed, source.vit.pos_embed)


def test_missing_backbone_keys_are_an_error(tmp_path):
    state = _encoder().vit.state_dict()
    del state["norm.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(InputFileError, match=r"(?s)partial.pth for toy.*missing keys.*norm.weight"):
        load_specialist_weights(_encoder(), str(path))
    with pytest.raises(InputFileError, match=r"unexpected keys \(1\): \['extra.weight'\]"):
        load_specialist_weights(_encoder(), str(path))
