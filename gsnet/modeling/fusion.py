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

        def embed(in_channels):
            return nn.Conv2d(in_channels, embed_dim, kernel_size=7, padding=3)

        if self.mode == "simple_concatenation":
            self.concat_embed = embed(3 * feature_dim)
        else:
            self.cost_embed = embed(1)
        if self.mode == "query_guided":
            self.specialist_embed = embed(1)
            self.fuse = embed(2 * embed_dim)
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
            return conv(volume.reshape(B * T, 1, H, W))

        if self.mode == "query_guided":
            generalist_embed = torch.sigmoid(
                embed_volume(self.cost_embed, cost_volume(generalist, text))
            )
            specialist_embed = torch.sigmoid(
                embed_volume(self.specialist_embed, cost_volume(specialist, text))
            )
            fused = torch.sigmoid(self.fuse(torch.cat([generalist_embed, specialist_embed], 1)))
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
            out = self.concat_embed(stacked.reshape(B * T, -1, H, W))
        elif self.mode == "fusion_query":
            fused_features = self.feature_fuse(torch.cat([generalist, specialist], dim=1))
            out = embed_volume(self.cost_embed, cost_volume(fused_features, text))
        else:
            out = embed_volume(self.cost_embed, cost_volume(features, text))
        return out.view(B, T, -1, H, W)
