"""Cost aggregation: spatial (Swin) and class (linear attention) aggregation layers.

Follows CAT-Seg (Cho et al., CVPR 2024), as used by GSNet. Shapes: B images, T classes,
C the cost-embedding width (HIDDEN_DIMS, 128), H x W the cost-volume grid (24 x 24),
G the appearance-guidance width, Gt the text-guidance width (both 128).

The cost embedding travels as (B, T, C, H, W) between stages.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

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
            x: (N, nW, L, C) window tokens of N maps; guidance: (B, nW, L, G) window guidance
                shared by N / B consecutive maps (the T classes of one image), or None;
            mask: (nW, L, L) additive mask or None.
        Returns:
            (N, nW, L, C)
        """
        N, nW, L, C = x.shape
        # q = q(cat[x, guidance]) is computed as x @ Wq_x + (guidance @ Wq_g + bias): the
        # guidance term once per image rather than once per class, never repeated over the
        # classes (the same numbers up to float rounding). q, k and v of x are one product.
        weight = torch.cat([self.q.weight[:, :C], self.k.weight[:, :C], self.v.weight])
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        if guidance is None:
            qkv = F.linear(x, weight, bias)
        else:
            B = guidance.shape[0]
            guidance_weight = torch.cat([self.q.weight[:, C:], self.k.weight[:, C:]])
            guided = F.linear(guidance, guidance_weight)
            guided = torch.cat([guided, guided.new_zeros(()).expand(*guided.shape[:-1], C)], -1)
            qkv = F.linear(x, weight).view(B, N // B, nW, L, 3 * C)
            qkv = (qkv + (guided + bias).unsqueeze(1)).view(N, nW, L, 3 * C)
        # Windows join the batch: (3, N * nW, heads, L, d) views, no copies. 4-D inputs let
        # scaled_dot_product_attention take its fused kernel (a 5-D call falls back to the
        # explicit one, much slower on CPU).
        q, k, v = qkv.view(N * nW, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if mask is not None:
            mask = mask.unsqueeze(0).expand(N, nW, L, L).reshape(N * nW, 1, L, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(N, nW, L, C))


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
        """
        Args:
            x: (N, H, W, C) maps; guidance: (B, H, W, G) normalised guidance shared by N / B
                consecutive maps (the classes of one image), or None.
        Returns:
            (N, H, W, C)
        """
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
        # Channels-last maps; a free view when x already has that memory layout (the head
        # keeps it so between stages).
        x = x.permute(0, 1, 3, 4, 2).reshape(B * T, H, W, C)
        if guidance is not None:
            # Normalised once per image and shared by its classes (never repeated T times).
            guidance = self.guidance_norm(guidance.permute(0, 2, 3, 1))
        x = self.block_1(x, guidance)
        x = self.block_2(x, guidance)
        return x.view(B, T, H, W, C).permute(0, 1, 4, 2, 3)


def linear_attention(q, k, v, eps: float = 1e-6, padding=None):
    """Linear attention ("Transformers are RNNs"), feature map elu(x) + 1.

    q: (..., L, h, d); k, v: (..., S, h, d) -> (..., L, h, d). Values are divided by the
    sequence length before and multiplied after (CAT-Seg's guard against fp16 overflow; kept
    for identical numbers).

    ``padding`` = (key, value, count) appends ``count`` copies of one padding token (key and
    value: (h, d)) to the keys and values without materialising them: each copy adds the same
    term to the key sum and to the key-value products, so they add ``count`` times that term
    exactly; the sequence length S counts them.
    """
    q = F.elu(q) + 1
    k = F.elu(k) + 1
    length = v.shape[-3]
    if padding is not None:
        length += padding[2]
    kv = torch.einsum("...shd,...shv->...hdv", k, v / length)
    key_sum = k.sum(dim=-3)
    if padding is not None:
        pad_key, pad_value, count = padding
        pad_key = F.elu(pad_key) + 1
        kv = kv + count * torch.einsum("hd,hv->hdv", pad_key, pad_value / length)
        key_sum = key_sum + count * pad_key
    normaliser = 1 / (torch.einsum("...lhd,...hd->...lh", q, key_sum) + eps)
    return torch.einsum("...lhd,...hdv,...lh->...lhv", q, kv, normaliser) * length


class ClassAttention(nn.Module):
    """Attention across classes: queries/keys see the text guidance, values the tokens alone."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, attention_type: str):
        super().__init__()
        if attention_type not in ("linear", "full"):
            raise ConfigError(
                f"Unknown class-attention type {attention_type!r} "
                "(MODEL.SEM_SEG_HEAD.ATTENTION_TYPE); choose 'linear' or 'full'."
            )
        self.num_heads = num_heads
        self.attention_type = attention_type
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)

    def _guided(self, layer, x, guidance):
        """layer(cat[x, guidance]) as x @ W_x + (guidance @ W_g + bias): the guidance term is
        computed once per image and broadcast over the M pooled positions."""
        C = x.shape[-1]
        if guidance is None:
            return F.linear(x, layer.weight, layer.bias)
        guided = F.linear(guidance, layer.weight[:, C:], layer.bias)
        return F.linear(x, layer.weight[:, :C]) + guided.unsqueeze(-3)

    def forward(self, x, guidance, padding=None):
        """
        Args:
            x: (B, M, S, C) normalised tokens: S classes at each of M positions;
            guidance: (B, S, Gt) text guidance (shared by the M positions) or None;
            padding: None, or (token (C,), guidance (..., Gt) or None, count): ``count`` copies of
                one normalised padding token join the S classes as keys and values only
                (linear attention; their outputs would be discarded anyway).
        Returns:
            (B, M, S, C) (no output projection).
        """
        B, M, S, C = x.shape
        q = self._guided(self.q, x, guidance).view(B, M, S, self.num_heads, -1)
        k = self._guided(self.k, x, guidance).view(B, M, S, self.num_heads, -1)
        v = self.v(x).view(B, M, S, self.num_heads, -1)
        if self.attention_type == "linear":
            if padding is not None:
                token, pad_guidance, count = padding
                pad_guidance = pad_guidance.reshape(1, -1) if pad_guidance is not None else None
                pad_key = self._guided(self.k, token.view(1, 1, -1), pad_guidance)
                pad_value = self.v(token)
                padding = (pad_key.view(self.num_heads, -1), pad_value.view(self.num_heads, -1))
                padding = (*padding, count)
            out = linear_attention(q, k, v, padding=padding)
        else:
            if padding is not None:
                raise ValueError("padding is only computed implicitly for linear attention")
            out = F.scaled_dot_product_attention(
                q.transpose(-2, -3), k.transpose(-2, -3), v.transpose(-2, -3)
            ).transpose(-2, -3)
        return out.reshape(B, M, S, C)


class ClassAggregation(nn.Module):
    """Pool the grid, attend across classes at every pooled position, upsample, add.

    The class axis is padded to ``pad_len`` with a learned token (and a learned text guidance)
    so that linear attention sees a fixed-length sequence; the padding is dropped afterwards.
    With linear attention the padding tokens only enter as keys and values, all identical: their
    contribution is computed once, analytically (``linear_attention``), and their queries, MLP
    and upsampling (which the published code computed and discarded) are never computed.
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
        pooled = x.reshape(B * T, C, H, W)
        if self.pooling_size != (1, 1):  # 1x1 average pooling is the identity
            pooled = F.avg_pool2d(pooled, self.pooling_size)
        h, w = pooled.shape[-2:]
        tokens = pooled.reshape(B, T, C, h * w).permute(0, 3, 1, 2).contiguous()  # B, hw, T, C
        pad = self.pad_len - T if self.padding_tokens is not None else 0
        guidance_pad = pad > 0 and guidance is not None and self.padding_guidance is not None
        if pad > 0 and self.attention.attention_type == "linear":
            norm = self.norm1
            padding = (
                F.layer_norm(self.padding_tokens.view(C), (C,), norm.weight, norm.bias, norm.eps),
                self.padding_guidance if guidance_pad else None,
                pad,
            )
            tokens = tokens + self.attention(self.norm1(tokens), guidance, padding)
        else:
            # The explicit path ("full" attention): pad, attend, drop the padding.
            if pad > 0:
                padding = self.padding_tokens.expand(B, h * w, pad, C)
                tokens = torch.cat([tokens, padding], dim=2)
                if guidance_pad:
                    padding = self.padding_guidance.expand(B, pad, -1)
                    guidance = torch.cat([guidance, padding], dim=1)
            tokens = tokens + self.attention(self.norm1(tokens), guidance)
            tokens = tokens[:, :, :T]
        tokens = tokens + self.mlp(self.norm2(tokens))
        # The sum is formed channels-last, (B, T, H, W, C) memory, like the spatial stage's
        # output, so that neither stage copies between layouts.
        if (h, w) == (H, W):
            update = tokens.view(B, H, W, T, C).permute(0, 3, 1, 2, 4)
        else:
            update = tokens.transpose(1, 2).reshape(B * T, h, w, C).permute(0, 3, 1, 2)
            update = F.interpolate(update, size=(H, W), mode="bilinear", align_corners=True)
            update = update.permute(0, 2, 3, 1).reshape(B, T, H, W, C)
        return (x.permute(0, 1, 3, 4, 2) + update).permute(0, 1, 4, 2, 3)


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
