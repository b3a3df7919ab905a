"""The generalist stream: CLIP (open_clip) wrapped for GSNet, and the generalist registry.

Shapes: B images, L tokens, E CLIP width (768 for ViT-B/16), D joint embedding (512),
H x W the token grid (24 x 24 at the paper's 384 x 384 input).

Any open_clip model with a plain ViT image tower can be the generalist, by its open_clip name
(``ViT-B-16-quickgelu``, ``ViT-L-14-336-quickgelu``, ``ViT-B-32``, ``ViT-L-14``, ...) or by one of
the published names in ``CLIP_ARCHITECTURES``. What the wrapper changes with respect to
open_clip's CLIP (each reproduces the published code):
- every attention block holds separate q/k/v projection weights (``SplitQKVAttention``), so the
  "attention" fine-tuning mode trains the query and value weights alone;
- the positional grid is resized with plain bicubic interpolation (no antialiasing);
- the last image block runs in CAT-Seg's "dense" mode: value projection, output projection, the
  CLS token's block input as residual, then the MLP, so every token keeps its own content;
- ln_post and the projection apply to every token;
- the raw outputs of the blocks at a third and two thirds of the depth become decoder guidance.
"""

import contextlib
import logging
from fractions import Fraction

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .encoder import DENSE, GUIDANCE, GUIDANCE_SCALES, Encoder, resampling_conv, token_grid
from .fast_paths import blocks_in_place
from .registry import registered

__all__ = [
    "CLIP_ARCHITECTURES",
    "GENERALIST_REGISTRY",
    "CLIPGeneralistEncoder",
    "SplitQKVAttention",
    "build_clip",
    "build_generalist",
    "open_clip_model_name",
]

GENERALIST_REGISTRY = Registry("GENERALIST_ENCODER")
GENERALIST_REGISTRY.__doc__ = """
Registry of generalist encoders: the open-vocabulary stream, which also encodes the class names.
Selected by MODEL.SEM_SEG_HEAD.GENERALIST_ENCODER; an entry is called with the config,
``entry(cfg)``, and returns an ``Encoder`` (gsnet/modeling/encoder.py) whose output has the
"dense" map in the text embedding space (and optionally the two decoder guidance maps), with in
addition:

- ``encode_text(tokens) -> (N, D)``: CLIP token ids (N, 77) to (not normalised) text embeddings;
- ``embed_dim``: D, the width of the joint image/text space.
"""

# The published names of MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED, as open_clip models (QuickGELU, as
# OpenAI's weights use). Any other value is taken as an open_clip model name. "toy" is a narrow
# CLIP for the tests and the toy default (same code paths, random weights).
CLIP_ARCHITECTURES = {
    "ViT-B/16": {"open_clip_name": "ViT-B-16-quickgelu"},
    "ViT-L/14@336px": {"open_clip_name": "ViT-L-14-336-quickgelu"},
    "toy": {
        "open_clip_name": "ViT-B-16-quickgelu",
        "model_kwargs": {
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
        },
        # A random text tower maps every class name to nearly the same vector (its end token
        # averages mostly the template's tokens: mean cosine 0.7 between the 40 LD50K names),
        # so the head sees no class and a toy run cannot learn within minutes. Sharper random
        # attention (q and k weights x 8) spreads the names apart (mean cosine 0.2), as a
        # trained CLIP's are. Only random weights are affected: loaded weights replace them.
        "random_text_attention_scale": 8.0,
    },
}


def open_clip_model_name(arch: str) -> str:
    """The open_clip model name of a CLIP_PRETRAINED value (a published name or an open_clip
    name); an unknown name is a ConfigError listing the choices."""
    import open_clip

    if arch in CLIP_ARCHITECTURES:
        return CLIP_ARCHITECTURES[arch]["open_clip_name"]
    if arch in open_clip.list_models():
        return arch
    raise ConfigError(
        f"Unknown CLIP architecture {arch!r} (MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED): give one of "
        f"{sorted(CLIP_ARCHITECTURES)} or an open_clip model name with a ViT image tower, "
        "e.g. ViT-B-16-quickgelu, ViT-L-14-336-quickgelu, ViT-B-32, ViT-L-14 "
        "(open_clip.list_models() lists all)."
    )


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


@contextlib.contextmanager
def _without_root_warning(prefix: str):
    """Drop the root logger's records that start with ``prefix`` within the context."""

    def keep(record):
        return not record.getMessage().startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def build_clip(arch: str) -> nn.Module:
    """The open_clip CLIP of a CLIP_PRETRAINED value, random weights, attention split into q/k/v."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    spec = CLIP_ARCHITECTURES.get(arch, {})
    name = open_clip_model_name(arch)
    # open_clip warns that the model is random; GSNet loads its weights in a checkpoint step.
    with _without_root_warning("No pretrained weights loaded"):
        clip = open_clip.create_model(
            name,
            pretrained=None,
            device=torch.get_default_device(),
            **spec.get("model_kwargs", {}),
        )
    visual = getattr(clip, "visual", None)
    if (
        not isinstance(visual, VisionTransformer)
        or visual.attn_pool is not None
        or visual.proj is None
        or not hasattr(clip, "token_embedding")
    ):
        raise ConfigError(
            f"CLIP architecture {arch!r} (MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED): GSNet needs an "
            "open_clip CLIP with a plain ViT image tower (class token, no attention pooling, a "
            "projection) and open_clip's own text tower; this model has "
            f"{type(visual).__name__} / {type(clip).__name__}."
        )
    for tower in (visual.transformer, clip.transformer):
        for block in tower.resblocks:
            block.attn = SplitQKVAttention.from_packed(block.attn)
    scale = spec.get("random_text_attention_scale", 1.0)
    with torch.no_grad():
        for block in clip.transformer.resblocks:
            block.attn.q_proj_weight.mul_(scale)
            block.attn.k_proj_weight.mul_(scale)
    return clip


def set_clip_finetuning(clip: nn.Module, mode: str):
    """Set ``requires_grad`` of CLIP's parameters as the published code does (matched on names
    relative to the CLIP model):
      - "attention": in both towers only the attention blocks' q and v projection WEIGHTS;
      - "full": every parameter under a "transformer" (the blocks of both towers);
      - "freezeIMG": the text tower's q/v weights and its positional embedding;
      - anything else: frozen.
    """
    for name, param in clip.named_parameters():
        is_qv = "attn" in name and ("q_proj" in name or "v_proj" in name)
        if mode == "freezeIMG":
            trainable = not name.startswith("visual") and (is_qv or "position" in name)
        elif "transformer" not in name:
            trainable = False
        elif mode == "attention":
            trainable = is_qv
        elif mode == "full":
            trainable = True
        else:
            trainable = False
        param.requires_grad = trainable


def build_generalist(cfg) -> Encoder:
    """The generalist encoder named by MODEL.SEM_SEG_HEAD.GENERALIST_ENCODER."""
    name = cfg.MODEL.SEM_SEG_HEAD.GENERALIST_ENCODER
    key = "MODEL.SEM_SEG_HEAD.GENERALIST_ENCODER"
    return registered(GENERALIST_REGISTRY, name, key=key)(cfg)


@GENERALIST_REGISTRY.register()
class CLIPGeneralistEncoder(Encoder):
    """CLIP image tower -> dense joint-space features + decoder guidance; CLIP text tower.

    The whole CLIP model lives in ``self.clip`` (its parameters are the "CLIP parameters" of the
    optimizer's CLIP_MULTIPLIER); ``guidance_upsample`` holds GSNet's own transposed
    convolutions that turn the two intermediate block outputs into decoder guidance.
    """

    @configurable
    def __init__(
        self,
        *,
        arch: str,
        input_size: tuple[int, int] | None = None,
        feature_resolution: tuple[int, int] | None = None,
        guidance_channels: tuple[int, int] = (0, 0),
        finetune: str = "attention",
    ):
        """
        Args:
            arch: a key of ``CLIP_ARCHITECTURES`` or an open_clip model name.
            input_size: (h, w) pixels the image is encoded at; the cost-volume grid is this
                divided by the patch size (384 / 16 = 24 in the paper). None: from
                ``feature_resolution``, else the architecture's pretraining size.
            feature_resolution: the published way to set the grid (FEATURE_RESOLUTION): the
                input is then grid x patch; with ``input_size`` too, the two must agree.
            guidance_channels: output channels of the two decoder-guidance upsamplers (2x and
                4x the token grid); 0 leaves that guidance out.
            finetune: which CLIP parameters train (see ``set_clip_finetuning``).
        """
        super().__init__()
        self.arch = arch
        self.open_clip_name = open_clip_model_name(arch)
        self.clip = build_clip(arch)
        visual = self.clip.visual
        self.width = visual.transformer.width
        self.embed_dim = visual.proj.shape[1]
        self.patch_size = visual.conv1.kernel_size[0]
        self.input_size = self._resolve_input_size(input_size, feature_resolution)
        grid = token_grid(
            self.input_size,
            self.patch_size,
            what=f"generalist {arch}",
            key="MODEL.SEM_SEG_HEAD.GENERALIST_INPUT_SIZE",
        )
        depth = len(visual.transformer.resblocks)
        # Blocks 3 and 7 of 12 (7 and 15 of 24): a third and two thirds of the depth.
        self.guidance_blocks = (depth // 3 - 1, 2 * depth // 3 - 1)
        self.guidance_upsample = nn.ModuleList(
            resampling_conv(self.width, channels, Fraction(scale)) if channels else None
            for channels, scale in zip(guidance_channels, GUIDANCE_SCALES)
        )
        self._output_shapes = {
            DENSE: ShapeSpec(
                channels=self.embed_dim, height=grid[0], width=grid[1], stride=self.patch_size
            )
        }
        for name, channels, scale in zip(GUIDANCE, guidance_channels, GUIDANCE_SCALES):
            if channels:
                self._output_shapes[name] = ShapeSpec(
                    channels=channels,
                    height=scale * grid[0],
                    width=scale * grid[1],
                    stride=self.patch_size // scale if self.patch_size % scale == 0 else None,
                )
        set_clip_finetuning(self.clip, finetune)

    @property
    def pretrained_module(self) -> nn.Module:
        return self.clip

    @classmethod
    def from_config(cls, cfg):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "arch": head.CLIP_PRETRAINED,
            "input_size": tuple(head.GENERALIST_INPUT_SIZE) or None,
            "feature_resolution": tuple(head.FEATURE_RESOLUTION) or None,
            "guidance_channels": tuple(head.DECODER_CLIP_GUIDANCE_DIMS)
            if head.USE_CLIP_CORR
            else (0, 0),
            "finetune": head.CLIP_FINETUNE,
        }

    def _resolve_input_size(self, input_size, feature_resolution):
        if feature_resolution is not None:
            derived = tuple(g * self.patch_size for g in feature_resolution)
            if input_size is not None and tuple(input_size) != derived:
                raise ConfigError(
                    f"MODEL.SEM_SEG_HEAD.FEATURE_RESOLUTION={list(feature_resolution)} and "
                    f"GENERALIST_INPUT_SIZE={list(input_size)} disagree: with "
                    f"{self.patch_size}-pixel patches the grid {list(feature_resolution)} needs "
                    f"the input {list(derived)}. Set one of the two keys (the other follows)."
                )
            return derived
        if input_size is not None:
            return tuple(input_size)
        side = self.clip.visual.image_size
        return tuple(side) if isinstance(side, (tuple, list)) else (side, side)

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

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            images: (B, 3, h, w) CLIP-normalised, at ``input_size``.
        Returns:
            "dense": (B, D, H, W) joint-space features of every patch, and the enabled guidance
            maps "guidance_2x": (B, C0, 2H, 2W), "guidance_4x": (B, C1, 4H, 4W).
        """
        visual = self.clip.visual
        x = visual.conv1(images)
        B, E, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(B, 1, E)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding((H, W)).to(x.dtype)
        x = visual.ln_pre(x)

        blocks = visual.transformer.resblocks
        intermediate = {}
        # Without autograd the blocks run in place (fast_paths): keep copies of what is stored.
        with blocks_in_place(blocks[:-1]):
            for index, block in enumerate(blocks[:-1]):
                x = block(x)
                if index in self.guidance_blocks:
                    intermediate[index] = x.clone()
        x = self._dense_block(blocks[-1], x)
        x = visual.ln_post(x) @ visual.proj

        def grid(tokens):
            return tokens[:, 1:].transpose(1, 2).reshape(B, -1, H, W)

        features = {DENSE: grid(x)}
        for name, up, index in zip(GUIDANCE, self.guidance_upsample, self.guidance_blocks):
            if up is not None:
                features[name] = up(grid(intermediate[index]))
        return features

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, 77) token ids -> (N, D) text embeddings (not normalised).

        open_clip's ``encode_text``, run on the first ``max(EOT position) + 1`` tokens only: the
        text tower is causal, so the zero-padding after the last EOT token cannot change any
        EOT feature (the same numbers up to float rounding; ~5x less work for short prompts).
        """
        clip = self.clip
        eot = tokens.argmax(dim=-1)  # EOT is the largest token id, as in open_clip's pooling
        # (Meta tensors carry no values: they keep the whole context.)
        length = tokens.shape[1] if tokens.is_meta else int(eot.max()) + 1
        tokens = tokens[:, :length]
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)
        x = x + clip.positional_embedding[:length].to(cast_dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return x @ clip.text_projection
