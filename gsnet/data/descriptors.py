"""Datasets of one's own, described by a small file instead of Python.

A descriptor is a YAML file (or a JSON object) such as::

    name: parcels_val                 # the registered name (DATASETS.TRAIN / DATASETS.TEST)
    images: parcels/images            # folders, absolute or relative to this file's folder
    labels: parcels/masks
    image_suffix: .tif                # file extensions (default .png); images and labels pair
    label_suffix: .png                #   by file name without extension
    classes: [field, forest, road]    # or a class-name JSON file, relative to this file
    ignore_label: 255                 # default 255
    label_mapping: {0: 255, 1: 0, 2: 1, 3: 2}   # only when the files do not hold 0..T-1

``label_mapping`` maps file values to class indices (or to the ignore label); values not listed
are kept (in a JSON descriptor the keys are strings of digits). Every field other than name,
images, labels and classes is optional; an unknown field is an error (a typo would otherwise be
ignored).

:func:`register_descriptor` registers the dataset like a row of the built-in table
(:func:`gsnet.data.datasets.register_dataset`): its metadata's ``class_json`` is the descriptor
itself, which :func:`gsnet.data.class_names.load_class_names` reads as its class list. Configs
name descriptors in ``DATASETS.DESCRIPTORS``; tools/check_datasets.py takes ``--descriptor``.
A bad descriptor raises :class:`gsnet.errors.DescriptorError` with a one-line message naming the
file and the field.
"""

import logging
import re
from pathlib import Path

from ..errors import DescriptorError
from .class_names import descriptor_class_names, read_structured_file, resolve_config_path
from .datasets import GSNET_DATASETS, DatasetSpec, register_dataset

logger = logging.getLogger(__name__)

__all__ = ["read_descriptor", "register_descriptor", "register_descriptors"]

_REQUIRED_FIELDS = ("name", "images", "labels", "classes")
_OPTIONAL_FIELDS = {"image_suffix": ".png", "label_suffix": ".png", "ignore_label": 255}
_ALLOWED_FIELDS = _REQUIRED_FIELDS + tuple(_OPTIONAL_FIELDS) + ("label_mapping",)
_SUFFIX = re.compile(r"\.?[A-Za-z0-9]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# Label files are 8- or 16-bit images.
_MAX_LABEL_VALUE = 65535


def _is_label_value(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_LABEL_VALUE


def _field_error(file, field, problem):
    return DescriptorError(f"{file}: field '{field}': {problem}")


def _name(file, descriptor):
    name = descriptor["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _field_error(
            file, "name", f"got {name!r}; give letters, digits and _ . + - (e.g. parcels_val)."
        )
    if name in {spec.name for spec in GSNET_DATASETS}:
        raise _field_error(file, "name", f"'{name}' is a built-in dataset; choose another name.")
    return name


def _folder(file, descriptor, field):
    folder = descriptor[field]
    if not isinstance(folder, str) or not folder.strip():
        raise _field_error(file, field, f"got {folder!r}; give a folder path.")
    return str((file.parent / Path(folder).expanduser()).resolve())


def _suffix(file, descriptor, field):
    suffix = descriptor.get(field, _OPTIONAL_FIELDS[field])
    if not isinstance(suffix, str) or not _SUFFIX.fullmatch(suffix):
        raise _field_error(
            file, field, f"got {suffix!r}; give a file extension such as .png, .jpg or .tif."
        )
    return suffix.lstrip(".")


def _ignore_label(file, descriptor):
    ignore_label = descriptor.get("ignore_label", _OPTIONAL_FIELDS["ignore_label"])
    if not _is_label_value(ignore_label):
        raise _field_error(
            file, "ignore_label", f"got {ignore_label!r}; give a label value 0..65535 (often 255)."
        )
    return ignore_label


def _label_mapping(file, descriptor, num_classes, ignore_label):
    label_mapping = descriptor.get("label_mapping") or {}
    if not isinstance(label_mapping, dict):
        raise _field_error(
            file,
            "label_mapping",
            f"got {label_mapping!r:.60}; give a mapping {{file value: class index}}.",
        )
    pairs = []
    for file_value, class_index in label_mapping.items():
        if isinstance(file_value, str) and file_value.isdigit():  # JSON keys are strings
            file_value = int(file_value)
        if not _is_label_value(file_value):
            raise _field_error(
                file, "label_mapping", f"key {file_value!r} is not a label value 0..65535."
            )
        if not (_is_label_value(class_index) and class_index < num_classes) and (
            class_index != ignore_label
        ):
            raise _field_error(
                file,
                "label_mapping",
                f"{file_value} maps to {class_index!r}, which is neither a class index "
                f"(0..{num_classes - 1}) nor the ignore label {ignore_label}.",
            )
        pairs.append((file_value, class_index))
    return tuple(sorted(pairs))


def read_descriptor(path):
    """Read and check a descriptor file.

    Args:
        path (str or Path): the file; a relative path is resolved against the current directory,
            then the repository root.

    Returns:
        DatasetSpec: the dataset, with absolute folders and ``class_json`` = the descriptor file.

    Raises:
        FileNotFoundError: the file does not exist.
        DescriptorError: the file does not parse, or a field is missing, unknown or bad.
    """
    file = resolve_config_path(path)
    try:
        descriptor = read_structured_file(file)
    except ValueError as e:
        message = str(e)
        raise DescriptorError(
            message if message.startswith(str(file)) else f"{file}: not a dataset descriptor: {e}"
        ) from None
    if not isinstance(descriptor, dict):
        raise DescriptorError(
            f"{file}: a dataset descriptor is a mapping of fields ({', '.join(_REQUIRED_FIELDS)}, "
            f"...), got a {type(descriptor).__name__}."
        )
    unknown = sorted(set(descriptor) - set(_ALLOWED_FIELDS), key=str)
    if unknown:
        raise _field_error(
            file, unknown[0], f"unknown field; the fields are {', '.join(_ALLOWED_FIELDS)}."
        )
    missing = [field for field in _REQUIRED_FIELDS if field not in descriptor]
    if missing:
        raise _field_error(file, missing[0], "missing; every descriptor needs it.")
    classes = descriptor_class_names(file, descriptor)
    ignore_label = _ignore_label(file, descriptor)
    return DatasetSpec(
        name=_name(file, descriptor),
        image_dir=_folder(file, descriptor, "images"),
        label_dir=_folder(file, descriptor, "labels"),
        image_ext=_suffix(file, descriptor, "image_suffix"),
        label_ext=_suffix(file, descriptor, "label_suffix"),
        class_json=str(file),
        num_json_classes=len(classes),
        ignore_label=ignore_label,
        benchmark="descriptor",
        label_mapping=_label_mapping(file, descriptor, len(classes), ignore_label),
    )


def register_descriptor(path):
    """Register the dataset of a descriptor file (replacing an earlier one of its name).

    Returns:
        str: the registered name.
    """
    spec = read_descriptor(path)
    register_dataset(spec, str(Path(spec.class_json).parent))
    logger.info("Registered dataset '%s' from %s", spec.name, spec.class_json)
    return spec.name


def register_descriptors(paths):
    """Register the datasets of several descriptor files (``DATASETS.DESCRIPTORS``).

    Returns:
        list[str]: the registered names, in order.
    """
    return [register_descriptor(path) for path in paths]
