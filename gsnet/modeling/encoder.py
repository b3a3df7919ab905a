"""What every image encoder of GSNet publishes, and the pieces both streams share.

An encoder (a generalist or a specialist) resizes nothing itself: the meta-architecture resizes
the normalised image to the encoder's ``input_size`` and calls it. It returns named feature maps
and declares them in ``output_shape()`` (Detectron2's ``ShapeSpec``: channels, height, width,
stride in input pixels), from which the fusion, the head and the decoder take every width and
grid:

- ``DENSE`` ("dense"): (B, D, H, W) features in the text queries' joint space (D = the text
  embedding width) on the cost-volume grid H x W;
- ``GUIDANCE`` ("guidance_2x", "guidance_4x"): decoder guidance at 2x and 4x the cost-volume
  grid; an encoder without guidance leaves them out.

Shapes: B images, D joint width, H x W the cost-volume grid.
"""

from fractions import Fraction

from detectron2.layers import ShapeSpec
from torch import nn

from ..errors import ConfigError

__all__ = ["DENSE", "GUIDANCE", "Encoder", "resampling_conv", "token_grid"]

DENSE = "dense"
GUIDANCE = ("guidance_2x", "guidance_4x")
# Scale of each guidance map relative to the cost-volume grid.
GUIDANCE_SCALES = (2, 4)


class Encoder(nn.Module):
    """Base class of the generalist and specialist encoders (the registries' contract).

    Subclasses set ``input_size`` ((h, w) pixels the image is resized to), declare their
    features by setting ``_output_shapes`` (name -> ShapeSpec) or by overriding
    ``output_shape()``, and implement ``forward(images) -> {name: tensor}`` with exactly the
    names of ``output_shape()``. ``pretrained_module`` is the module whose
    parameters come from pretraining (the optimizer's LR multiplier applies to them); the
    encoder sets ``requires_grad`` of its parameters itself (its fine-tuning mode).
    """

    input_size: tuple[int, int]

    @property
    def pretrained_module(self) -> nn.Module:
        """The part that came from pretraining (default: the whole encoder)."""
        return self

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._output_shapes)


def token_grid(input_size, patch_size, *, what: str, key: str) -> tuple[int, int]:
    """The token grid of a ViT at ``input_size``; a size that is not a multiple of the patch is
    a ConfigError that names the sizes to use instead."""
    grid = []
    for side in input_size:
        if side % patch_size:
            lower = max(patch_size, side // patch_size * patch_size)
            upper = (side // patch_size + 1) * patch_size
            raise ConfigError(
                f"{key}={list(input_size)}: the {what} has {patch_size}-pixel patches, so its "
                f"input sides must be multiples of {patch_size} (e.g. {lower} or {upper})."
            )
        grid.append(side // patch_size)
    return tuple(grid)


def resampling_conv(in_channels: int, out_channels: int, factor: Fraction) -> nn.Module:
    """A learned resampling of a feature map by ``factor``: a transposed convolution with kernel
    = stride = factor above 1, a 1x1 convolution at 1, a convolution with kernel = stride =
    1/factor below 1 (the published guidance and dense projections are all of this kind)."""
    if factor > 1:
        if factor.denominator != 1:
            raise ValueError(f"cannot resample by {factor}: not a whole factor")
        k = int(factor)
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=k, stride=k)
    if factor.numerator != 1:
        raise ValueError(f"cannot resample by {factor}: not the inverse of a whole factor")
    k = factor.denominator
    return nn.Conv2d(in_channels, out_channels, kernel_size=k, stride=k)
