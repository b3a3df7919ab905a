"""GSNet's semantic-segmentation head: fusion -> cost aggregation -> decoder.

Shapes: B images, T classes, D the joint width (512), C the cost-embedding width (128),
H x W the cost-volume grid (24 x 24).
"""

import torch
from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from .aggregation import AggregatorLayer
from .decoder import RIPDecoder
from .fusion import CostVolumeFusion

__all__ = ["GSNetHead"]


def _float(features):
    """An encoder's output dict with every tensor in fp32 (None and None entries kept)."""
    if features is None:
        return None
    return {
        "dense": features["dense"].float(),
        "guidance": [g.float() if g is not None else None for g in features["guidance"]],
    }


@SEM_SEG_HEADS_REGISTRY.register()
class GSNetHead(nn.Module):
    """Fuses the streams' cost volumes, aggregates them and decodes per-class logits."""

    @configurable
    def __init__(
        self,
        *,
        use_generalist: bool,
        use_specialist: bool,
        fusion_type: str,
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
        decoder_dims,
        decoder_guidance_dims,
        generalist_guidance_proj_dims,
        specialist_guidance_proj_dims,
        fp32_at_inference: bool = True,
    ):
        """
        Args:
            use_generalist, use_specialist: which streams feed the cost volume.
            fusion_type: see ``CostVolumeFusion``.
            feature_dim: D, width of the dense features and text embeddings.
            hidden_dim: C, width of the cost embedding.
            feature_resolution: (H, W) of the cost volume.
            num_layers, num_heads, window_size, pooling_size, attention_type: the aggregator.
            appearance_guidance_dim, appearance_guidance_proj_dim: dense-feature guidance of the
                spatial aggregation (0 disables it).
            text_guidance_dim, text_guidance_proj_dim: text guidance of the class aggregation
                (0 disables it).
            decoder_dims, decoder_guidance_dims, generalist_guidance_proj_dims,
            specialist_guidance_proj_dims: see ``RIPDecoder``.
            fp32_at_inference: under autocast (TEST.PRECISION bfloat16/float16), run the head
                in fp32 at inference; the encoders, 85-97% of the FLOPs, stay in low precision.
                In bf16 the per-class scores lose their ranking (the class scores differ by
                less than bf16's resolution): on the toy model the argmax agreed with fp32 on
                68-78% of the pixels with a bf16 head, 99.7% with an fp32 head. Training
                autocast is not affected.
        """
        super().__init__()
        self.fp32_at_inference = fp32_at_inference
        self.fusion = CostVolumeFusion(
            fusion_type=fusion_type,
            use_generalist=use_generalist,
            use_specialist=use_specialist,
            feature_dim=feature_dim,
            embed_dim=hidden_dim,
        )
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
        self.decoder = RIPDecoder(
            in_channels=hidden_dim,
            decoder_dims=decoder_dims,
            guidance_dims=decoder_guidance_dims,
            generalist_proj_dims=generalist_guidance_proj_dims,
            specialist_proj_dims=specialist_guidance_proj_dims,
        )

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        head = cfg.MODEL.SEM_SEG_HEAD
        generalist_proj = list(head.DECODER_CLIP_GUIDANCE_PROJ_DIMS)
        specialist_proj = list(head.DECODER_DINO_GUIDANCE_PROJ_DIMS)
        for stream, used, dims, proj in (
            ("CLIP", head.USE_CLIP_CORR, head.DECODER_CLIP_GUIDANCE_DIMS, generalist_proj),
            ("DINO", head.USE_DINO_CORR, head.DECODER_DINO_GUIDANCE_DIMS, specialist_proj),
        ):
            if not used:
                # A stream that is off gives no decoder guidance either.
                proj[:] = [0, 0]
                continue
            if (dims[0] == 0) != (proj[0] == 0):
                raise ValueError(
                    f"MODEL.SEM_SEG_HEAD.DECODER_{stream}_GUIDANCE_DIMS={list(dims)} and "
                    f"DECODER_{stream}_GUIDANCE_PROJ_DIMS={proj} disagree: set both to [0, 0] to "
                    "remove this stream's decoder guidance, or both non-zero to keep it."
                )
            if dims[0] and list(dims) != list(head.DECODER_GUIDANCE_DIMS):
                raise ValueError(
                    f"MODEL.SEM_SEG_HEAD.DECODER_{stream}_GUIDANCE_DIMS={list(dims)} must equal "
                    f"DECODER_GUIDANCE_DIMS={list(head.DECODER_GUIDANCE_DIMS)} (the guidance "
                    "projections' input widths)."
                )
        return {
            "use_generalist": head.USE_CLIP_CORR,
            "use_specialist": head.USE_DINO_CORR,
            "fusion_type": head.FUSION_TYPE,
            "feature_dim": head.TEXT_GUIDANCE_DIM,
            "hidden_dim": head.HIDDEN_DIMS,
            "feature_resolution": tuple(head.FEATURE_RESOLUTION),
            "num_layers": head.NUM_LAYERS,
            "num_heads": head.NUM_HEADS,
            "window_size": head.WINDOW_SIZES,
            "pooling_size": tuple(head.POOLING_SIZES),
            "attention_type": head.ATTENTION_TYPE,
            "appearance_guidance_dim": head.APPEARANCE_GUIDANCE_DIM,
            "appearance_guidance_proj_dim": head.APPEARANCE_GUIDANCE_PROJ_DIM,
            "text_guidance_dim": head.TEXT_GUIDANCE_DIM,
            "text_guidance_proj_dim": head.TEXT_GUIDANCE_PROJ_DIM,
            "decoder_dims": list(head.DECODER_DIMS),
            "decoder_guidance_dims": list(head.DECODER_GUIDANCE_DIMS),
            "generalist_guidance_proj_dims": generalist_proj,
            "specialist_guidance_proj_dims": specialist_proj,
        }

    def forward(self, generalist, specialist, text):
        """See ``_forward``; under autocast at inference the head runs in fp32 (see
        ``fp32_at_inference``)."""
        device_type = text.device.type
        if self.fp32_at_inference and not self.training and torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                return self._forward(_float(generalist), _float(specialist), text.float())
        return self._forward(generalist, specialist, text)

    def _forward(self, generalist, specialist, text):
        """
        Args:
            generalist, specialist: encoder outputs ({"dense": (B, D, H, W), "guidance": [...]})
                or None for a stream that is off.
            text: (T, D) normalised text embeddings.
        Returns:
            (B, T, 4H, 4W) logits.
        """
        generalist_dense = generalist["dense"] if generalist is not None else None
        specialist_dense = specialist["dense"] if specialist is not None else None
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

        no_guidance = [None, None]
        return self.decoder(
            cost,
            generalist["guidance"] if generalist is not None else no_guidance,
            specialist["guidance"] if specialist is not None else no_guidance,
        )
