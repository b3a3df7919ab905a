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
)
from gsnet.errors import InputFileError


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
    args = parser.parse_args(argv)

    if not os.path.isfile(args.source):
        parser.exit(1, f"error: {args.source} does not exist.\n")
    if os.path.exists(args.target) and not args.overwrite:
        parser.exit(1, f"error: {args.target} exists; pass --overwrite to replace it.\n")
    try:
        checkpoint = load_weight_file(
            args.source,
            what="Checkpoint",
            allow_unsafe_unpickling=args.allow_unsafe_unpickling,
        )
    except InputFileError as error:
        parser.exit(1, f"error: {error}\n")
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        parser.exit(1, f"error: {args.source} has no 'model' state dict: not a GSNet checkpoint.\n")
    if not is_released_layout(state):
        parser.exit(
            1, f"error: {args.source} is not in the published layout (already converted?).\n"
        )
    try:
        converted = convert_released_state_dict(state)
    except ValueError as error:
        parser.exit(1, f"error: {error}\n")
    temporary = args.target + ".tmp"
    torch.save({**checkpoint, "model": converted}, temporary)
    os.replace(temporary, args.target)
    print(
        f"wrote {args.target}: {len(converted)} tensors ({len(state) - len(converted)} derived "
        "entries dropped)"
    )


if __name__ == "__main__":
    sys.exit(main())
