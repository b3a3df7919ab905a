"""GSNet's data: class-name files, the registered datasets, dataset descriptors, the mappers and
the resumable training stream.

Importing this package registers the table's datasets (the paper's LandDiscover_50K, FloodNet,
FLAIR_test, FAST_val and potsdam_all; OVRSISBench's; OpenEarthMap) under
``$DETECTRON2_DATASETS`` (default ``datasets``); descriptors register datasets of one's own.
"""

from .class_names import CLASS_JSON_DIR, load_class_names, resolve_config_path
from .dataset_mapper import GSNetSemanticDatasetMapper, GSNetTestDatasetMapper
from .datasets import GSNET_DATASETS, get_dataset_spec, register_gsnet_datasets
from .descriptors import read_descriptor, register_descriptor, register_descriptors
from .sampling import ResumableTrainLoader
from .toy_datasets import make_toy_datasets

__all__ = [
    "CLASS_JSON_DIR",
    "GSNET_DATASETS",
    "GSNetSemanticDatasetMapper",
    "GSNetTestDatasetMapper",
    "ResumableTrainLoader",
    "get_dataset_spec",
    "load_class_names",
    "make_toy_datasets",
    "read_descriptor",
    "register_descriptor",
    "register_descriptors",
    "register_gsnet_datasets",
    "resolve_config_path",
]
