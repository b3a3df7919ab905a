"""Each fast path equals the straightforward computation it replaces (the published one).

The references below are written out plainly (concatenations, explicit padding, explicit
softmax attention, the full 77-token text context). The comparisons run in float64, where
the two only differ by rounding, and once in float32 at the published parity tolerance.
"""

import copy

import pytest
import torch
from torch.nn import functional as F

from gsnet.gsnet_model import segmentation_loss
from gsnet.modeling import fast_paths
from gsnet.modeling.aggregation import (
    ClassAggregation,
    GuidedSwinBlock,
    SpatialAggregation,
    linear_attention,
    window_partition,
    window_reverse,
)
from gsnet.modeling.decoder import GuidedUpBlock
from gsnet.modeling.encoder import DENSE
from gsnet.modeling.fast_paths import conv2d_fft, fft_convolution_applies, runs_without_autograd
from gsnet.modeling.generalist import CLIPGeneralistEncoder
from gsnet.modeling.text_queries import TextQueries


def perturb_(module, generator):
    """Random values everywhere (padding tokens and norms start constant)."""
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return module


# ------------------------------------------------------------------ class aggregation
def published_linear_attention(q, k, v, eps=1e-6):
    q, k = F.elu(q) + 1, F.elu(k) + 1
    length = v.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", k, v / length)
    normaliser = 1 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, normaliser) * length


def published_class_aggregation(layer, x, guidance):
    """Pad the class axis with the padding token, attend over all of it, drop the padding."""
    B, T, C, H, W = x.shape
    pooled = F.avg_pool2d(x.reshape(B * T, C, H, W), layer.pooling_size)
    h, w = pooled.shape[-2:]
    pad = layer.pad_len - T
    tokens = pooled.view(B, T, C, h * w).permute(0, 3, 1, 2)
    tokens = torch.cat([tokens, layer.padding_tokens.expand(B, h * w, pad, C)], dim=2)
    tokens = tokens.reshape(B * h * w, layer.pad_len, C)
    guidance = torch.cat([guidance, layer.padding_guidance.expand(B, pad, -1)], dim=1)
    guidance = guidance.repeat_interleave(h * w, dim=0)
    attention = layer.attention
    normed = layer.norm1(tokens)
    qk_input = torch.cat([normed, guidance], dim=-1)
    N, S = tokens.shape[:2]
    q = attention.q(qk_input).view(N, S, attention.num_heads, -1)
    k = attention.k(qk_input).view(N, S, attention.num_heads, -1)
    v = attention.v(normed).view(N, S, attention.num_heads, -1)
    tokens = tokens + published_linear_attention(q, k, v).reshape(N, S, C)
    tokens = tokens + layer.mlp(layer.norm2(tokens))
    tokens = tokens.view(B, h, w, S, C)[:, :, :, :T].permute(0, 3, 4, 1, 2)
    update = F.interpolate(
        tokens.reshape(B * T, C, h, w), size=(H, W), mode="bilinear", align_corners=True
    )
    return x + update.view(B, T, C, H, W)


@pytest.mark.parametrize("pooling", [(1, 1), (2, 2)])
def test_class_aggregation_padding_analytic_equals_explicit(pooling):
    generator = torch.Generator().manual_seed(0)
    layer = ClassAggregation(
        dim=16,
        guidance_dim=8,
        num_heads=2,
        attention_type="linear",
        pooling_size=pooling,
        pad_len=12,
    )
    layer = perturb_(layer.double(), generator)
    x = torch.randn(2, 3, 16, 4, 6, generator=generator, dtype=torch.float64)
    text = torch.randn(2, 3, 8, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        layer(x, text), published_class_aggregation(layer, x, text), rtol=0, atol=1e-10
    )
    layer32, x32, text32 = layer.float(), x.float(), text.float()
    torch.testing.assert_close(
        layer32(x32, text32), published_class_aggregation(layer32, x32, text32), rtol=0, atol=1e-5
    )


def test_class_aggregation_padding_gradients_equal_explicit():
    generator = torch.Generator().manual_seed(1)
    layer = ClassAggregation(
        dim=16, guidance_dim=8, num_heads=2, attention_type="linear", pooling_size=(2, 2), pad_len=9
    )
    layer = perturb_(layer.double(), generator)
    x = torch.randn(1, 4, 16, 4, 4, generator=generator, dtype=torch.float64)
    text = torch.randn(1, 4, 8, generator=generator, dtype=torch.float64)
    weights = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    (layer(x, text) * weights).sum().backward()
    fast = {name: p.grad.clone() for name, p in layer.named_parameters()}
    layer.zero_grad()
    (published_class_aggregation(layer, x, text) * weights).sum().backward()
    for name, param in layer.named_parameters():
        torch.testing.assert_close(fast[name], param.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_linear_attention_padding_term_equals_repeated_tokens():
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 5, 2, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    pad_key, pad_value = (
        torch.randn(2, 4, generator=generator, dtype=torch.float64) for _ in range(2)
    )
    count = 7
    keys = torch.cat([k, pad_key.expand(3, count, 2, 4)], dim=1)
    values = torch.cat([v, pad_value.expand(3, count, 2, 4)], dim=1)
    expected = published_linear_attention(q, keys, values)  # queries only attend
    actual = linear_attention(q, k, v, padding=(pad_key, pad_value, count))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ spatial aggregation
def published_swin_block(block, x, guidance):
    """x: (N, H, W, C); guidance: (N, H, W, G), one copy per map; explicit softmax attention."""
    N, H, W, C = x.shape
    y = block.norm1(x)
    if block.shift:
        y = torch.roll(y, shifts=(-block.shift, -block.shift), dims=(1, 2))
        guidance = torch.roll(guidance, shifts=(-block.shift, -block.shift), dims=(1, 2))
    windows = window_partition(y, block.window_size)
    qk_input = torch.cat([windows, window_partition(guidance, block.window_size)], dim=-1)
    attn = block.attn
    _, nW, L, _ = windows.shape

    def heads(t):
        return t.view(N, nW, L, attn.num_heads, -1).transpose(2, 3)

    q, k, v = heads(attn.q(qk_input)), heads(attn.k(qk_input)), heads(attn.v(windows))
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if block.attn_mask is not None:
        scores = scores + block.attn_mask.unsqueeze(1).to(scores.dtype)
    out = (scores.softmax(dim=-1) @ v).transpose(2, 3).reshape(N, nW, L, C)
    y = window_reverse(attn.proj(out), block.window_size, H, W)
    if block.shift:
        y = torch.roll(y, shifts=(block.shift, block.shift), dims=(1, 2))
    x = x + y
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_shared_guidance_equals_repeated_concatenation(shift):
    generator = torch.Generator().manual_seed(3)
    block = GuidedSwinBlock(
        dim=16, guidance_dim=8, resolution=(8, 8), num_heads=2, window_size=4, shift=shift
    )
    block = perturb_(block.double(), generator)
    B, T = 2, 3
    x = torch.randn(B * T, 8, 8, 16, generator=generator, dtype=torch.float64)
    guidance = torch.randn(B, 8, 8, 8, generator=generator, dtype=torch.float64)
    expected = published_swin_block(block, x, guidance.repeat_interleave(T, dim=0))
    torch.testing.assert_close(block(x, guidance), expected, rtol=0, atol=1e-10)


def test_spatial_aggregation_equals_repeated_guidance_path():
    generator = torch.Generator().manual_seed(4)
    layer = SpatialAggregation(
        dim=16, guidance_dim=8, resolution=(8, 8), num_heads=2, window_size=4
    )
    layer = perturb_(layer.double(), generator)
    B, T = 2, 3
    x = torch.randn(B, T, 16, 8, 8, generator=generator, dtype=torch.float64)
    guidance = torch.randn(B, 8, 8, 8, generator=generator, dtype=torch.float64)
    repeated = layer.guidance_norm(guidance.permute(0, 2, 3, 1)).repeat_interleave(T, dim=0)
    expected = x.reshape(B * T, 16, 8, 8).permute(0, 2, 3, 1)
    for block in (layer.block_1, layer.block_2):
        expected = published_swin_block(block, expected, repeated)
    expected = expected.permute(0, 3, 1, 2).reshape(B, T, 16, 8, 8)
    torch.testing.assert_close(layer(x, guidance), expected, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ decoder
def test_decoder_split_conv_equals_concatenated_conv():
    generator = torch.Generator().manual_seed(5)
    block = perturb_(GuidedUpBlock(32, 16, 8, 8).double(), generator)
    B, T = 2, 3
    x = torch.randn(B * T, 32, 5, 7, generator=generator, dtype=torch.float64)
    generalist = torch.randn(B, 8, 10, 14, generator=generator, dtype=torch.float64)
    specialist = torch.randn(B, 8, 10, 14, generator=generator, dtype=torch.float64)
    up = block.up(x)
    concatenated = torch.cat(
        [up, generalist.repeat_interleave(T, dim=0), specialist.repeat_interleave(T, dim=0)], dim=1
    )
    expected = block.conv(concatenated)
    torch.testing.assert_close(block(x, generalist, specialist), expected, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ text tower
def test_text_encoder_truncated_context_equals_full_context():
    torch.manual_seed(6)
    encoder = CLIPGeneralistEncoder(arch="toy", input_size=(64, 64))
    tokens = TextQueries().tokenize(["road", "a rather long name of some class", "tree"])
    with torch.no_grad():
        expected = encoder.clip.encode_text(tokens)  # open_clip: all 77 positions
        actual = encoder.encode_text(tokens)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ encoders without autograd
def _fast_and_plain(monkeypatch, encoder, images):
    """The encoder's outputs with its blocks in place, and with every block's own forward."""
    with torch.no_grad():
        fast = encoder(images)
        monkeypatch.setattr(fast_paths, "in_place_forward", lambda block: None)
        plain = encoder(images)
    return fast, plain


def test_specialist_in_place_blocks_equal_timm_blocks(monkeypatch):
    from detectron2.layers import ShapeSpec

    from gsnet.modeling.specialist import TimmSpecialistEncoder

    torch.manual_seed(7)
    encoder = TimmSpecialistEncoder(
        arch="toy",
        cost_volume_shape=ShapeSpec(channels=32, height=4, width=4, stride=16),
        input_size=(64, 64),
        guidance_channels=(16, 16),
    ).eval()
    assert all(fast_paths.in_place_forward(block) for block in encoder.vit.blocks)
    fast, plain = _fast_and_plain(monkeypatch, encoder, torch.randn(2, 3, 64, 64))
    assert set(fast) == set(plain) == {"dense", "guidance_2x", "guidance_4x"}
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=0, atol=0)


def test_generalist_in_place_blocks_equal_open_clip_blocks(monkeypatch):
    torch.manual_seed(8)
    encoder = CLIPGeneralistEncoder(arch="toy", input_size=(64, 64), guidance_channels=(16, 8))
    blocks = encoder.clip.visual.transformer.resblocks
    assert all(fast_paths.in_place_forward(block) for block in blocks)
    fast, plain = _fast_and_plain(monkeypatch, encoder, torch.randn(2, 3, 64, 64))
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=0, atol=0)


def test_blocks_without_an_exact_twin_run_their_own_forward():
    import timm

    # Layer scale (DINOv2) and RoPE blocks (DINOv3) have no in-place twin.
    for name in ("vit_small_patch14_dinov2", "vit_small_patch16_dinov3"):
        model = timm.create_model(name, pretrained=False, embed_dim=32, depth=1, num_heads=2)
        assert fast_paths.in_place_forward(model.blocks[0]) is None, name


def test_blocks_in_place_restores_the_blocks():
    torch.manual_seed(9)
    encoder = CLIPGeneralistEncoder(arch="toy", input_size=(64, 64))
    blocks = encoder.clip.visual.transformer.resblocks
    with fast_paths.blocks_in_place(blocks):
        assert all("forward" in vars(block) for block in blocks)
    assert not any("forward" in vars(block) for block in blocks)


def test_encoders_keep_autograd_when_parameters_train():
    torch.manual_seed(9)
    encoder = CLIPGeneralistEncoder(arch="toy", input_size=(64, 64), guidance_channels=(16, 8))
    images = torch.randn(1, 3, 64, 64)
    assert not runs_without_autograd(encoder.clip.visual.transformer.resblocks[0], images)
    encoder(images)[DENSE].sum().backward()
    assert encoder.clip.visual.transformer.resblocks[0].attn.v_proj_weight.grad is not None


# ------------------------------------------------------------------ low precision
def test_head_runs_in_fp32_under_autocast_at_inference(make_toy_cfg):
    from detectron2.modeling import build_sem_seg_head

    torch.manual_seed(10)
    from detectron2.layers import ShapeSpec

    B, D = 2, 32
    shapes = {
        "dense": ShapeSpec(channels=D, height=4, width=4),
        "guidance_2x": ShapeSpec(channels=32, height=8, width=8),
        "guidance_4x": ShapeSpec(channels=16, height=16, width=16),
    }
    head = build_sem_seg_head(make_toy_cfg(), {"generalist": shapes, "specialist": shapes})
    head.eval()
    features = {
        name: torch.randn(B, s.channels, s.height, s.width).bfloat16() for name, s in shapes.items()
    }
    text = F.normalize(torch.randn(3, D), dim=-1)
    with torch.no_grad():
        full = {name: tensor.float() for name, tensor in features.items()}
        expected = head(full, full, text)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = head(features, features, text)
            head.fp32_at_inference = False
            low = head(features, features, text)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    assert not torch.equal(low, expected)  # the bf16 head does differ


def published_segmentation_loss(logits, targets, ignore_value, include_ignored):
    """CAT-Seg's loss: channels-last logits, a scattered one-hot target, mean BCE."""
    valid = targets != ignore_value
    logits = logits.permute(0, 2, 3, 1)
    one_hot = torch.zeros_like(logits)
    one_hot[valid] = F.one_hot(targets[valid], logits.shape[-1]).to(logits.dtype)
    if include_ignored:
        return F.binary_cross_entropy_with_logits(logits, one_hot)
    return F.binary_cross_entropy_with_logits(logits[valid], one_hot[valid])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("include_ignored", [True, False])
def test_segmentation_loss_and_gradient_equal_the_one_hot_bce(include_ignored, dtype):
    generator = torch.Generator().manual_seed(11)
    ignore_value = 255
    logits = 4 * torch.randn(2, 5, 6, 7, generator=generator, dtype=dtype)
    targets = torch.randint(0, 5, (2, 6, 7), generator=generator)
    targets[torch.rand(2, 6, 7, generator=generator) < 0.3] = ignore_value
    logits[0, :, 0, 0] = torch.tensor([30.0, -30.0, 25.0, -25.0, 0.0])  # softplus' linear range
    targets[0, 0, 0] = 1
    ours = logits.clone().requires_grad_()
    reference = logits.clone().requires_grad_()
    loss = segmentation_loss(
        ours, targets, ignore_value=ignore_value, include_ignored=include_ignored
    )
    expected = published_segmentation_loss(reference, targets, ignore_value, include_ignored)
    (3 * loss).backward()
    (3 * expected).backward()
    tolerance = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {}
    torch.testing.assert_close(loss, expected, **tolerance)
    torch.testing.assert_close(ours.grad, reference.grad, **tolerance)


def test_segmentation_loss_of_a_batch_without_labelled_pixels():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    targets = torch.zeros(1, 4, 4, dtype=torch.long)
    counted = segmentation_loss(logits, targets, ignore_value=0, include_ignored=True)
    torch.testing.assert_close(counted, F.softplus(logits).mean())
    # Left out, nothing remains: the loss is 0 with no gradient (the published loss is NaN).
    loss = segmentation_loss(logits, targets, ignore_value=0, include_ignored=False)
    loss.backward()
    assert loss.item() == 0.0 and not logits.grad.any()


@pytest.mark.parametrize("in_channels", [1, 6])
def test_fft_convolution_equals_the_convolution_and_its_gradients(in_channels):
    torch.manual_seed(12)
    conv = torch.nn.Conv2d(in_channels, 4, kernel_size=7, padding=3)
    x = torch.randn(3, in_channels, 9, 11, requires_grad=True)
    assert fft_convolution_applies(x, conv)
    grad = torch.randn(3, 4, 9, 11)
    exact = copy.deepcopy(conv).double()
    x64 = x.detach().double().requires_grad_()
    expected = exact(x64)
    expected_grads = torch.autograd.grad(expected, (x64, exact.weight, exact.bias), grad.double())
    out = conv2d_fft(conv, x)
    grads = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad)
    torch.testing.assert_close(out, expected.float(), rtol=0, atol=1e-5)
    for actual, reference in zip(grads, expected_grads):
        torch.testing.assert_close(actual, reference.float(), rtol=1e-5, atol=1e-5)


def test_fft_convolution_only_where_it_applies(monkeypatch):
    x = torch.randn(2, 3, 8, 8)
    seven = torch.nn.Conv2d(3, 4, 7, padding=3)
    assert fft_convolution_applies(x, seven)
    assert not fft_convolution_applies(x, torch.nn.Conv2d(3, 4, 3, padding=1))  # Winograd
    assert not fft_convolution_applies(x, torch.nn.Conv2d(3, 4, 7, padding=2))  # shrinks
    assert not fft_convolution_applies(x, torch.nn.Conv2d(3, 4, 7, padding=3, stride=2))
    assert not fft_convolution_applies(x.double(), copy.deepcopy(seven).double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fft_convolution_applies(x, seven)
        assert conv2d_fft(seven, x).dtype == torch.bfloat16  # the autocast convolution
    # torch.compile cannot trace NNPACK's operator (no meta kernel): it gets the convolution.
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not fft_convolution_applies(x, seven)
