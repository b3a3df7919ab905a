"""Class-name JSON files: the single reader of ``datasets/*.json``.

A class-name file is a JSON list of non-empty strings, e.g. ``["background", "bare land", ...]``.
The strings are the model's text queries, reproduced exactly as published (typos included):
the released weights were trained on them. Paths given in configs (``"datasets/potsdam.json"``)
are resolved relative to the current directory first, then to the repository root, so configs
work from any working directory.
"""

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["CLASS_JSON_DIR", "REPO_ROOT", "load_class_names", "resolve_config_path"]

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
    raise FileNotFoundError(
        f"File '{path}' not found. Looked at:\n{tried}\n"
        "Give an absolute path, or a path relative to the current directory or to the "
        f"repository root ({REPO_ROOT}); the published class lists are in {CLASS_JSON_DIR}."
    )


def load_class_names(path):
    """Read a class-name JSON file.

    Args:
        path (str or Path): the JSON file; a relative path is resolved by
            :func:`resolve_config_path`.

    Returns:
        list[str]: the class names, in file order (the model's channel order).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON, not a list, empty, holds an entry that is not a
            non-empty string, or names a class twice (CLIP lower-cases its input, so names that
            differ only in case are the same query).
    """
    file = resolve_config_path(path)
    how_to_fix = 'Write a JSON list of class names, e.g. ["building", "road", "tree"].'
    try:
        names = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"Class-name file {file} is not UTF-8 text ({e}). {how_to_fix}") from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"Class-name file {file} is not valid JSON: {e.msg} at line {e.lineno}, "
            f"column {e.colno}. {how_to_fix}"
        ) from None
    if not isinstance(names, list):
        raise ValueError(
            f"Class-name file {file} holds a JSON {type(names).__name__}, not a list. {how_to_fix}"
        )
    if not names:
        raise ValueError(f"Class-name file {file} holds an empty list. {how_to_fix}")
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"Class-name file {file}: entry {index} is {name!r}; every entry must be a "
                f"non-empty string. {how_to_fix}"
            )
    first_index = {}
    for index, name in enumerate(names):
        key = name.lower()
        if key in first_index:
            raise ValueError(
                f"Class-name file {file}: entry {index} ({name!r}) repeats entry "
                f"{first_index[key]} ({names[first_index[key]]!r}); CLIP lower-cases names, so "
                "they would be the same query. Remove or rename one of them."
            )
        first_index[key] = index
    logger.debug("Read %d class names from %s", len(names), file)
    return names
