"""GSNet: open-vocabulary remote-sensing semantic segmentation on Detectron2.

Importing this package registers the GSNet meta-architecture, its head and the datasets with
Detectron2's registries.
"""

from . import data, modeling  # noqa: F401  (registrations)
from .checkpoint import GSNetCheckpointer
from .config import add_gsnet_config
from .gsnet_model import GSNet
from .predictor import Predictor

__version__ = "0.1.0"

__all__ = ["GSNet", "GSNetCheckpointer", "Predictor", "add_gsnet_config"]
