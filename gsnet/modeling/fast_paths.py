"""The CPU speed paths of GSNet, in one place.

Each path computes what a library module computes, faster on the CPU, and applies only where it
is known to be exact (or closer to the exact result) for the module at hand; everywhere else
the library's module runs unchanged. Each has an equivalence test against the plain module
(tests/modeling/test_fast_paths.py). The measured gains are in the README ("Speed").

- ``blocks_in_place``: transformer blocks of open_clip (``ResidualAttentionBlock`` with split
  q/k/v and QuickGELU) and of timm (``vision_transformer.Block``) run in place on reused
  buffers when the call records no autograd graph (inference, a frozen encoder in training):
  the same matrix products, bit-identical results, fewer fresh allocations.
- ``conv2d_fft``: stride-1, size-keeping convolutions with kernels of 5 or more (the fusion's
  7x7 cost embeddings) by NNPACK's FFT convolution, forward and input gradient.
- ``conv_transpose``: a transposed convolution whose kernel equals its stride (the decoder's
  up-sampling) as one matrix product.
- ``OneHotBinaryCrossEntropy``: the mean one-hot binary cross-entropy of the training loss
  without one-hot targets or masked copies.
"""

import contextlib
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from .precision import autocast_enabled

__all__ = [
    "OneHotBinaryCrossEntropy",
    "blocks_in_place",
    "conv2d_fft",
    "conv_transpose",
    "fft_convolution_applies",
    "in_place_forward",
    "runs_without_autograd",
]


# ------------------------------------------------------------------ in-place encoder blocks
def runs_without_autograd(module: nn.Module, x: torch.Tensor) -> bool:
    """True when ``module`` applied to ``x`` records no autograd graph and no autocast is on,
    so it may run in place (never for meta tensors, which only carry shapes)."""
    if x.is_meta or autocast_enabled(x.device.type):
        return False
    if not torch.is_grad_enabled():
        return True
    return not x.requires_grad and not any(p.requires_grad for p in module.parameters())


def buffered_linear(buffers: dict, key: str, x, weight, bias):
    """F.linear(x, weight, bias) written into a buffer reused from block to block (no autograd).

    Each fresh large tensor costs page faults on first touch; reusing buffers keeps the
    encoders' activations resident. The product is the same addmm call as F.linear's, so the
    numbers are identical.
    """
    rows = x.numel() // x.shape[-1]
    out = buffers.get(key)
    if out is None or out.shape != (rows, weight.shape[0]) or out.dtype != x.dtype:
        out = buffers[key] = x.new_empty(rows, weight.shape[0])
    torch.addmm(bias, x.reshape(rows, -1), weight.t(), out=out)
    return out.view(*x.shape[:-1], weight.shape[0])


def _attention_in_place(buffers, x, normed, weight, bias, num_heads, out_proj):
    """x += out_proj(softmax attention of the packed q|k|v projection of ``normed``)."""
    B, L, E = x.shape
    qkv = buffered_linear(buffers, "qkv", normed, weight, bias)
    q, k, v = qkv.view(B, L, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, E)
    x.add_(buffered_linear(buffers, "proj", out, out_proj.weight, out_proj.bias))


def _open_clip_block_in_place(block, x, buffers):
    """open_clip's ResidualAttentionBlock (split q/k/v, QuickGELU), updating ``x`` in place."""
    attn, mlp = block.attn, block.mlp
    weight = torch.cat([attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight])
    _attention_in_place(
        buffers, x, block.ln_1(x), weight, attn.in_proj_bias, attn.num_heads, attn.out_proj
    )
    hidden = buffered_linear(buffers, "fc", block.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias)
    gate = buffers.get("gate")
    if gate is None or gate.shape != hidden.shape:
        gate = buffers["gate"] = torch.empty_like(hidden)
    torch.mul(hidden, 1.702, out=gate).sigmoid_()  # QuickGELU: x * sigmoid(1.702 x)
    hidden.mul_(gate)
    x.add_(buffered_linear(buffers, "out", hidden, mlp.c_proj.weight, mlp.c_proj.bias))
    return x


def _timm_block_in_place(block, x, buffers):
    """timm's vision_transformer.Block (exact GELU), updating ``x`` in place."""
    attn, mlp = block.attn, block.mlp
    _attention_in_place(
        buffers, x, block.norm1(x), attn.qkv.weight, attn.qkv.bias, attn.num_heads, attn.proj
    )
    hidden = buffered_linear(buffers, "fc1", block.norm2(x), mlp.fc1.weight, mlp.fc1.bias)
    torch.ops.aten.gelu_(hidden)
    x.add_(buffered_linear(buffers, "fc2", hidden, mlp.fc2.weight, mlp.fc2.bias))
    return x


def _is_identity(*modules):
    return all(isinstance(m, nn.Identity) for m in modules)


def _open_clip_block_is_plain(block) -> bool:
    from open_clip.transformer import QuickGELU, ResidualAttentionBlock

    from .generalist import SplitQKVAttention

    return (
        type(block) is ResidualAttentionBlock
        and isinstance(block.attn, SplitQKVAttention)
        and isinstance(block.mlp.gelu, QuickGELU)
        and _is_identity(block.ls_1, block.ls_2)
        and not hasattr(block, "ln_1_kv")
    )


def _timm_block_is_plain(block) -> bool:
    from timm.models.vision_transformer import Attention, Block

    attn, mlp = block.attn, block.mlp
    return (
        type(block) is Block
        and type(attn) is Attention
        and getattr(attn, "fused_attn", False)
        and attn.qkv.bias is not None
        and _is_identity(block.ls1, block.ls2, block.drop_path1, block.drop_path2)
        and _is_identity(attn.q_norm, attn.k_norm, attn.norm, mlp.norm)
        and type(mlp.act) is nn.GELU
        and mlp.act.approximate == "none"
        and attn.attn_drop.p == attn.proj_drop.p == mlp.drop1.p == mlp.drop2.p == 0
    )


def in_place_forward(block: nn.Module):
    """The in-place twin ``f(x, buffers)`` of a block's forward, or None where none is known
    exact for this block (other classes, layer scale, dropout, other activations, ...)."""
    if _timm_block_is_plain(block):
        return partial(_timm_block_in_place, block)
    if _open_clip_block_is_plain(block):
        return partial(_open_clip_block_in_place, block)
    return None


@contextlib.contextmanager
def blocks_in_place(blocks):
    """Within the context, each of ``blocks`` that has an in-place twin runs it whenever a call
    records no autograd graph; every other call runs the block's own forward.

    A block run in place overwrites its input and returns it: the caller must keep copies (or
    normalised versions) of the block outputs it stores, not the outputs themselves.
    """
    buffers = {}
    patched = []
    for block in blocks:
        twin = in_place_forward(block)
        if twin is None:
            continue
        plain = block.forward

        def forward(x, *args, _block=block, _plain=plain, _twin=twin, **kwargs):
            if args or kwargs or not runs_without_autograd(_block, x):
                return _plain(x, *args, **kwargs)
            return _twin(x, buffers)

        block.forward = forward
        patched.append(block)
    try:
        yield
    finally:
        for block in patched:
            del block.forward


# ------------------------------------------------------------------ FFT convolution
class FFTConvolution(torch.autograd.Function):
    """A stride-1, size-keeping 2-D convolution computed by NNPACK's FFT convolution (CPU, fp32).

    On the fusion's (B*T, C, H, W) embeddings it is faster than oneDNN on the CPU and closer to
    the exact result (figures in the README). The input gradient is the same kind of
    convolution (of the output gradient with the flipped, transposed kernel); the weight and bias
    gradients stay with PyTorch's convolution backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return torch._nnpack_spatial_convolution(x, weight, bias, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        grad_output = grad_output.contiguous()
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_x = grad_weight = grad_bias = None
        if needs_x:
            flipped = weight.flip(2, 3).transpose(0, 1).contiguous()
            grad_x = torch._nnpack_spatial_convolution(grad_output, flipped, None, ctx.padding)
        if needs_weight or needs_bias:
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_output,
                x,
                weight,
                [weight.shape[0]] if needs_bias else None,
                [1, 1],
                list(ctx.padding),
                [1, 1],
                False,
                [0, 0],
                1,
                [False, needs_weight, needs_bias],
            )
        return grad_x, grad_weight, grad_bias, None


def fft_convolution_applies(x, conv: nn.Conv2d) -> bool:
    """Whether ``FFTConvolution`` computes ``conv(x)``: fp32 on CPU outside autocast and
    torch.compile (NNPACK's operator has no meta kernel to trace), stride 1, zero padding that
    keeps the size, and a kernel of 5 or more (NNPACK computes 3x3 kernels by Winograd's method
    instead, which is less accurate)."""
    kernel = conv.kernel_size
    return (
        type(conv) is nn.Conv2d
        and x.device.type == "cpu"
        and x.dtype == conv.weight.dtype == torch.float32
        and x.dim() == 4
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and min(kernel) >= 5
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.padding == (kernel[0] // 2, kernel[1] // 2)
        and kernel[0] % 2 == 1
        and kernel[1] % 2 == 1
        and torch._nnpack_available()
    )


def conv2d_fft(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, by ``FFTConvolution`` where it applies."""
    if fft_convolution_applies(x, conv):
        return FFTConvolution.apply(x.contiguous(), conv.weight, conv.bias, list(conv.padding))
    return conv(x)


# ------------------------------------------------------------------ block transposed convolution
def _is_block_transpose(up: nn.Module) -> bool:
    return (
        type(up) is nn.ConvTranspose2d
        and up.kernel_size == up.stride
        and up.kernel_size[0] == up.kernel_size[1]
        and up.padding == (0, 0)
        and up.output_padding == (0, 0)
        and up.dilation == (1, 1)
        and up.groups == 1
    )


def conv_transpose(up: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``up(x)``; a ConvTranspose2d whose kernel equals its stride runs as one matrix product.

    Its output blocks do not overlap: out[:, :, k*i + a, k*j + b] = bias + W[:, :, a, b]^T
    x[:, :, i, j], so one (N*h*w, C_in) x (C_in, k*k*C_out) product and a reshuffle compute it
    (oneDNN's transposed convolution runs at a few GFLOP/s on the decoder's shapes).
    (N, C_in, h, w) -> channels-last (N, C_out, k*h, k*w).
    """
    if not _is_block_transpose(up):
        return up(x)
    N, C, h, w = x.shape
    k = up.stride[0]
    C_out = up.weight.shape[1]
    weight = up.weight.permute(2, 3, 1, 0).reshape(k * k * C_out, C)  # rows (a, b, C_out)
    bias = up.bias.repeat(k * k) if up.bias is not None else None
    blocks = F.linear(x.permute(0, 2, 3, 1), weight, bias).view(N, h, w, k, k, C_out)
    blocks = blocks.permute(0, 1, 3, 2, 4, 5).reshape(N, k * h, k * w, C_out)
    return blocks.permute(0, 3, 1, 2)


# ------------------------------------------------------------------ one-hot BCE
class OneHotBinaryCrossEntropy(torch.autograd.Function):
    """Mean binary cross-entropy of (B, T, H, W) logits against one-hot targets.

    Per element, BCE(x, y) = softplus(x) - y x, so the loss is
    (sum of softplus over the counted pixels' logits - sum of each labelled pixel's logit of
    its class) / (counted pixels x T), and its gradient is (sigmoid(x) - one_hot) / count on
    the counted pixels. Computed in the logits' own (B, T, H, W) layout, this replaces the
    published permute, one-hot scatter and masked copies (about 8 full-size temporaries) by two
    passes; the values agree with ``F.binary_cross_entropy_with_logits`` up to float rounding.
    A batch without counted pixels has loss 0 and no gradient (the published mean over no
    element is NaN).

    ``apply(logits, targets, valid, include_ignored)``: targets (B, H, W) class indices, valid
    (B, H, W) bool; include_ignored keeps the invalid pixels in the mean with all-zero targets.
    """

    @staticmethod
    def forward(ctx, logits, targets, valid, include_ignored):
        labels = torch.where(valid, targets, 0).unsqueeze(1)
        weight = valid.unsqueeze(1).to(logits.dtype)
        per_pixel = F.softplus(logits).sum(1, keepdim=True)
        if not include_ignored:
            per_pixel = per_pixel * weight
        counted = per_pixel.numel() if include_ignored else int(valid.sum())
        labelled = (logits.gather(1, labels) * weight).sum()
        count = max(counted, 1) * logits.shape[1]
        ctx.save_for_backward(logits, labels, weight)
        ctx.include_ignored, ctx.count = include_ignored, count
        return (per_pixel.sum() - labelled) / count

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels, weight = ctx.saved_tensors
        grad = torch.sigmoid(logits)
        if not ctx.include_ignored:
            grad.mul_(weight)
        grad.scatter_add_(1, labels, -weight)
        return grad.mul_(grad_output / ctx.count), None, None, None
