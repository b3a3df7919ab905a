"""Cost volumes and their fusion: GSNet's query-guided feature fusion, its ablation variants,
and the fusion registry.

Shapes: B images, T classes, D the joint width (512), C the cost-embedding width (128),
H x W the cost-volume grid (24 x 24). Every fusion returns the cost embedding (B, T, C, H, W).
"""

import torch
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .fast_paths import conv2d_fft
from .registry import registered

__all__ = [
    "FUSION_REGISTRY",
    "PUBLISHED_FUSION_TYPES",
    "FusionQueryFusion",
    "QueryGuidedFusion",
    "SimpleConcatenationFusion",
    "SingleStreamFusion",
    "build_fusion",
    "cost_volume",
]

FUSION_REGISTRY = Registry("COST_VOLUME_FUSION")
FUSION_REGISTRY.__doc__ = """
Registry of cost-volume fusions: how the two streams' dense features meet the text queries.
Selected by MODEL.SEM_SEG_HEAD.FUSION_TYPE (a registered name, or a published name of
``PUBLISHED_FUSION_TYPES``) when both streams are on; one stream alone uses SingleStreamFusion.
An entry is called as ``entry(cfg, feature_dim=D, embed_dim=C)`` and returns a module with
``forward(generalist, specialist, text) -> (B, T, C, H, W)``: generalist and specialist
(B, D, H, W) dense features (None for a stream that is off), text (T, D).
"""

# The published names of MODEL.SEM_SEG_HEAD.FUSION_TYPE and the registered fusions they select;
# any other value is taken as a registered name. SingleStreamFusion is chosen automatically when
# one stream is off.
PUBLISHED_FUSION_TYPES = {
    "query_guided": "QueryGuidedFusion",
    "simple_concatenation": "SimpleConcatenationFusion",
    "fusion_query": "FusionQueryFusion",
}


def build_fusion(cfg, *, feature_dim: int, embed_dim: int) -> nn.Module:
    """The fusion named by MODEL.SEM_SEG_HEAD.FUSION_TYPE (single_stream with one stream)."""
    head = cfg.MODEL.SEM_SEG_HEAD
    if not (head.USE_CLIP_CORR or head.USE_DINO_CORR):
        raise ConfigError(
            "Both streams are off: set MODEL.SEM_SEG_HEAD.USE_CLIP_CORR and/or USE_DINO_CORR."
        )
    name = PUBLISHED_FUSION_TYPES.get(head.FUSION_TYPE, head.FUSION_TYPE)
    if not (head.USE_CLIP_CORR and head.USE_DINO_CORR):
        name = SingleStreamFusion.__name__
    fusion = registered(FUSION_REGISTRY, name, key="MODEL.SEM_SEG_HEAD.FUSION_TYPE")
    return fusion(cfg, feature_dim=feature_dim, embed_dim=embed_dim)


def cost_embedding(in_channels: int, embed_dim: int) -> nn.Conv2d:
    """The 7x7 convolution that embeds a cost volume (or features) into C channels."""
    return nn.Conv2d(in_channels, embed_dim, kernel_size=7, padding=3)


def cost_volume(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pixel with every class: (B, D, H, W), (T, D) -> (B, T, H, W)."""
    return torch.einsum("bdhw,td->bthw", F.normalize(features, dim=1), F.normalize(text, dim=-1))


def embed_cost_volume(conv, volume):
    """(B, T, H, W) cost volume -> (B*T, C, H, W) through a cost-embedding convolution."""
    B, T, H, W = volume.shape
    return conv2d_fft(conv, volume.reshape(B * T, 1, H, W))


class _Fusion(nn.Module):
    """Fusions built from the feature and embedding widths alone."""

    @configurable
    def __init__(self, *, feature_dim: int, embed_dim: int):
        """
        Args:
            feature_dim: D, the width of both streams' dense features and of the text.
            embed_dim: C, the width of the cost embedding.
        """
        super().__init__()
        self._build(feature_dim, embed_dim)

    @classmethod
    def from_config(cls, cfg, *, feature_dim, embed_dim):
        return {"feature_dim": feature_dim, "embed_dim": embed_dim}


@FUSION_REGISTRY.register()
class QueryGuidedFusion(_Fusion):
    """GSNet's query-guided feature fusion: each stream's cost volume -> its own 7x7 conv ->
    sigmoid; the two are concatenated -> 7x7 conv -> sigmoid, and the generalist's embedding is
    added back (it keeps the generalist's open-vocabulary signal)."""

    def _build(self, feature_dim, embed_dim):
        self.cost_embed = cost_embedding(1, embed_dim)  # the generalist's
        self.specialist_embed = cost_embedding(1, embed_dim)
        self.fuse = cost_embedding(2 * embed_dim, embed_dim)

    def forward(self, generalist, specialist, text):
        B, _, H, W = generalist.shape
        T = text.shape[0]
        generalist_embed = torch.sigmoid(
            embed_cost_volume(self.cost_embed, cost_volume(generalist, text))
        )
        specialist_embed = torch.sigmoid(
            embed_cost_volume(self.specialist_embed, cost_volume(specialist, text))
        )
        fused = torch.sigmoid(
            conv2d_fft(self.fuse, torch.cat([generalist_embed, specialist_embed], 1))
        )
        return (fused + generalist_embed).view(B, T, -1, H, W)


@FUSION_REGISTRY.register()
class SimpleConcatenationFusion(_Fusion):
    """Ablation: normalised generalist and specialist features and the text embedding,
    concatenated per class (3D channels) -> one 7x7 conv. No sigmoid."""

    def _build(self, feature_dim, embed_dim):
        self.concat_embed = cost_embedding(3 * feature_dim, embed_dim)

    def forward(self, generalist, specialist, text):
        B, _, H, W = generalist.shape
        T = text.shape[0]
        stacked = torch.cat(
            [
                F.normalize(generalist, dim=1).unsqueeze(1).expand(B, T, -1, H, W),
                F.normalize(specialist, dim=1).unsqueeze(1).expand(B, T, -1, H, W),
                F.normalize(text, dim=-1)[None, :, :, None, None].expand(B, T, -1, H, W),
            ],
            dim=2,
        )
        out = conv2d_fft(self.concat_embed, stacked.reshape(B * T, -1, H, W))
        return out.view(B, T, -1, H, W)


@FUSION_REGISTRY.register()
class FusionQueryFusion(_Fusion):
    """Ablation: the two feature maps -> 1x1 conv -> one cost volume -> 7x7 conv."""

    def _build(self, feature_dim, embed_dim):
        self.cost_embed = cost_embedding(1, embed_dim)
        self.feature_fuse = nn.Conv2d(2 * feature_dim, feature_dim, kernel_size=1)

    def forward(self, generalist, specialist, text):
        B, _, H, W = generalist.shape
        fused_features = self.feature_fuse(torch.cat([generalist, specialist], dim=1))
        out = embed_cost_volume(self.cost_embed, cost_volume(fused_features, text))
        return out.view(B, text.shape[0], -1, H, W)


@FUSION_REGISTRY.register()
class SingleStreamFusion(_Fusion):
    """Single-stream ablations: the one stream's cost volume -> 7x7 conv."""

    def _build(self, feature_dim, embed_dim):
        self.cost_embed = cost_embedding(1, embed_dim)

    def forward(self, generalist, specialist, text):
        features = generalist if generalist is not None else specialist
        B, _, H, W = features.shape
        out = embed_cost_volume(self.cost_embed, cost_volume(features, text))
        return out.view(B, text.shape[0], -1, H, W)
