"""GSNet's building blocks: encoders, text queries, fusion, aggregation, decoder and head.

The four swappable parts have registries (see README, "Components and backbones"):
GENERALIST_REGISTRY, SPECIALIST_REGISTRY, FUSION_REGISTRY and DECODER_REGISTRY.
"""

from .decoder import DECODER_REGISTRY
from .fusion import FUSION_REGISTRY
from .generalist import GENERALIST_REGISTRY
from .gsnet_head import GSNetHead
from .specialist import SPECIALIST_REGISTRY

__all__ = [
    "DECODER_REGISTRY",
    "FUSION_REGISTRY",
    "GENERALIST_REGISTRY",
    "SPECIALIST_REGISTRY",
    "GSNetHead",
]
