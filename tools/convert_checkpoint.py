#!/usr/bin/env python
"""Convert a released GSNet checkpoint (the published code's key layout) to this project's layout.

    python tools/convert_checkpoint.py GSNet_released.pth gsnet_converted.pth

Not needed for evaluation (MODEL.WEIGHTS accepts the released file as it is): use it to keep a
file in this project's layout. The renames are the table ``gsnet.checkpoint.RELEASED_KEY_RENAMES``
(the same one the checkpointer applies when loading).
"""

import argparse
import os
import sys

import torch

from gsnet.checkpoint import (
    UNSAFE_UNPICKLING_KEY,
    convert_released_state_dict,
    is_released_layout,
    load_weight_file,
    write_file_atomically,
)
from gsnet.errors import (
    ConfigError,
    InputFileError,
    MissingFileError,
    add_debug_flag,
    output_write_errors,
    reporting_user_errors,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="released GSNet checkpoint (.pth with a 'model' entry)")
    parser.add_argument("target", help="where to write the converted checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing target")
    parser.add_argument(
        "--allow-unsafe-unpickling",
        action="store_true",
        help=f"read objects beyond the safe allow-list (runs code from the file; as "
        f"{UNSAFE_UNPICKLING_KEY})",
    )
    args = add_debug_flag(parser).parse_args(argv)
    with reporting_user_errors("convert_checkpoint.py", debug=args.debug):
        convert(
            args.source,
            args.target,
            overwrite=args.overwrite,
            allow_unsafe_unpickling=args.allow_unsafe_unpickling,
        )


def convert(source, target, *, overwrite=False, allow_unsafe_unpickling=False):
    """Write ``source`` (released layout) to ``target`` in this project's layout."""
    if not os.path.isfile(source):
        raise MissingFileError(f"{source} does not exist.")
    if os.path.exists(target) and not overwrite:
        raise ConfigError(f"{target} exists; pass --overwrite to replace it.")
    checkpoint = load_weight_file(
        source, what="Checkpoint", allow_unsafe_unpickling=allow_unsafe_unpickling
    )
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise InputFileError(f"{source} has no 'model' state dict: not a GSNet checkpoint.")
    if not is_released_layout(state):
        raise InputFileError(f"{source} is not in the published layout (already converted?).")
    converted = convert_released_state_dict(state)
    with output_write_errors(
        "Free space or choose another target; nothing was written.", path=target
    ):
        write_file_atomically(target, lambda f: torch.save({**checkpoint, "model": converted}, f))
    print(
        f"wrote {target}: {len(converted)} tensors ({len(state) - len(converted)} derived "
        "entries dropped)"
    )


if __name__ == "__main__":
    sys.exit(main())
