#!/usr/bin/env python
"""Check the GSNet datasets on disk before training or evaluating.

For each dataset (or only --only NAME): folders present, image and label counts, images without
labels and labels without images, label values that are neither a class index nor the ignore
label, labels whose size differs from their image. Prints a summary per dataset and, when
something is wrong, the expected tree; exits with status 1 when anything is wrong.

    python tools/check_datasets.py                      # all five, under $DETECTRON2_DATASETS
    python tools/check_datasets.py --root /data --only FloodNet
"""

import argparse
import sys

from gsnet.data.checks import check_dataset
from gsnet.data.datasets import (
    GSNET_DATASETS,
    dataset_root_from_env,
    expected_tree,
    register_gsnet_datasets,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=dataset_root_from_env(),
        help="dataset root (default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    parser.add_argument(
        "--only",
        choices=[spec.name for spec in GSNET_DATASETS],
        help="check this dataset only",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    register_gsnet_datasets(args.root)
    names = [args.only] if args.only else [spec.name for spec in GSNET_DATASETS]
    reports = [check_dataset(name, progress=True) for name in names]
    print()
    for report in reports:
        print(report.summary())
    failed = [report.name for report in reports if not report.ok]
    if failed:
        print(f"\nProblems in: {', '.join(failed)}. Expected layout:")
        print(expected_tree(args.root, failed))
        print("See datasets/README.md for where each dataset comes from and how to prepare it.")
        return 1
    print(f"\nAll {len(reports)} dataset(s) OK under {args.root}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
