"""The specialist stream: a remote-sensing ViT from timm, and the specialist registry.

Shapes: B images, E specialist width (768 for ViT-B/8), D joint width of the cost volume (512),
G x G the specialist's token grid (48 x 48 at the paper's 384 x 384 input), H x W the
cost-volume grid (24 x 24): G must be a whole multiple or fraction of H (the ratio r = G / H is
2 in the paper).

Any timm ViT with ``forward_intermediates`` can be the specialist, by its timm name: the paper's
ViT-B/8 in DINO layout (``vit_base_patch8_224``, published name "vit_base_patch8"), DINOv2
(``vit_base_patch14_dinov2``, ``vit_base_patch14_reg4_dinov2``), DINOv3
(``vit_large_patch16_dinov3``, the architecture of the ``.sat493m`` satellite weights), ...
What the wrapper adds:
- timm's ``forward_intermediates`` gives the outputs of the blocks at a third, two thirds and
  all of the depth, each through the final norm (DINO's "intermediate layers");
- the last block's tokens are resampled to the cost-volume grid and width (a stride-r
  convolution in the paper); the two intermediate blocks become decoder guidance at 2x and 4x
  the cost-volume grid;
- the paper's specialist resizes its positional grid by DINO's recipe
  (``dino_positional_embedding``); other timm models keep timm's own (``dynamic_img_size``).
"""

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
    "SPECIALIST_ARCHITECTURES",
    "SPECIALIST_REGISTRY",
    "TimmSpecialistEncoder",
    "build_specialist",
    "dino_positional_embedding",
]

SPECIALIST_REGISTRY = Registry("SPECIALIST_ENCODER")
SPECIALIST_REGISTRY.__doc__ = """
Registry of specialist encoders: the remote-sensing stream. Selected by
MODEL.SEM_SEG_HEAD.SPECIALIST_ENCODER; an entry is called as ``entry(cfg, cost_volume_shape)``,
where ``cost_volume_shape`` is the generalist's "dense" ShapeSpec (channels D, the cost-volume
grid), and returns an ``Encoder`` (gsnet/modeling/encoder.py) whose "dense" map has D channels on
that grid (and optionally the two decoder guidance maps at 2x and 4x the grid).
"""

SPECIALIST_FINETUNE_MODES = ("freeze", "attention", "full")

# Published names of MODEL.SEM_SEG_HEAD.DINO_ARCH as timm models; any other value is taken as a
# timm model name. "positions": "dino" resizes the positional grid by DINO's recipe (the paper's
# specialist), "timm" by timm's own (``dynamic_img_size``). "toy" is a narrow ViT for the tests
# and the toy default.
SPECIALIST_ARCHITECTURES = {
    "vit_base_patch8": {"timm_name": "vit_base_patch8_224", "positions": "dino"},
    "toy": {
        "timm_name": "vit_base_patch8_224",
        "positions": "dino",
        "model_kwargs": {"img_size": 64, "embed_dim": 64, "depth": 4, "num_heads": 2},
    },
}


def dino_positional_embedding(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + G0*G0, E) -> (1, 1 + G*G, E): DINO's positional-grid resize.

    F.interpolate bicubic with a SCALE FACTOR of (G + 0.1) / G0 rather than a target size: the
    output has G rows, but the sampling positions differ from ``size=G`` (by up to 0.35 on the
    paper's weights), and the released model was trained with these.
    """
    side = int(round((pos.shape[1] - 1) ** 0.5))
    if (side, side) == tuple(grid):
        return pos
    if grid[0] != grid[1]:
        raise ConfigError(
            f"The specialist's DINO positional recipe needs a square token grid, got {grid}: "
            "set MODEL.SEM_SEG_HEAD.SPECIALIST_INPUT_SIZE to a square size."
        )
    scale = (grid[0] + 0.1) / side
    patch_pos = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, scale_factor=(scale, scale), mode="bicubic")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
    return torch.cat([pos[:, :1], patch_pos], dim=1)


def _timm_model(arch: str) -> tuple[nn.Module, str, str]:
    """A timm model (random weights, no classifier, any input size), its timm name and its
    positional recipe."""
    import timm

    spec = SPECIALIST_ARCHITECTURES.get(arch, {"timm_name": arch, "positions": "timm"})
    name = spec["timm_name"]
    if not timm.is_model(name):
        raise ConfigError(
            f"Unknown specialist architecture {arch!r} (MODEL.SEM_SEG_HEAD.DINO_ARCH): give one "
            f"of {sorted(SPECIALIST_ARCHITECTURES)} or a timm ViT name, e.g. "
            "vit_base_patch14_dinov2, vit_base_patch14_reg4_dinov2, vit_large_patch16_dinov3 "
            "(timm.list_models('vit_*') lists them)."
        )
    model = timm.create_model(
        name, pretrained=False, num_classes=0, dynamic_img_size=True, **spec.get("model_kwargs", {})
    )
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
        raise ConfigError(
            f"Specialist {arch!r} (MODEL.SEM_SEG_HEAD.DINO_ARCH): GSNet needs a timm ViT with "
            f"forward_intermediates; {type(model).__name__} has none."
        )
    return model, name, spec["positions"]


def build_specialist(cfg, cost_volume_shape: ShapeSpec) -> Encoder:
    """The specialist encoder named by MODEL.SEM_SEG_HEAD.SPECIALIST_ENCODER."""
    name = cfg.MODEL.SEM_SEG_HEAD.SPECIALIST_ENCODER
    key = "MODEL.SEM_SEG_HEAD.SPECIALIST_ENCODER"
    return registered(SPECIALIST_REGISTRY, name, key=key)(cfg, cost_volume_shape)


@SPECIALIST_REGISTRY.register()
class TimmSpecialistEncoder(Encoder):
    """A timm ViT -> dense features on the cost-volume grid + decoder guidance.

    The timm model lives in ``self.vit`` (its parameters are the "backbone" of the optimizer's
    BACKBONE_MULTIPLIER).
    """

    @configurable
    def __init__(
        self,
        *,
        arch: str,
        cost_volume_shape: ShapeSpec,
        input_size: tuple[int, int],
        guidance_channels: tuple[int, int] = (0, 0),
        finetune: str = "freeze",
    ):
        """
        Args:
            arch: a key of ``SPECIALIST_ARCHITECTURES`` or a timm model name.
            cost_volume_shape: the generalist's "dense" ShapeSpec: channels D and the grid
                (height, width) that the dense output must have.
            input_size: (h, w) pixels the image is encoded at (384 in the paper).
            guidance_channels: channels of the two decoder-guidance maps (2x and 4x the
                cost-volume grid); (0, 0) leaves the guidance out. The published code creates
                both maps when the FIRST width is set.
            finetune: "freeze" (paper), "attention" (qkv weights and the positional
                embedding), "full".
        """
        super().__init__()
        if finetune not in SPECIALIST_FINETUNE_MODES:
            raise ConfigError(
                f"Unknown MODEL.SEM_SEG_HEAD.DINO_FINETUNE {finetune!r}; choose one of "
                f"{SPECIALIST_FINETUNE_MODES}."
            )
        self.arch = arch
        self.vit, self.timm_name, positions = _timm_model(arch)
        self.input_size = tuple(input_size)
        patch = self.vit.patch_embed.patch_size
        self.patch_size = patch[0]
        key = "MODEL.SEM_SEG_HEAD.SPECIALIST_INPUT_SIZE"
        self.grid = token_grid(self.input_size, self.patch_size, what=f"specialist {arch}", key=key)
        cost_grid = (cost_volume_shape.height, cost_volume_shape.width)
        ratios = {Fraction(g, c) for g, c in zip(self.grid, cost_grid)}
        ratio = ratios.pop() if len(ratios) == 1 else None
        if ratio is None or (ratio.numerator != 1 and ratio.denominator != 1):
            raise ConfigError(
                f"{key}={list(self.input_size)} gives the specialist {arch} a "
                f"{self.grid[0]} x {self.grid[1]} token grid, which cannot be brought to the "
                f"{cost_grid[0]} x {cost_grid[1]} cost-volume grid (it must be a whole multiple "
                f"or fraction of it): use e.g. {self._sizes_that_fit(cost_grid)}."
            )
        if positions == "dino":
            self.vit._pos_embed = self._dino_pos_embed
        width = self.vit.embed_dim
        self.width = width
        depth = len(self.vit.blocks)
        # Blocks 3 and 7 of 12: a third and two thirds of the depth, as for the generalist.
        self.guidance_blocks = (depth // 3 - 1, 2 * depth // 3 - 1)
        D = cost_volume_shape.channels
        self.dense_projection = resampling_conv(width, D, 1 / ratio)
        self._output_shapes = {
            DENSE: ShapeSpec(channels=D, height=cost_grid[0], width=cost_grid[1])
        }
        if guidance_channels[0]:
            self.guidance_projection = nn.ModuleList(
                resampling_conv(width, channels, scale / ratio)
                for channels, scale in zip(guidance_channels, GUIDANCE_SCALES)
            )
            for name, channels, scale in zip(GUIDANCE, guidance_channels, GUIDANCE_SCALES):
                self._output_shapes[name] = ShapeSpec(
                    channels=channels, height=scale * cost_grid[0], width=scale * cost_grid[1]
                )
        else:
            self.guidance_projection = None
        self._set_finetuning(finetune)

    @property
    def pretrained_module(self) -> nn.Module:
        return self.vit

    @classmethod
    def from_config(cls, cfg, cost_volume_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        input_size = tuple(head.SPECIALIST_INPUT_SIZE)
        if not input_size:
            # Default: the generalist's input size (both streams see 384 x 384 in the paper).
            stride = cost_volume_shape.stride
            input_size = (cost_volume_shape.height * stride, cost_volume_shape.width * stride)
        return {
            "arch": head.DINO_ARCH,
            "cost_volume_shape": cost_volume_shape,
            "input_size": input_size,
            "guidance_channels": tuple(head.DECODER_DINO_GUIDANCE_DIMS),
            "finetune": head.DINO_FINETUNE,
        }

    def _sizes_that_fit(self, cost_grid) -> str:
        sizes = [
            f"[{cost_grid[0] * r * self.patch_size}, {cost_grid[1] * r * self.patch_size}]"
            for r in (1, 2)
        ]
        return " or ".join(sizes)

    def _set_finetuning(self, mode):
        for name, param in self.vit.named_parameters():
            if mode == "attention":
                param.requires_grad = "attn.qkv.weight" in name or "pos_embed" in name
            else:
                param.requires_grad = mode == "full"

    def _dino_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Replaces timm's ``VisionTransformer._pos_embed`` for the paper's specialist:
        (B, G, G, E) patch tokens -> (B, 1 + G*G, E) with the class token and DINO's positions."""
        vit = self.vit
        B, Gh, Gw, E = x.shape
        x = x.reshape(B, Gh * Gw, E)
        x = torch.cat([vit.cls_token.expand(B, -1, -1), x], dim=1)
        return vit.pos_drop(x + dino_positional_embedding(vit.pos_embed, (Gh, Gw)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            images: (B, 3, h, w) CLIP-normalised (as published), at ``input_size``.
        Returns:
            "dense": (B, D, H, W), and with guidance "guidance_2x": (B, C0, 2H, 2W) and
            "guidance_4x": (B, C1, 4H, 4W).
        """
        last = len(self.vit.blocks) - 1
        with_guidance = self.guidance_projection is not None
        indices = [*self.guidance_blocks, last] if with_guidance else [last]
        # Without autograd (inference; the frozen specialist in training) the blocks run in
        # place (fast_paths); timm stores normalised copies of the taken blocks' outputs.
        with blocks_in_place(self.vit.blocks):
            maps = self.vit.forward_intermediates(
                images, indices=indices, norm=True, output_fmt="NCHW", intermediates_only=True
            )
        features = {DENSE: self.dense_projection(maps[-1])}
        if with_guidance:
            for name, projection, guidance in zip(GUIDANCE, self.guidance_projection, maps):
                features[name] = projection(guidance)
        return features
