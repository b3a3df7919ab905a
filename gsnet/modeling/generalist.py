"""The generalist stream: CLIP (open_clip) wrapped for GSNet.

Shapes: B images, L tokens, E CLIP width (768 for ViT-B/16), D joint embedding (512),
H x W the token grid (24 x 24 at the paper's 384 x 384 input).

What the wrapper changes with respect to open_clip's CLIP (each reproduces the published code):
- every attention block holds separate q/k/v projection weights (``SplitQKVAttention``), so the
  "attention" fine-tuning mode trains the query and value weights alone;
- the positional grid is resized with plain bicubic interpolation (no antialiasing);
- the last image block runs in CAT-Seg's "dense" mode: value projection, output projection, the
  CLS token's block input as residual, then the MLP, so every token keeps its own content;
- ln_post and the projection apply to every token;
- the raw outputs of two intermediate blocks are returned as named features.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CLIP_ARCHITECTURES", "GeneralistEncoder", "SplitQKVAttention", "build_clip"]


def runs_without_autograd(module: nn.Module, x: torch.Tensor) -> bool:
    """True when ``module`` applied to ``x`` records no autograd graph and no autocast is on,
    so its blocks may run in place (inference, or a frozen encoder in training)."""
    if torch.is_autocast_enabled(x.device.type):
        return False
    if not torch.is_grad_enabled():
        return True
    return not x.requires_grad and not any(p.requires_grad for p in module.parameters())


def buffered_linear(buffers: dict, key: str, x, weight, bias):
    """F.linear(x, weight, bias) written into a buffer reused from block to block (no autograd).

    Each fresh large tensor costs page faults on first touch (about a third of a millisecond per
    MB on the 2-core test machine); reusing buffers keeps the encoders' activations resident.
    The product is the same addmm call as F.linear's, so the numbers are identical.
    """
    rows = x.numel() // x.shape[-1]
    out = buffers.get(key)
    if out is None or out.shape != (rows, weight.shape[0]) or out.dtype != x.dtype:
        out = buffers[key] = x.new_empty(rows, weight.shape[0])
    torch.addmm(bias, x.reshape(rows, -1), weight.t(), out=out)
    return out.view(*x.shape[:-1], weight.shape[0])


# Named CLIP architectures: open_clip model configs (QuickGELU, as OpenAI's weights use). "toy"
# is a narrow CLIP for the tests and the toy default (same code paths, random weights).
CLIP_ARCHITECTURES = {
    "ViT-B/16": {
        "open_clip_name": "ViT-B-16-quickgelu",
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 512,
            "heads": 8,
            "layers": 12,
        },
    },
    "ViT-L/14@336px": {
        "open_clip_name": "ViT-L-14-336-quickgelu",
        "embed_dim": 768,
        "vision_cfg": {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 768,
            "heads": 12,
            "layers": 12,
        },
    },
    "toy": {
        "open_clip_name": None,
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 64,
            "layers": 6,
            "width": 64,
            "patch_size": 16,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
        # A random text tower maps every class name to nearly the same vector (its end token
        # averages mostly the template's tokens: mean cosine 0.7 between the 40 LD50K names),
        # so the head sees no class and a toy run cannot learn within minutes. Sharper random
        # attention (q and k weights x 8) spreads the names apart (mean cosine 0.2), as a
        # trained CLIP's are. Only random weights are affected: loaded weights replace them.
        "random_text_attention_scale": 8.0,
    },
}


class SplitQKVAttention(nn.Module):
    """Multi-head self-attention with separate q, k and v projection weights.

    Drop-in for the ``nn.MultiheadAttention`` of open_clip's blocks (batch-first, same call
    signature), with the parameter names of the published checkpoint: ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight``, ``in_proj_bias`` (packed q|k|v) and ``out_proj``.
    Separate weights matter for training: with one packed weight, AdamW's decoupled weight
    decay would still move the frozen key rows.
    """

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    @classmethod
    def from_packed(cls, attn: nn.MultiheadAttention) -> "SplitQKVAttention":
        """Split an ``nn.MultiheadAttention``'s packed in-projection into q/k/v parameters."""
        split = cls(attn.embed_dim, attn.num_heads)
        q, k, v = attn.in_proj_weight.detach().chunk(3, dim=0)
        with torch.no_grad():
            split.q_proj_weight.copy_(q)
            split.k_proj_weight.copy_(k)
            split.v_proj_weight.copy_(v)
            split.in_proj_bias.copy_(attn.in_proj_bias)
            split.out_proj.load_state_dict(attn.out_proj.state_dict())
        return split

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):
        """(B, L, E) -> ((B, L, E), None); ``key``/``value`` must be the query (self-attention)."""
        B, L, E = query.shape
        weight = torch.cat([self.q_proj_weight, self.k_proj_weight, self.v_proj_weight])
        qkv = F.linear(query, weight, self.in_proj_bias)
        qkv = qkv.view(B, L, 3, self.num_heads, E // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(B, L, E)
        return self.out_proj(out), None

    def value_projection(self, x):
        """The value projection alone (the dense block needs nothing else): (..., E)."""
        return F.linear(x, self.v_proj_weight, self.in_proj_bias[2 * self.embed_dim :])


def build_clip(arch: str) -> nn.Module:
    """An open_clip CLIP of a named architecture, random weights, attention split into q/k/v."""
    import open_clip

    if arch not in CLIP_ARCHITECTURES:
        raise ValueError(
            f"Unknown CLIP architecture {arch!r} (MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED); "
            f"choose one of {sorted(CLIP_ARCHITECTURES)}."
        )
    spec = CLIP_ARCHITECTURES[arch]
    clip = open_clip.model.CLIP(
        embed_dim=spec["embed_dim"],
        vision_cfg=spec["vision_cfg"],
        text_cfg=spec["text_cfg"],
        quick_gelu=True,
    )
    for tower in (clip.visual.transformer, clip.transformer):
        for block in tower.resblocks:
            block.attn = SplitQKVAttention.from_packed(block.attn)
    scale = spec.get("random_text_attention_scale", 1.0)
    with torch.no_grad():
        for block in clip.transformer.resblocks:
            block.attn.q_proj_weight.mul_(scale)
            block.attn.k_proj_weight.mul_(scale)
    return clip


class GeneralistEncoder(nn.Module):
    """CLIP image tower -> dense joint-space features + decoder guidance; CLIP text tower.

    The whole CLIP model lives in ``self.clip`` (its parameters are the "CLIP parameters" of the
    optimizer's CLIP_MULTIPLIER); ``guidance_upsample`` holds GSNet's own transposed
    convolutions that turn the two intermediate block outputs into decoder guidance.
    """

    def __init__(
        self,
        *,
        arch: str,
        feature_resolution: tuple[int, int],
        guidance_channels: tuple[int, int],
    ):
        """
        Args:
            arch: a key of ``CLIP_ARCHITECTURES``.
            feature_resolution: token grid (H, W) the image is encoded at; the input size is
                this grid times the patch size (24 x 16 = 384 in the paper).
            guidance_channels: output channels of the two decoder-guidance upsamplers (the
                first at 2x, the second at 4x the token grid); 0 leaves that guidance out.
        """
        super().__init__()
        self.arch = arch
        self.clip = build_clip(arch)
        visual = self.clip.visual
        self.width = visual.transformer.width
        self.embed_dim = visual.proj.shape[1]
        self.patch_size = visual.conv1.kernel_size[0]
        self.feature_resolution = tuple(feature_resolution)
        self.input_size = tuple(g * self.patch_size for g in self.feature_resolution)
        depth = len(visual.transformer.resblocks)
        # Blocks 3 and 7 of 12 (7 and 15 of 24): a third and two thirds of the depth.
        self.guidance_blocks = (depth // 3 - 1, 2 * depth // 3 - 1)
        self.guidance_upsample = nn.ModuleList(
            nn.ConvTranspose2d(self.width, channels, kernel_size=2 * (i + 1), stride=2 * (i + 1))
            if channels
            else None
            for i, channels in enumerate(guidance_channels)
        )
        self.guidance_channels = tuple(guidance_channels)

    def positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The positional embedding for a token grid: (1 + H*W, E).

        The pretraining grid is resized with F.interpolate bicubic, no antialiasing, target given
        as a size (open_clip's own resize antialiases, which changes the numbers).
        """
        pos = self.clip.visual.positional_embedding
        side = int(round((pos.shape[0] - 1) ** 0.5))
        if (side, side) == tuple(grid):
            return pos
        patch_pos = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([pos[:1], patch_pos.flatten(2)[0].T], dim=0)

    @staticmethod
    def _block_in_place(block, x, buffers):
        """open_clip's ResidualAttentionBlock (split q/k/v, QuickGELU) without autograd,
        updating ``x`` in place and reusing ``buffers`` (the same numbers as ``block(x)``)."""
        B, L, E = x.shape
        attn, mlp = block.attn, block.mlp
        weight = torch.cat([attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight])
        qkv = buffered_linear(buffers, "qkv", block.ln_1(x), weight, attn.in_proj_bias)
        q, k, v = qkv.view(B, L, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, E)
        out_proj = attn.out_proj
        x.add_(buffered_linear(buffers, "proj", out, out_proj.weight, out_proj.bias))
        hidden = buffered_linear(buffers, "fc", block.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias)
        gate = buffers.get("gate")
        if gate is None or gate.shape != hidden.shape:
            gate = buffers["gate"] = torch.empty_like(hidden)
        torch.mul(hidden, 1.702, out=gate).sigmoid_()  # QuickGELU: x * sigmoid(1.702 x)
        hidden.mul_(gate)
        x.add_(buffered_linear(buffers, "out", hidden, mlp.c_proj.weight, mlp.c_proj.bias))
        return x

    def _in_place_ok(self, blocks, x):
        from open_clip.transformer import QuickGELU

        return runs_without_autograd(self.clip.visual, x) and all(
            isinstance(block.attn, SplitQKVAttention)
            and isinstance(block.mlp.gelu, QuickGELU)
            and isinstance(block.ls_1, nn.Identity)
            and isinstance(block.ls_2, nn.Identity)
            and not hasattr(block, "ln_1_kv")
            for block in blocks
        )

    def _dense_block(self, block, x):
        """CAT-Seg's dense last block: every token sees only itself.

        v = out_proj(value_proj(ln_1(x))) + x_cls, then v + mlp(ln_2(v)).
        """
        attn = block.attn
        y = block.ls_1(attn.out_proj(attn.value_projection(block.ln_1(x)))) + x[:, :1]
        unused = [w for w in (attn.q_proj_weight, attn.k_proj_weight) if w.requires_grad]
        if unused and torch.is_grad_enabled():
            # The published block computed (and discarded) the query and key projections, so
            # their trainable weights got zero gradients and, with them, AdamW's weight decay
            # (and DistributedDataParallel sees every trainable parameter used). Keep that
            # without computing the projections: this adds exactly 0.
            y = y + 0.0 * sum(w.sum() for w in unused)
        return y + block.ls_2(block.mlp(block.ln_2(y)))

    def forward(self, images: torch.Tensor) -> dict[str, object]:
        """
        Args:
            images: (B, 3, H * patch, W * patch), CLIP-normalised.
        Returns:
            dict with "dense": (B, D, H, W) joint-space features of every patch, and "guidance":
            a list of two decoder-guidance maps, (B, C0, 2H, 2W) and (B, C1, 4H, 4W) (None where
            disabled).
        """
        visual = self.clip.visual
        x = visual.conv1(images)
        B, E, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(B, 1, E)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding((H, W)).to(x.dtype)
        x = visual.ln_pre(x)

        blocks = visual.transformer.resblocks
        in_place = self._in_place_ok(blocks[:-1], x)
        buffers = {}
        intermediate = {}
        for index, block in enumerate(blocks[:-1]):
            x = self._block_in_place(block, x, buffers) if in_place else block(x)
            if index in self.guidance_blocks:
                intermediate[index] = x.clone() if in_place else x
        x = self._dense_block(blocks[-1], x)
        x = visual.ln_post(x) @ visual.proj

        def grid(tokens):
            return tokens[:, 1:].transpose(1, 2).reshape(B, -1, H, W)

        guidance = [
            up(grid(intermediate[index])) if up is not None else None
            for up, index in zip(self.guidance_upsample, self.guidance_blocks)
        ]
        return {"dense": grid(x), "guidance": guidance}

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, 77) token ids -> (N, D) text embeddings (not normalised).

        open_clip's ``encode_text``, run on the first ``max(EOT position) + 1`` tokens only: the
        text tower is causal, so the zero-padding after the last EOT token cannot change any
        EOT feature (the same numbers up to float rounding; ~5x less work for short prompts).
        """
        clip = self.clip
        eot = tokens.argmax(dim=-1)  # EOT is the largest token id, as in open_clip's pooling
        length = int(eot.max()) + 1
        tokens = tokens[:, :length]
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)
        x = x + clip.positional_embedding[:length].to(cast_dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return x @ clip.text_projection
