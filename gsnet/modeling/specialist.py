"""The specialist stream: a remote-sensing ViT (ViT-B/8 in DINO layout, timm's VisionTransformer).

Shapes: B images, E specialist width (768), D joint width of the cost volume (512),
G x G the specialist's token grid (48 x 48 at 384 x 384 input), which is twice the cost-volume
grid (24 x 24).

What the wrapper does beyond timm's model (reproducing the published code):
- the positional grid of the pretraining resolution is resized with F.interpolate bicubic and a
  SCALE FACTOR of (G + 0.1) / G_pretrain (DINO's recipe) rather than a target size: the output
  has G rows, but the sampling positions differ from ``size=G``;
- the outputs of the needed blocks pass through the final LayerNorm (DINO's intermediate layers);
- the last block's tokens go through a stride-2 convolution to the cost-volume grid and width;
  two intermediate blocks become decoder guidance.
"""

from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from .generalist import buffered_linear, runs_without_autograd

__all__ = ["SPECIALIST_ARCHITECTURES", "SpecialistEncoder"]

# Named specialist architectures. ``pretrain_grid``: side of the positional grid stored in the
# weights (224 / 8 = 28 for ViT-B/8).
SPECIALIST_ARCHITECTURES = {
    "vit_base_patch8": {
        "patch_size": 8,
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "pretrain_grid": 28,
    },
    "toy": {"patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 2, "pretrain_grid": 8},
}


class SpecialistEncoder(nn.Module):
    """Remote-sensing ViT -> dense features at the cost-volume grid + decoder guidance."""

    def __init__(
        self,
        *,
        arch: str,
        feature_resolution: tuple[int, int],
        out_channels: int,
        guidance_channels: tuple[int, int],
    ):
        """
        Args:
            arch: a key of ``SPECIALIST_ARCHITECTURES``.
            feature_resolution: the cost-volume grid (H, W); the specialist runs at twice that
                grid, so its input is 2 * H * patch pixels (384 in the paper).
            out_channels: channels of the dense feature (the CLIP joint width, 512).
            guidance_channels: channels of the two decoder-guidance maps (2x and 4x the
                cost-volume grid); (0, 0) leaves the guidance out.
        """
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if arch not in SPECIALIST_ARCHITECTURES:
            raise ValueError(
                f"Unknown specialist architecture {arch!r} (MODEL.SEM_SEG_HEAD.DINO_ARCH); "
                f"choose one of {sorted(SPECIALIST_ARCHITECTURES)}."
            )
        spec = SPECIALIST_ARCHITECTURES[arch]
        self.patch_size = spec["patch_size"]
        self.grid = tuple(2 * g for g in feature_resolution)
        self.input_size = tuple(g * self.patch_size for g in self.grid)
        self.vit = VisionTransformer(
            img_size=spec["pretrain_grid"] * self.patch_size,
            patch_size=self.patch_size,
            embed_dim=spec["embed_dim"],
            depth=spec["depth"],
            num_heads=spec["num_heads"],
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_classes=0,
        )
        width = spec["embed_dim"]
        depth = spec["depth"]
        self.width = width
        # Blocks 3 and 7 of 12: a third and two thirds of the depth, as for the generalist.
        self.guidance_blocks = (depth // 3 - 1, 2 * depth // 3 - 1)
        self.dense_projection = nn.Conv2d(width, out_channels, kernel_size=2, stride=2)
        # The published code creates both guidance maps when the FIRST guidance width is set.
        if guidance_channels[0]:
            self.guidance_projection = nn.ModuleList(
                [
                    nn.Conv2d(width, guidance_channels[0], kernel_size=1),
                    nn.ConvTranspose2d(width, guidance_channels[1], kernel_size=2, stride=2),
                ]
            )
        else:
            self.guidance_projection = None

    @staticmethod
    def _block_in_place(block, x, buffers):
        """timm's Block without autograd, updating ``x`` in place and reusing ``buffers`` (the
        same operations and numbers as ``block(x)``)."""
        B, L, E = x.shape
        attn, mlp = block.attn, block.mlp
        qkv = buffered_linear(buffers, "qkv", block.norm1(x), attn.qkv.weight, attn.qkv.bias)
        q, k, v = qkv.view(B, L, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, E)
        x.add_(buffered_linear(buffers, "proj", out, attn.proj.weight, attn.proj.bias))
        hidden = buffered_linear(buffers, "fc1", block.norm2(x), mlp.fc1.weight, mlp.fc1.bias)
        torch.ops.aten.gelu_(hidden)
        x.add_(buffered_linear(buffers, "fc2", hidden, mlp.fc2.weight, mlp.fc2.bias))
        return x

    def _in_place_ok(self, x):
        identity = nn.Identity
        return runs_without_autograd(self.vit, x) and all(
            block.attn.fused_attn
            and all(
                isinstance(m, identity)
                for m in (block.ls1, block.ls2, block.drop_path1, block.drop_path2)
            )
            and all(
                isinstance(m, identity)
                for m in (block.attn.q_norm, block.attn.k_norm, block.attn.norm, block.mlp.norm)
            )
            and isinstance(block.mlp.act, nn.GELU)
            and block.mlp.act.approximate == "none"
            and block.attn.attn_drop.p == 0
            and block.attn.proj_drop.p == 0
            and block.mlp.drop1.p == 0
            and block.mlp.drop2.p == 0
            for block in self.vit.blocks
        )

    def positional_embedding(self) -> torch.Tensor:
        """(1, 1 + G*G, E): the pretraining grid resized by DINO's scale-factor recipe."""
        pos = self.vit.pos_embed
        side = int(round((pos.shape[1] - 1) ** 0.5))
        if (side, side) == self.grid:
            return pos
        if self.grid[0] != self.grid[1]:
            raise ValueError(f"the specialist needs a square token grid, got {self.grid}")
        scale = (self.grid[0] + 0.1) / side
        patch_pos = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, scale_factor=(scale, scale), mode="bicubic")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
        return torch.cat([pos[:, :1], patch_pos], dim=1)

    def forward(self, images: torch.Tensor) -> dict[str, object]:
        """
        Args:
            images: (B, 3, 2H * patch, 2W * patch), CLIP-normalised (as published).
        Returns:
            dict with "dense": (B, D, H, W) and "guidance": [(B, C0, 2H, 2W), (B, C1, 4H, 4W)]
            (None entries when the guidance is disabled).
        """
        vit = self.vit
        x = vit.patch_embed.proj(images)
        B, E, Gh, Gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([vit.cls_token.expand(B, -1, -1), x], dim=1) + self.positional_embedding()

        def grid(tokens):
            return vit.norm(tokens)[:, 1:].transpose(1, 2).reshape(B, E, Gh, Gw)

        # Without autograd (inference; the frozen specialist in training) the blocks run in
        # place on reused buffers: the same numbers, fewer fresh allocations.
        in_place = self._in_place_ok(x)
        buffers = {}
        guidance_inputs = []
        for index, block in enumerate(vit.blocks):
            x = self._block_in_place(block, x, buffers) if in_place else block(x)
            if self.guidance_projection is not None and index in self.guidance_blocks:
                guidance_inputs.append(grid(x))
        dense = self.dense_projection(grid(x))
        if self.guidance_projection is None:
            guidance = [None, None]
        else:
            guidance = [proj(g) for proj, g in zip(self.guidance_projection, guidance_inputs)]
        return {"dense": dense, "guidance": guidance}
