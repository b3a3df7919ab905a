"""The Residual Information Preservation Decoder (RIPD).

Shapes: B images, T classes, C the cost-embedding width (128), H x W the cost-volume grid.
Two up-sampling blocks double the grid each time; at each, the generalist's and the specialist's
guidance maps (projected, shared by all classes) are concatenated to the class's features.

The per-class maps run in channels-last memory (oneDNN's convolutions are up to 2x faster so
with these narrow widths on CPU); the (B*T, C, H, W) shapes are unchanged.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RIPDecoder"]


class DoubleConv(nn.Sequential):
    """(3x3 conv without bias -> GroupNorm(C/16 groups) -> ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(out_channels // 16, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(out_channels // 16, out_channels),
            nn.ReLU(inplace=True),
        )


def channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def conv2d(x, conv: nn.Conv2d, weight=None):
    """``conv`` (or ``weight`` with its geometry) applied in channels-last memory."""
    weight = conv.weight if weight is None else weight
    return F.conv2d(channels_last(x), channels_last(weight), conv.bias, conv.stride, conv.padding)


def conv_transpose_blocks(x, up: nn.ConvTranspose2d):
    """A ConvTranspose2d whose kernel equals its stride, as one matrix product.

    Its output blocks do not overlap: out[:, :, k*i + a, k*j + b] = bias + W[:, :, a, b]^T
    x[:, :, i, j], so one (N*h*w, C_in) x (C_in, k*k*C_out) product and a reshuffle compute it
    (oneDNN's transposed convolution runs at a few GFLOP/s on these shapes).
    (N, C_in, h, w) -> channels-last (N, C_out, k*h, k*w).
    """
    N, C, h, w = x.shape
    k = up.stride[0]
    C_out = up.weight.shape[1]
    weight = up.weight.permute(2, 3, 1, 0).reshape(k * k * C_out, C)  # rows (a, b, C_out)
    bias = up.bias.repeat(k * k) if up.bias is not None else None
    blocks = F.linear(x.permute(0, 2, 3, 1), weight, bias).view(N, h, w, k, k, C_out)
    blocks = blocks.permute(0, 1, 3, 2, 4, 5).reshape(N, k * h, k * w, C_out)
    return blocks.permute(0, 3, 1, 2)


def _is_block_transpose(up: nn.ConvTranspose2d):
    return (
        up.kernel_size == up.stride
        and up.kernel_size[0] == up.kernel_size[1]
        and up.padding == (0, 0)
        and up.output_padding == (0, 0)
        and up.dilation == (1, 1)
        and up.groups == 1
    )


class GuidedUpBlock(nn.Module):
    """x2 transposed conv, concatenate [generalist guidance, specialist guidance], DoubleConv.

    The transposed conv outputs ``in_channels - generalist_channels`` so that, with the
    generalist's guidance appended, the width is back to ``in_channels`` (the published layout).
    """

    def __init__(self, in_channels, out_channels, generalist_channels, specialist_channels):
        super().__init__()
        self.up = nn.ConvTranspose2d(
            in_channels, in_channels - generalist_channels, kernel_size=2, stride=2
        )
        self.conv = DoubleConv(in_channels + specialist_channels, out_channels)

    def forward(self, x, generalist_guidance, specialist_guidance):
        """x: (B*T, C_in, h, w); guidance: (B, c, 2h, 2w) or None -> (B*T, C_out, 2h, 2w)."""
        x = conv_transpose_blocks(x, self.up) if _is_block_transpose(self.up) else self.up(x)
        first, *rest = self.conv
        channels = x.shape[1]
        y = conv2d(x, first, first.weight[:, :channels])
        guidance = [g for g in (generalist_guidance, specialist_guidance) if g is not None]
        if guidance:
            # conv(cat[x, guidance]) = conv_x(x) + conv_g(guidance) (the conv is linear and
            # pads each channel alike): the guidance part runs once per image and is broadcast
            # over the T classes, instead of concatenating T copies of the guidance (same
            # numbers up to float rounding).
            guidance = torch.cat(guidance, dim=1)
            guided = conv2d(guidance, first, first.weight[:, channels:])
            B = guidance.shape[0]
            y = (y.view(B, -1, *y.shape[1:]) + guided.unsqueeze(1)).flatten(0, 1)
        for layer in rest:
            y = conv2d(y, layer) if isinstance(layer, nn.Conv2d) else layer(y)
        return y


def guidance_projections(in_channels, out_channels):
    """Per-level ReLU(3x3 conv) projections of decoder guidance; None when disabled."""
    if not out_channels[0]:
        return None
    return nn.ModuleList(
        nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU())
        for c_in, c_out in zip(in_channels, out_channels)
    )


class RIPDecoder(nn.Module):
    """Cost embedding -> per-class logits at 4x the cost-volume grid."""

    def __init__(
        self,
        *,
        in_channels: int,
        decoder_dims,
        guidance_dims,
        generalist_proj_dims,
        specialist_proj_dims,
    ):
        """
        Args:
            in_channels: C, the cost-embedding width.
            decoder_dims: output widths of the two up-blocks ([64, 32]).
            guidance_dims: input widths of the guidance maps at the two levels ([256, 128]).
            generalist_proj_dims, specialist_proj_dims: projected guidance widths per level
                ([32, 16]); [0, 0] removes that stream's guidance.
        """
        super().__init__()
        self.generalist_guidance = guidance_projections(guidance_dims, generalist_proj_dims)
        self.specialist_guidance = guidance_projections(guidance_dims, specialist_proj_dims)
        widths = [in_channels, *decoder_dims]
        self.up_blocks = nn.ModuleList(
            GuidedUpBlock(
                widths[i], widths[i + 1], generalist_proj_dims[i], specialist_proj_dims[i]
            )
            for i in range(2)
        )
        self.head = nn.Conv2d(decoder_dims[-1], 1, kernel_size=3, padding=1)

    @staticmethod
    def _project(projections, guidance):
        if projections is None:
            return [None, None]
        return [proj(g) for proj, g in zip(projections, guidance)]

    def forward(self, x, generalist_guidance, specialist_guidance):
        """
        Args:
            x: (B, T, C, H, W) aggregated cost embedding.
            generalist_guidance, specialist_guidance: lists of two maps, (B, c0, 2H, 2W) and
                (B, c1, 4H, 4W) (entries None where a stream gives no guidance).
        Returns:
            (B, T, 4H, 4W) logits.
        """
        B, T, C, H, W = x.shape
        generalist = self._project(self.generalist_guidance, generalist_guidance)
        specialist = self._project(self.specialist_guidance, specialist_guidance)
        x = x.reshape(B * T, C, H, W)
        for block, g, s in zip(self.up_blocks, generalist, specialist):
            x = block(x, g, s)
        # The logits leave in fp32 even under autocast: bf16 keeps 8 bits of mantissa, so
        # logits of a few units would be rounded to steps of 1/32 and the classes' scores would
        # tie; this one-channel convolution costs nothing in fp32.
        with torch.autocast(x.device.type, enabled=False):
            logits = conv2d(x.float(), self.head)
        return logits.view(B, T, 4 * H, 4 * W)
