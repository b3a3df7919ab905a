"""The Residual Information Preservation Decoder (RIPD).

Shapes: B images, T classes, C the cost-embedding width (128), H x W the cost-volume grid.
Two up-sampling blocks double the grid each time; at each, the generalist's and the specialist's
guidance maps (projected, shared by all classes) are concatenated to the class's features.
"""

import torch
from torch import nn

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
        x = self.up(x)
        parts = [x]
        for guidance in (generalist_guidance, specialist_guidance):
            if guidance is not None:
                parts.append(guidance.repeat_interleave(x.shape[0] // guidance.shape[0], dim=0))
        return self.conv(torch.cat(parts, dim=1))


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
        return self.head(x).view(B, T, 4 * H, 4 * W)
