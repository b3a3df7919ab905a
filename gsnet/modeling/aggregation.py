"""Cost aggregation: spatial (Swin) and class (linear attention) aggregation layers.

Follows CAT-Seg (Cho et al., CVPR 2024), as used by GSNet. Shapes: B images, T classes,
C the cost-embedding width (HIDDEN_DIMS, 128), H x W the cost-volume grid (24 x 24),
G the appearance-guidance width, Gt the text-guidance width (both 128).

The cost embedding travels as (B, T, C, H, W) between stages.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["AggregatorLayer", "ClassAggregation", "SpatialAggregation"]


def window_partition(x, window_size: int):
    """(N, H, W, C) -> (N, nW, window_size**2, C), windows in row-major order."""
    N, H, W, C = x.shape
    x = x.view(N, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(N, -1, window_size * window_size, C)


def window_reverse(windows, window_size: int, H: int, W: int):
    """(N, nW, window_size**2, C) -> (N, H, W, C)."""
    N, _, _, C = windows.shape
    x = windows.view(N, H // window_size, W // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(N, H, W, C)


def shifted_window_mask(resolution, window_size: int, shift: int) -> torch.Tensor:
    """Swin's additive mask for shifted windows: (nW, window_size**2, window_size**2).

    0 between tokens of the same region of the rolled map, -100 across regions.
    """
    H, W = resolution
    region = torch.zeros(1, H, W, 1)
    slices = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    label = 0
    for hs in slices:
        for ws in slices:
            region[:, hs, ws, :] = label
            label += 1
    windows = window_partition(region, window_size)[0, :, :, 0]
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class GuidedWindowAttention(nn.Module):
    """Window self-attention whose queries and keys also see the appearance guidance."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, guidance, mask):
        """
        Args:
            x: (N, nW, L, C) window tokens; guidance: (N, nW, L, G) or None;
            mask: (nW, L, L) additive mask or None.
        Returns:
            (N, nW, L, C)
        """
        N, nW, L, C = x.shape
        qk_input = torch.cat([x, guidance], dim=-1) if guidance is not None else x

        def heads(t):
            return t.view(N, nW, L, self.num_heads, -1).transpose(2, 3)

        q, k, v = heads(self.q(qk_input)), heads(self.k(qk_input)), heads(self.v(x))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.unsqueeze(1) if mask is not None else None
        )
        return self.proj(out.transpose(2, 3).reshape(N, nW, L, C))


class GuidedSwinBlock(nn.Module):
    """A pre-norm Swin block (window attention + MLP) with appearance guidance; no position bias."""

    def __init__(self, *, dim, guidance_dim, resolution, num_heads, window_size, shift):
        super().__init__()
        self.resolution = tuple(resolution)
        if min(self.resolution) <= window_size:
            # A window covering the whole grid: no partition, no shift (as Swin does).
            window_size, shift = min(self.resolution), 0
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(4 * dim, dim)
        mask = shifted_window_mask(self.resolution, window_size, shift) if shift else None
        # A constant of the geometry: not saved (the published checkpoint's copy is dropped).
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x, guidance):
        """x: (N, H, W, C); guidance: (N, H, W, G) normalised, or None. Returns (N, H, W, C)."""
        N, H, W, C = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            if guidance is not None:
                guidance = torch.roll(guidance, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(
            window_partition(y, self.window_size),
            window_partition(guidance, self.window_size) if guidance is not None else None,
            self.attn_mask,
        )
        y = window_reverse(y, self.window_size, H, W)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """Two Swin blocks (the second shifted by half a window) over each class's cost map."""

    def __init__(self, *, dim, guidance_dim, resolution, num_heads, window_size):
        super().__init__()
        common = dict(
            dim=dim,
            guidance_dim=guidance_dim,
            resolution=resolution,
            num_heads=num_heads,
            window_size=window_size,
        )
        self.block_1 = GuidedSwinBlock(**common, shift=0)
        self.block_2 = GuidedSwinBlock(**common, shift=window_size // 2)
        # One LayerNorm of the guidance, shared by both blocks.
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x, guidance):
        """x: (B, T, C, H, W); guidance: (B, G, H, W) or None. Returns (B, T, C, H, W)."""
        B, T, C, H, W = x.shape
        x = x.reshape(B * T, C, H, W).permute(0, 2, 3, 1)
        if guidance is not None:
            guidance = self.guidance_norm(guidance.permute(0, 2, 3, 1))
            guidance = guidance.repeat_interleave(T, dim=0)
        x = self.block_1(x, guidance)
        x = self.block_2(x, guidance)
        return x.permute(0, 3, 1, 2).reshape(B, T, C, H, W)


def linear_attention(q, k, v, eps: float = 1e-6):
    """Linear attention ("Transformers are RNNs"), feature map elu(x) + 1.

    q: (N, L, h, d); k, v: (N, S, h, d) -> (N, L, h, d). Values are divided by S before and
    multiplied after (CAT-Seg's guard against fp16 overflow; kept for identical numbers).
    """
    q = F.elu(q) + 1
    k = F.elu(k) + 1
    length = v.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", k, v / length)
    normaliser = 1 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, normaliser) * length


class ClassAttention(nn.Module):
    """Attention across classes: queries/keys see the text guidance, values the tokens alone."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, attention_type: str):
        super().__init__()
        if attention_type not in ("linear", "full"):
            raise ValueError(
                f"Unknown class-attention type {attention_type!r} "
                "(MODEL.SEM_SEG_HEAD.ATTENTION_TYPE); choose 'linear' or 'full'."
            )
        self.num_heads = num_heads
        self.attention_type = attention_type
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, x, guidance):
        """x: (N, S, C); guidance: (N, S, Gt) or None. Returns (N, S, C) (no output projection)."""
        N, S, C = x.shape
        qk_input = torch.cat([x, guidance], dim=-1) if guidance is not None else x
        q = self.q(qk_input).view(N, S, self.num_heads, -1)
        k = self.k(qk_input).view(N, S, self.num_heads, -1)
        v = self.v(x).view(N, S, self.num_heads, -1)
        if self.attention_type == "linear":
            out = linear_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            ).transpose(1, 2)
        return out.reshape(N, S, C)


class ClassAggregation(nn.Module):
    """Pool the grid, attend across classes at every pooled position, upsample, add.

    The class axis is padded to ``pad_len`` with a learned token (and a learned text guidance)
    so that linear attention sees a fixed-length sequence; the padding is dropped afterwards.
    """

    def __init__(self, *, dim, guidance_dim, num_heads, attention_type, pooling_size, pad_len=256):
        super().__init__()
        self.pooling_size = tuple(pooling_size)
        self.attention = ClassAttention(dim, guidance_dim, num_heads, attention_type)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.pad_len = pad_len
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, dim)) if pad_len > 0 else None
        self.padding_guidance = (
            nn.Parameter(torch.zeros(1, 1, guidance_dim))
            if pad_len > 0 and guidance_dim > 0
            else None
        )

    def forward(self, x, guidance):
        """x: (B, T, C, H, W); guidance: (B, T, Gt) or None. Returns (B, T, C, H, W)."""
        B, T, C, H, W = x.shape
        pooled = F.avg_pool2d(x.reshape(B * T, C, H, W), self.pooling_size)
        h, w = pooled.shape[-2:]
        tokens = pooled.view(B, T, C, h * w).permute(0, 3, 1, 2)  # B, hw, T, C
        pad = self.pad_len - T if self.padding_tokens is not None else 0
        if pad > 0:
            tokens = torch.cat([tokens, self.padding_tokens.expand(B, h * w, pad, C)], dim=2)
        tokens = tokens.reshape(B * h * w, -1, C)
        if guidance is not None:
            if pad > 0 and self.padding_guidance is not None:
                padding = self.padding_guidance.expand(B, pad, -1)
                guidance = torch.cat([guidance, padding], dim=1)
            guidance = guidance.repeat_interleave(h * w, dim=0)
        tokens = tokens + self.attention(self.norm1(tokens), guidance)
        tokens = tokens + self.mlp(self.norm2(tokens))
        tokens = tokens.view(B, h, w, -1, C)[:, :, :, :T]
        tokens = tokens.permute(0, 3, 4, 1, 2).reshape(B * T, C, h, w)
        update = F.interpolate(tokens, size=(H, W), mode="bilinear", align_corners=True)
        return x + update.view(B, T, C, H, W)


class AggregatorLayer(nn.Module):
    """Spatial aggregation, then class aggregation (one CAT-Seg aggregator layer)."""

    def __init__(
        self,
        *,
        dim,
        appearance_guidance_dim,
        text_guidance_dim,
        num_heads,
        resolution,
        window_size,
        pooling_size,
        attention_type,
        pad_len=256,
    ):
        super().__init__()
        self.spatial = SpatialAggregation(
            dim=dim,
            guidance_dim=appearance_guidance_dim,
            resolution=resolution,
            num_heads=num_heads,
            window_size=window_size,
        )
        self.classes = ClassAggregation(
            dim=dim,
            guidance_dim=text_guidance_dim,
            num_heads=num_heads,
            attention_type=attention_type,
            pooling_size=pooling_size,
            pad_len=pad_len,
        )

    def forward(self, x, appearance_guidance, text_guidance):
        """x: (B, T, C, H, W) -> (B, T, C, H, W)."""
        return self.classes(self.spatial(x, appearance_guidance), text_guidance)
