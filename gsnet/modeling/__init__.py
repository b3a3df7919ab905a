"""GSNet's building blocks: encoders, text queries, fusion, aggregation, decoder and head."""

from .gsnet_head import GSNetHead

__all__ = ["GSNetHead"]
