"""GSNet's semantic-segmentation head: fusion -> cost aggregation -> decoder.

Shapes: B images, T classes, D the joint width (512), C the cost-embedding width (128),
H x W the cost-volume grid (24 x 24).
"""

from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..errors import ConfigError
from .aggregation import AggregatorLayer
from .decoder import build_decoder
from .encoder import DENSE
from .fusion import build_fusion
from .precision import autocast_disabled, autocast_enabled

__all__ = ["GSNetHead"]


def _float(features):
    """An encoder's feature dict with every tensor in fp32 (None kept)."""
    if features is None:
        return None
    return {name: tensor.float() for name, tensor in features.items()}


def _guidance_input_dim(key: str, value: int, feature_dim: int) -> int:
    """The input width of a guidance projection: D, or 0 (off); a published value that
    contradicts D is a ConfigError naming both."""
    if value < 0:
        return feature_dim
    if value not in (0, feature_dim):
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.{key}={value} contradicts the generalist's embedding width "
            f"{feature_dim}: leave {key} unset (it is derived), or set it to {feature_dim} "
            "(or 0 to turn this guidance off)."
        )
    return value


@SEM_SEG_HEADS_REGISTRY.register()
class GSNetHead(nn.Module):
    """Fuses the streams' cost volumes, aggregates them and decodes per-class logits."""

    @configurable
    def __init__(
        self,
        *,
        fusion: nn.Module,
        decoder: nn.Module,
        feature_dim: int,
        hidden_dim: int,
        feature_resolution,
        num_layers: int,
        num_heads: int,
        window_size: int,
        pooling_size,
        attention_type: str,
        appearance_guidance_dim: int,
        appearance_guidance_proj_dim: int,
        text_guidance_dim: int,
        text_guidance_proj_dim: int,
        fp32_at_inference: bool = True,
    ):
        """
        Args:
            fusion: the cost-volume fusion (gsnet/modeling/fusion.py).
            decoder: the decoder (gsnet/modeling/decoder.py).
            feature_dim: D, width of the dense features and text embeddings.
            hidden_dim: C, width of the cost embedding.
            feature_resolution: (H, W) of the cost volume.
            num_layers, num_heads, window_size, pooling_size, attention_type: the aggregator.
            appearance_guidance_dim, appearance_guidance_proj_dim: dense-feature guidance of the
                spatial aggregation (0 disables it).
            text_guidance_dim, text_guidance_proj_dim: text guidance of the class aggregation
                (0 disables it).
            fp32_at_inference: under autocast (TEST.PRECISION bfloat16/float16), run the head
                in fp32 at inference; the encoders, most of the FLOPs, stay in low precision.
                In bf16 the per-class scores lose their ranking (the class scores differ by
                less than bf16's resolution; README, "Speed"). Training autocast is not
                affected.
        """
        super().__init__()
        self.fp32_at_inference = fp32_at_inference
        self.fusion = fusion
        self.appearance_guidance = (
            nn.Sequential(
                nn.Conv2d(appearance_guidance_dim, appearance_guidance_proj_dim, 3, padding=1),
                nn.ReLU(),
            )
            if appearance_guidance_dim > 0
            else None
        )
        self.text_guidance = (
            nn.Sequential(nn.Linear(text_guidance_dim, text_guidance_proj_dim), nn.ReLU())
            if text_guidance_dim > 0
            else None
        )
        self.layers = nn.ModuleList(
            AggregatorLayer(
                dim=hidden_dim,
                appearance_guidance_dim=appearance_guidance_proj_dim,
                text_guidance_dim=text_guidance_proj_dim,
                num_heads=num_heads,
                resolution=feature_resolution,
                window_size=window_size,
                pooling_size=pooling_size,
                attention_type=attention_type,
            )
            for _ in range(num_layers)
        )
        self.decoder = decoder

    @classmethod
    def from_config(cls, cfg, input_shape):
        """``input_shape``: {"generalist": ..., "specialist": ...}, each the encoder's
        ``output_shape()`` or None for a stream that is off; every width and the grid come from
        the generalist's "dense" map."""
        head = cfg.MODEL.SEM_SEG_HEAD
        dense = input_shape["generalist"][DENSE]
        feature_dim = dense.channels
        specialist = input_shape.get("specialist")
        if specialist is not None:
            s = specialist[DENSE]
            if (s.channels, s.height, s.width) != (feature_dim, dense.height, dense.width):
                raise ConfigError(
                    f"The specialist's dense map is {s.channels} x {s.height} x {s.width}, the "
                    f"generalist's {feature_dim} x {dense.height} x {dense.width}: a specialist "
                    "must produce the generalist's width and cost-volume grid."
                )
        return {
            "fusion": build_fusion(cfg, feature_dim=feature_dim, embed_dim=head.HIDDEN_DIMS),
            "decoder": build_decoder(cfg, in_channels=head.HIDDEN_DIMS, input_shapes=input_shape),
            "feature_dim": feature_dim,
            "hidden_dim": head.HIDDEN_DIMS,
            "feature_resolution": (dense.height, dense.width),
            "num_layers": head.NUM_LAYERS,
            "num_heads": head.NUM_HEADS,
            "window_size": head.WINDOW_SIZES,
            "pooling_size": tuple(head.POOLING_SIZES),
            "attention_type": head.ATTENTION_TYPE,
            "appearance_guidance_dim": _guidance_input_dim(
                "APPEARANCE_GUIDANCE_DIM", head.APPEARANCE_GUIDANCE_DIM, feature_dim
            ),
            "appearance_guidance_proj_dim": head.APPEARANCE_GUIDANCE_PROJ_DIM,
            "text_guidance_dim": _guidance_input_dim(
                "TEXT_GUIDANCE_DIM", head.TEXT_GUIDANCE_DIM, feature_dim
            ),
            "text_guidance_proj_dim": head.TEXT_GUIDANCE_PROJ_DIM,
        }

    def forward(self, generalist, specialist, text):
        """See ``_forward``; under autocast at inference the head runs in fp32 (see
        ``fp32_at_inference``)."""
        device_type = text.device.type
        if self.fp32_at_inference and not self.training and autocast_enabled(device_type):
            with autocast_disabled(device_type):
                return self._forward(_float(generalist), _float(specialist), text.float())
        return self._forward(generalist, specialist, text)

    def _forward(self, generalist, specialist, text):
        """
        Args:
            generalist, specialist: encoder outputs ({"dense": (B, D, H, W), guidance maps})
                or None for a stream that is off.
            text: (T, D) normalised text embeddings.
        Returns:
            (B, T, 4H, 4W) logits.
        """
        generalist_dense = generalist[DENSE] if generalist is not None else None
        specialist_dense = specialist[DENSE] if specialist is not None else None
        cost = self.fusion(generalist_dense, specialist_dense, text)

        appearance = None
        if self.appearance_guidance is not None:
            # The single-specialist ablation guides with the specialist's dense feature.
            source = generalist_dense if generalist_dense is not None else specialist_dense
            appearance = self.appearance_guidance(source)
        text_guidance = None
        if self.text_guidance is not None:
            text_guidance = self.text_guidance(text).unsqueeze(0).expand(cost.shape[0], -1, -1)
        for layer in self.layers:
            cost = layer(cost, appearance, text_guidance)

        return self.decoder(cost, generalist, specialist)
