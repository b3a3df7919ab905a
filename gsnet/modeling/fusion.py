"""Cost volumes and their fusion: GSNet's query-guided feature fusion and its ablation variants.

Shapes: B images, T classes, D the joint width (512), C the cost-embedding width (128),
H x W the cost-volume grid (24 x 24). Every variant returns the cost embedding
(B, T, C, H, W).
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FUSION_TYPES", "CostVolumeFusion", "cost_volume"]

FUSION_TYPES = ("query_guided", "simple_concatenation", "fusion_query")


class FFTConvolution(torch.autograd.Function):
    """A stride-1, size-keeping 2-D convolution computed by NNPACK's FFT convolution (CPU, fp32).

    The fusion's 7x7 convolution of the (B*T, 2C, H, W) embeddings is ~5% of a training step's
    FLOPs of the paper model; oneDNN runs it at ~200 GFLOP/s on 2 CPU cores (0.74 s forward,
    0.70 s for the input gradient), NNPACK's FFT convolution 3x faster (0.23 s, 0.26 s), and it
    is closer to the exact result (max error against float64 1.3e-6, oneDNN's 3.5e-5). The
    input gradient is the same kind of convolution (of the output gradient with the flipped,
    transposed kernel); the weight and bias gradients stay with PyTorch's convolution backward.
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


def _fft_convolution_applies(x, conv: nn.Conv2d) -> bool:
    """Whether ``FFTConvolution`` computes ``conv(x)``: fp32 on CPU outside autocast and
    torch.compile (NNPACK's operator has no meta kernel to trace), stride 1, zero padding that
    keeps the size, and a kernel of 5 or more (NNPACK computes 3x3 kernels by Winograd's method
    instead, which is less accurate)."""
    kernel = conv.kernel_size
    return (
        x.device.type == "cpu"
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


def embed(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, by ``FFTConvolution`` where it applies."""
    if _fft_convolution_applies(x, conv):
        return FFTConvolution.apply(x.contiguous(), conv.weight, conv.bias, list(conv.padding))
    return conv(x)


def cost_volume(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pixel with every class: (B, D, H, W), (T, D) -> (B, T, H, W)."""
    return torch.einsum("bdhw,td->bthw", F.normalize(features, dim=1), F.normalize(text, dim=-1))


class CostVolumeFusion(nn.Module):
    """Embeds the cost volume(s) of the available streams into one cost embedding.

    - "query_guided" (GSNet, both streams): each stream's cost volume -> its own 7x7 conv ->
      sigmoid; the two are concatenated -> 7x7 conv -> sigmoid, and the generalist's embedding is
      added back (it keeps the generalist's open-vocabulary signal).
    - "simple_concatenation": normalised generalist and specialist features and the text
      embedding, concatenated per class (3D channels) -> one 7x7 conv. No sigmoid.
    - "fusion_query": the two feature maps -> 1x1 conv -> one cost volume -> 7x7 conv.
    - one stream only (single-stream ablations): its cost volume -> 7x7 conv.

    ``cost_embed`` is the first cost-volume embedding of every variant but simple_concatenation
    (the generalist's in "query_guided").
    """

    def __init__(
        self,
        *,
        fusion_type: str,
        use_generalist: bool,
        use_specialist: bool,
        feature_dim: int,
        embed_dim: int,
    ):
        """
        Args:
            fusion_type: one of FUSION_TYPES (only used when both streams are on).
            use_generalist, use_specialist: which streams produce features.
            feature_dim: D, the width of both streams' dense features and of the text.
            embed_dim: C, the width of the cost embedding.
        """
        super().__init__()
        if fusion_type not in FUSION_TYPES:
            raise ValueError(
                f"Unknown fusion type {fusion_type!r} (MODEL.SEM_SEG_HEAD.FUSION_TYPE); "
                f"choose one of {FUSION_TYPES}."
            )
        if not (use_generalist or use_specialist):
            raise ValueError(
                "Both streams are off: set MODEL.SEM_SEG_HEAD.USE_CLIP_CORR and/or USE_DINO_CORR."
            )
        both = use_generalist and use_specialist
        self.mode = fusion_type if both else "single_stream"

        def embedding(in_channels):
            return nn.Conv2d(in_channels, embed_dim, kernel_size=7, padding=3)

        if self.mode == "simple_concatenation":
            self.concat_embed = embedding(3 * feature_dim)
        else:
            self.cost_embed = embedding(1)
        if self.mode == "query_guided":
            self.specialist_embed = embedding(1)
            self.fuse = embedding(2 * embed_dim)
        if self.mode == "fusion_query":
            self.feature_fuse = nn.Conv2d(2 * feature_dim, feature_dim, kernel_size=1)

    def forward(self, generalist, specialist, text):
        """
        Args:
            generalist, specialist: (B, D, H, W) dense features, or None for a stream that is off.
            text: (T, D) text embeddings.
        Returns:
            (B, T, C, H, W) cost embedding.
        """
        features = generalist if generalist is not None else specialist
        B, _, H, W = features.shape
        T = text.shape[0]

        def embed_volume(conv, volume):
            return embed(conv, volume.reshape(B * T, 1, H, W))

        if self.mode == "query_guided":
            generalist_embed = torch.sigmoid(
                embed_volume(self.cost_embed, cost_volume(generalist, text))
            )
            specialist_embed = torch.sigmoid(
                embed_volume(self.specialist_embed, cost_volume(specialist, text))
            )
            stream_embeds = torch.cat([generalist_embed, specialist_embed], 1)
            fused = torch.sigmoid(embed(self.fuse, stream_embeds))
            out = fused + generalist_embed
        elif self.mode == "simple_concatenation":
            stacked = torch.cat(
                [
                    F.normalize(generalist, dim=1).unsqueeze(1).expand(B, T, -1, H, W),
                    F.normalize(specialist, dim=1).unsqueeze(1).expand(B, T, -1, H, W),
                    F.normalize(text, dim=-1)[None, :, :, None, None].expand(B, T, -1, H, W),
                ],
                dim=2,
            )
            out = embed(self.concat_embed, stacked.reshape(B * T, -1, H, W))
        elif self.mode == "fusion_query":
            fused_features = self.feature_fuse(torch.cat([generalist, specialist], dim=1))
            out = embed_volume(self.cost_embed, cost_volume(fused_features, text))
        else:
            out = embed_volume(self.cost_embed, cost_volume(features, text))
        return out.view(B, T, -1, H, W)
