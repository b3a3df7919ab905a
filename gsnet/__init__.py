"""GSNet: open-vocabulary remote-sensing semantic segmentation on Detectron2.

Importing this package registers the GSNet meta-architecture, its head and the datasets with
Detectron2's registries.
"""

from .config import add_gsnet_config

__version__ = "0.1.0"

__all__ = ["add_gsnet_config"]
