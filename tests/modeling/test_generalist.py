import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gsnet.errors import ConfigError
from gsnet.modeling.generalist import CLIPGeneralistEncoder, SplitQKVAttention


def test_split_qkv_equals_packed_attention():
    torch.manual_seed(0)
    packed = nn.MultiheadAttention(32, 4, batch_first=True)
    nn.init.normal_(packed.in_proj_bias)
    split = SplitQKVAttention.from_packed(packed)
    x = torch.randn(2, 7, 32)
    mask = torch.full((7, 7), float("-inf")).triu(1)
    expected, _ = packed(x, x, x, need_weights=False, attn_mask=mask)
    actual, _ = split(x, x, x, need_weights=False, attn_mask=mask)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)
    names = {name for name, _ in split.named_parameters()}
    assert {"q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"} <= names


def _encoder():
    torch.manual_seed(0)
    return CLIPGeneralistEncoder(arch="toy", input_size=(64, 64), guidance_channels=(8, 4))


def test_output_shapes_and_guidance_blocks():
    encoder = _encoder()
    assert encoder.input_size == (64, 64)
    assert encoder.guidance_blocks == (1, 3)  # a third and two thirds of 6 blocks
    out = encoder(torch.randn(2, 3, 64, 64))
    assert out["dense"].shape == (2, encoder.embed_dim, 4, 4)
    assert out["guidance_2x"].shape == (2, 8, 8, 8)
    assert out["guidance_4x"].shape == (2, 4, 16, 16)
    shapes = encoder.output_shape()
    assert set(shapes) == set(out)
    for name, tensor in out.items():
        spec = shapes[name]
        assert (spec.channels, spec.height, spec.width) == tuple(tensor.shape[1:]), name
    assert (shapes["dense"].stride, shapes["guidance_2x"].stride) == (16, 8)


def test_guidance_is_left_out_when_its_width_is_zero():
    torch.manual_seed(0)
    encoder = CLIPGeneralistEncoder(arch="toy", input_size=(64, 64))
    assert set(encoder.output_shape()) == {"dense"}
    assert set(encoder(torch.randn(1, 3, 64, 64))) == {"dense"}


@pytest.mark.parametrize(
    "arch, input_size, grid, width",
    [
        ("ViT-B/16", (384, 384), (24, 24), 512),  # the paper
        ("ViT-L/14@336px", (336, 336), (24, 24), 768),  # CAT-Seg-L
        ("ViT-B-32", (384, 384), (12, 12), 512),  # RemoteCLIP / GeoRSCLIP / SkyCLIP B/32
        ("ViT-L-14", (336, 336), (24, 24), 768),
    ],
)
def test_open_clip_models_by_name(arch, input_size, grid, width):
    with torch.device("meta"):
        encoder = CLIPGeneralistEncoder(arch=arch, input_size=input_size, guidance_channels=(8, 4))
        out = encoder(torch.empty(1, 3, *input_size))
    assert out["dense"].shape == (1, width, *grid)
    assert out["guidance_4x"].shape == (1, 4, 4 * grid[0], 4 * grid[1])
    assert encoder.output_shape()["dense"].height == grid[0]


def test_input_size_follows_the_published_feature_resolution():
    with torch.device("meta"):
        encoder = CLIPGeneralistEncoder(arch="ViT-B/16", feature_resolution=(24, 24))
        native = CLIPGeneralistEncoder(arch="ViT-B/16")
    assert encoder.input_size == (384, 384)
    assert native.input_size == (224, 224)  # the architecture's own size


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"arch": "ViT-X/99"}, "Unknown CLIP architecture 'ViT-X/99'.*ViT-B-32"),
        ({"arch": "ViT-B/16", "input_size": (380, 384)}, "multiples of 16 .e.g. 368 or 384"),
        (
            {"arch": "ViT-B/16", "input_size": (336, 336), "feature_resolution": (24, 24)},
            r"FEATURE_RESOLUTION=\[24, 24\] and GENERALIST_INPUT_SIZE=\[336, 336\] disagree",
        ),
        ({"arch": "RN50"}, "plain ViT image tower"),
    ],
)
def test_bad_generalist_settings_are_clear_errors(kwargs, message):
    with torch.device("meta"), pytest.raises(ConfigError, match=message):
        CLIPGeneralistEncoder(**kwargs)


def test_dense_last_block_matches_direct_computation():
    encoder = _encoder()
    block = encoder.clip.visual.transformer.resblocks[-1]
    x = torch.randn(2, 17, encoder.width)
    attn = block.attn
    e = encoder.width
    v = F.linear(block.ln_1(x), attn.v_proj_weight, attn.in_proj_bias[2 * e :])
    y = F.linear(v, attn.out_proj.weight, attn.out_proj.bias) + x[:, :1]
    expected = y + block.mlp(block.ln_2(y))
    torch.testing.assert_close(encoder._dense_block(block, x), expected)


def test_positional_embedding_resize_is_plain_bicubic():
    encoder = _encoder()
    pos = encoder.clip.visual.positional_embedding  # 4 x 4 pretraining grid (+ CLS)
    resized = encoder.positional_embedding((6, 6))
    grid = pos[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    assert resized.shape == (37, pos.shape[1])
    torch.testing.assert_close(resized[0], pos[0])
    torch.testing.assert_close(resized[1:], expected.flatten(2)[0].T)
    assert encoder.positional_embedding((4, 4)) is pos


def test_dense_query_weight_gets_zero_gradient():
    # As in the published code: the dense block's query weight gets a zero (not missing)
    # gradient, so AdamW still applies its weight decay.
    encoder = _encoder()
    encoder(torch.randn(1, 3, 64, 64))["dense"].sum().backward()
    q_grad = encoder.clip.visual.transformer.resblocks[-1].attn.q_proj_weight.grad
    assert q_grad is not None and torch.count_nonzero(q_grad) == 0


def test_random_toy_text_tower_keeps_class_names_apart(monkeypatch):
    # With open_clip's plain random init the names' embeddings are nearly parallel (the end
    # token averages mostly the template), which stalls toy training; the toy's sharper random
    # attention spreads them.
    from gsnet.data.class_names import CLASS_JSON_DIR, load_class_names
    from gsnet.modeling import generalist
    from gsnet.modeling.text_queries import TextQueries

    names = load_class_names(CLASS_JSON_DIR / "landdiscover.json")

    def mean_cosine(scale):
        spec = dict(generalist.CLIP_ARCHITECTURES["toy"], random_text_attention_scale=scale)
        monkeypatch.setitem(generalist.CLIP_ARCHITECTURES, "toy", spec)
        torch.manual_seed(0)
        encoder = CLIPGeneralistEncoder(arch="toy", input_size=(64, 64))
        with torch.no_grad():
            text = TextQueries()(names, encoder.encode_text, device="cpu", use_cache=False)
        cosine = text @ text.T
        return cosine[~torch.eye(len(names), dtype=torch.bool)].mean().item()

    assert generalist.CLIP_ARCHITECTURES["toy"]["random_text_attention_scale"] == 8.0
    assert mean_cosine(8.0) < 0.35
    assert mean_cosine(1.0) > 0.6
