"""Class-name JSON files: the single reader of ``datasets/*.json``.

A class-name file is a JSON list of non-empty strings, e.g. ``["background", "bare land", ...]``.
The strings are the model's text queries, reproduced exactly as published (typos included):
the released weights were trained on them. A dataset descriptor (:mod:`gsnet.data.descriptors`,
a YAML file or a JSON object) is read as its ``classes`` field: a list of names, or a class-name
file relative to the descriptor's folder; so every place that takes a class-name file
(``TEST_CLASS_JSON``, a dataset's metadata ``class_json``, a tool's ``--classes``) takes a
descriptor too. Paths given in configs (``"datasets/potsdam.json"``)
are resolved relative to the current directory first, then to the repository root, so configs
work from any working directory.
"""

import json
import logging
from pathlib import Path

import yaml

from ..errors import ConfigError, DescriptorError, InputFileError, MissingFileError

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_JSON_DIR",
    "REPO_ROOT",
    "check_class_names",
    "descriptor_class_names",
    "load_class_names",
    "read_structured_file",
    "resolve_config_path",
]

# The repository checkout that holds this package (gsnet/data/class_names.py -> repo root).
REPO_ROOT = Path(__file__).resolve().parents[2]
# The repository's class-name JSONs (landdiscover.json, floodnet.json, ...).
CLASS_JSON_DIR = REPO_ROOT / "datasets"


def resolve_config_path(path):
    """Find a file named in a config.

    Args:
        path (str or Path): absolute, or relative to the current directory or to the repository
            root (tried in that order).

    Returns:
        Path: the absolute path of an existing file.

    Raises:
        FileNotFoundError: when no candidate exists; the message lists every place looked at.
    """
    path = Path(path).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO_ROOT / path]
    candidates = list(dict.fromkeys(candidates))  # once when run from the repository root
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = "\n".join(f"  {c}" for c in candidates)
    raise MissingFileError(
        f"File '{path}' not found. Looked at:\n{tried}\n"
        "Give an absolute path, or a path relative to the current directory or to the "
        f"repository root ({REPO_ROOT}); the published class lists are in {CLASS_JSON_DIR}."
    )


def load_class_names(path):
    """Read a class-name JSON file, or the class list of a dataset descriptor.

    Args:
        path (str or Path): the JSON file or the descriptor (``.yaml``/``.yml``, or ``.json``
            holding an object); a relative path is resolved by :func:`resolve_config_path`.

    Returns:
        list[str]: the class names, in file order (the model's channel order).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON, not a list, empty, holds an entry that is not a
            non-empty string, or names a class twice (CLIP lower-cases its input, so names that
            differ only in case are the same query).
        DescriptorError: a descriptor cannot be parsed, or its ``classes`` field is bad.
    """
    file = resolve_config_path(path)
    content = read_structured_file(file)
    # A JSON object without a 'classes' field is a mistaken class list, not a descriptor.
    if isinstance(content, dict) and ("classes" in content or file.suffix.lower() != ".json"):
        return descriptor_class_names(file, content)
    return _checked_names(file, content)


def read_structured_file(file):
    """Parse a JSON file (``.json``) or a YAML file (any other suffix).

    Raises:
        ValueError: the text is not UTF-8 or does not parse (the message names the file and the
            place).
    """
    how_to_fix = 'Write a JSON list of class names, e.g. ["building", "road", "tree"].'
    try:
        text = Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputFileError(
            f"Class-name file {file} is not UTF-8 text ({e}). {how_to_fix}"
        ) from None
    if Path(file).suffix.lower() != ".json":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise DescriptorError(f"{file}: not valid YAML{where}: {problem}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputFileError(
            f"Class-name file {file} is not valid JSON: {e.msg} at line {e.lineno}, "
            f"column {e.colno}. {how_to_fix}"
        ) from None


def descriptor_class_names(file, descriptor):
    """The class names of a parsed descriptor's ``classes`` field.

    Args:
        file (Path): the descriptor file (for messages, and the folder of a class-name file).
        descriptor (dict): its parsed content.

    Raises:
        DescriptorError: the field is missing, neither a list nor a file name, or its list (or
            file) is not a valid class list.
    """
    classes = descriptor.get("classes")
    field = f"{file}: field 'classes'"
    if isinstance(classes, str) and classes.strip():
        class_file = Path(file).parent / Path(classes).expanduser()
        if not class_file.is_file():
            raise DescriptorError(f"{field}: class-name file {class_file} does not exist.")
        try:
            names = _checked_names(class_file, read_structured_file(class_file))
        except ValueError as e:
            raise DescriptorError(f"{field}: {e}") from None
        return names
    if isinstance(classes, list):
        try:
            return _checked_names(file, classes)
        except ValueError as e:
            raise DescriptorError(f"{field}: {e}") from None
    raise DescriptorError(
        f"{field}: {'missing' if classes is None else f'got {classes!r:.60}'}; give a list of "
        "class names (classes: [building, road, tree]) or a class-name JSON file relative to "
        "the descriptor."
    )


def _checked_names(file, names):
    """``names`` (parsed from ``file``) if it is a valid class list; InputFileError otherwise."""
    check_class_names(names, f"Class-name file {file}", error_type=InputFileError)
    logger.debug("Read %d class names from %s", len(names), file)
    return names


def check_class_names(names, source, *, error_type=ConfigError):
    """The one check of a vocabulary: a non-empty list of non-empty strings, no two equal once
    lower-cased (CLIP lower-cases names, so they would be the same query).

    Args:
        names: the vocabulary.
        source (str): what holds it, for the message ("Class-name file x.json", "The class
            list").
        error_type (type): the GSNetUserError raised.
    """
    example = 'e.g. ["building", "road", "tree"]'
    if not isinstance(names, list):
        raise error_type(f"{source} holds a JSON {type(names).__name__}, not a list: {example}.")
    if not names:
        raise error_type(
            f"No class names: {source} holds an empty list; give at least one non-empty name."
        )
    first_index = {}
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            what = "is empty" if isinstance(name, str) else f"is {name!r}, not a string"
            raise error_type(
                f"{source}: entry {index} {what}; every class needs a non-empty name, {example}."
            )
        key = name.lower()
        if key in first_index:
            raise error_type(
                f"{source}: a name is given twice: entry {index} ({name!r}) repeats entry "
                f"{first_index[key]} ({names[first_index[key]]!r}); CLIP lower-cases names, so "
                "they would be the same query. Remove or rename one of them."
            )
        first_index[key] = index
    return names
