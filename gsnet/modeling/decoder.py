"""The Residual Information Preservation Decoder (RIPD), and the decoder registry.

Shapes: B images, T classes, C the cost-embedding width (128), H x W the cost-volume grid.
Two up-sampling blocks double the grid each time; at each, the generalist's and the specialist's
guidance maps (projected, shared by all classes) are concatenated to the class's features.

The per-class maps run in channels-last memory (oneDNN's convolutions are faster so with these
narrow widths on CPU); the (B*T, C, H, W) shapes are unchanged.
"""

import torch
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .encoder import GUIDANCE
from .fast_paths import conv_transpose
from .precision import autocast_disabled
from .registry import registered

__all__ = ["DECODER_REGISTRY", "RIPDecoder", "build_decoder"]

DECODER_REGISTRY = Registry("DECODER")
DECODER_REGISTRY.__doc__ = """
Registry of decoders: aggregated cost embedding -> per-class logits. Selected by
MODEL.SEM_SEG_HEAD.DECODER_NAME; an entry is called as ``entry(cfg, in_channels=C,
input_shapes=...)``, where ``input_shapes`` is {"generalist": ..., "specialist": ...}, each the
stream's ``output_shape()`` (name -> ShapeSpec) or None for a stream that is off, and returns a
module with ``forward(cost, generalist, specialist) -> (B, T, 4H, 4W)`` logits: cost
(B, T, C, H, W), generalist / specialist the streams' feature dicts (or None).
"""


def build_decoder(cfg, *, in_channels: int, input_shapes: dict) -> nn.Module:
    """The decoder named by MODEL.SEM_SEG_HEAD.DECODER_NAME."""
    name = cfg.MODEL.SEM_SEG_HEAD.DECODER_NAME
    decoder = registered(DECODER_REGISTRY, name, key="MODEL.SEM_SEG_HEAD.DECODER_NAME")
    return decoder(cfg, in_channels=in_channels, input_shapes=input_shapes)


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
        x = conv_transpose(self.up, x)
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


def _guidance_widths(stream, shapes, proj_dims, published_dims):
    """The widths of a stream's two guidance maps, as its encoder declares them ((0, 0) without
    guidance), checked against the published keys that must agree with them."""
    key = f"MODEL.SEM_SEG_HEAD.DECODER_{stream}_GUIDANCE"
    if not shapes or GUIDANCE[0] not in shapes:
        if proj_dims[0]:
            raise ConfigError(
                f"{key}_PROJ_DIMS={list(proj_dims)} asks for {stream} decoder guidance, but the "
                f"encoder gives none ({key}_DIMS is [0, 0] or the stream is off): set both "
                "to [0, 0] to remove it, or both non-zero to keep it."
            )
        return (0, 0)
    widths = tuple(shapes[name].channels for name in GUIDANCE)
    if not proj_dims[0]:
        raise ConfigError(
            f"{key}_DIMS={list(widths)} and {key}_PROJ_DIMS={list(proj_dims)} disagree: set "
            "both to [0, 0] to remove this stream's decoder guidance, or both non-zero to keep it."
        )
    if published_dims and tuple(published_dims) != widths:
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.DECODER_GUIDANCE_DIMS={list(published_dims)} contradicts the "
            f"{stream} encoder's guidance widths {list(widths)} ({key}_DIMS): leave "
            "DECODER_GUIDANCE_DIMS unset (it is derived) or make the two equal."
        )
    return widths


@DECODER_REGISTRY.register()
class RIPDecoder(nn.Module):
    """Cost embedding -> per-class logits at 4x the cost-volume grid."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        decoder_dims,
        generalist_guidance_dims=(0, 0),
        generalist_proj_dims=(0, 0),
        specialist_guidance_dims=(0, 0),
        specialist_proj_dims=(0, 0),
    ):
        """
        Args:
            in_channels: C, the cost-embedding width.
            decoder_dims: output widths of the two up-blocks ([64, 32]).
            generalist_guidance_dims, specialist_guidance_dims: widths of each stream's guidance
                maps at the two levels ([256, 128]).
            generalist_proj_dims, specialist_proj_dims: projected guidance widths per level
                ([32, 16]); [0, 0] removes that stream's guidance.
        """
        super().__init__()
        self.generalist_guidance = guidance_projections(
            generalist_guidance_dims, generalist_proj_dims
        )
        self.specialist_guidance = guidance_projections(
            specialist_guidance_dims, specialist_proj_dims
        )
        widths = [in_channels, *decoder_dims]
        self.up_blocks = nn.ModuleList(
            GuidedUpBlock(
                widths[i], widths[i + 1], generalist_proj_dims[i], specialist_proj_dims[i]
            )
            for i in range(2)
        )
        self.head = nn.Conv2d(decoder_dims[-1], 1, kernel_size=3, padding=1)

    @classmethod
    def from_config(cls, cfg, *, in_channels, input_shapes):
        head = cfg.MODEL.SEM_SEG_HEAD
        published = list(head.DECODER_GUIDANCE_DIMS)
        generalist_proj = list(head.DECODER_CLIP_GUIDANCE_PROJ_DIMS)
        specialist_proj = list(head.DECODER_DINO_GUIDANCE_PROJ_DIMS)
        generalist = input_shapes.get("generalist")
        specialist = input_shapes.get("specialist")
        # A stream that is off gives no decoder guidance either.
        if not head.USE_CLIP_CORR:
            generalist, generalist_proj = None, [0, 0]
        if specialist is None:
            specialist_proj = [0, 0]
        return {
            "in_channels": in_channels,
            "decoder_dims": list(head.DECODER_DIMS),
            "generalist_guidance_dims": _guidance_widths(
                "CLIP", generalist, generalist_proj, published
            ),
            "generalist_proj_dims": generalist_proj,
            "specialist_guidance_dims": _guidance_widths(
                "DINO", specialist, specialist_proj, published
            ),
            "specialist_proj_dims": specialist_proj,
        }

    @staticmethod
    def _project(projections, features):
        if projections is None:
            return [None, None]
        return [proj(features[name]) for proj, name in zip(projections, GUIDANCE)]

    def forward(self, x, generalist, specialist):
        """
        Args:
            x: (B, T, C, H, W) aggregated cost embedding.
            generalist, specialist: the streams' feature dicts (guidance maps "guidance_2x":
                (B, c0, 2H, 2W) and "guidance_4x": (B, c1, 4H, 4W)), or None.
        Returns:
            (B, T, 4H, 4W) logits.
        """
        B, T, C, H, W = x.shape
        generalist = self._project(self.generalist_guidance, generalist)
        specialist = self._project(self.specialist_guidance, specialist)
        x = x.reshape(B * T, C, H, W)
        for block, g, s in zip(self.up_blocks, generalist, specialist):
            x = block(x, g, s)
        # The logits leave in fp32 even under autocast: bf16 keeps 8 bits of mantissa, so
        # logits of a few units would be rounded to steps of 1/32 and the classes' scores would
        # tie; this one-channel convolution costs nothing in fp32.
        with autocast_disabled(x.device.type):
            logits = conv2d(x.float(), self.head)
        return logits.view(B, T, 4 * H, 4 * W)
