#!/usr/bin/env python
"""Check the GSNet datasets on disk before training or evaluating.

For each dataset (the paper's five by default; --benchmark for another protocol's, --only NAME
for one, --descriptor FILE for a dataset of one's own): folders present, image and label counts,
images without labels and labels without images, label values that are neither a class index
nor the ignore label, labels whose size differs from their image. Prints a summary per dataset
and, when something is wrong, the expected tree; exits with status 1 when anything is wrong, 2
when a descriptor cannot be read.

    python tools/check_datasets.py            # the paper's five, under $DETECTRON2_DATASETS
    python tools/check_datasets.py --root /data --only FloodNet
    python tools/check_datasets.py --benchmark OVRSISBench
    python tools/check_datasets.py --descriptor parcels.yaml
"""

import argparse
import sys

from gsnet.data.checks import check_dataset
from gsnet.data.datasets import (
    GSNET_DATASETS,
    benchmark_datasets,
    dataset_root_from_env,
    expected_tree,
    register_gsnet_datasets,
)
from gsnet.data.descriptors import register_descriptor
from gsnet.errors import add_debug_flag, reporting_user_errors

BENCHMARKS = sorted({spec.benchmark for spec in GSNET_DATASETS})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=dataset_root_from_env(),
        help="dataset root (default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--only",
        choices=[spec.name for spec in GSNET_DATASETS],
        help="check this dataset only",
    )
    which.add_argument(
        "--benchmark",
        choices=BENCHMARKS + ["all"],
        help="check the datasets of one benchmark, or of all (default: GSNet, the paper's five)",
    )
    which.add_argument(
        "--descriptor",
        action="append",
        metavar="FILE",
        help="check the dataset of this descriptor file (repeatable)",
    )
    return add_debug_flag(parser).parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with reporting_user_errors("check_datasets.py", debug=args.debug):
        return check(args)


def check(args):
    """Check the datasets that ``args`` selects; print a report. Returns the exit status."""
    register_gsnet_datasets(args.root)
    if args.descriptor:
        names = [register_descriptor(path) for path in args.descriptor]
    elif args.only:
        names = [args.only]
    elif args.benchmark == "all":
        names = [spec.name for spec in GSNET_DATASETS]
    else:
        names = benchmark_datasets(args.benchmark or "GSNet")
    reports = [check_dataset(name, progress=True) for name in names]
    print()
    for report in reports:
        print(report.summary())
    failed = [report.name for report in reports if not report.ok]
    if failed:
        print(f"\nProblems in: {', '.join(failed)}.", end=" ")
        if args.descriptor:
            print("Fix the files, or the descriptor's fields.")
        else:
            print("Expected layout:")
            print(expected_tree(args.root, failed))
            print("See datasets/README.md for where each dataset comes from and how to prepare it.")
        return 1
    where = "as their descriptors say" if args.descriptor else f"under {args.root}"
    print(f"\nAll {len(reports)} dataset(s) OK {where}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
