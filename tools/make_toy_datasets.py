#!/usr/bin/env python
"""Write small synthetic datasets in the layouts of every registered dataset.

A training set in LandDiscover50K's layout, the four test sets in theirs, and the sets of the
other benchmarks (OVRSISBench, OpenEarthMap) in theirs, with the real class lists; see
gsnet/data/toy_datasets.py for how the classes are drawn. Then use them with
DETECTRON2_DATASETS=<root>.

    python tools/make_toy_datasets.py --root datasets/toy
"""

import argparse
import os
import sys

from gsnet.data.datasets import get_dataset_spec
from gsnet.data.toy_datasets import make_toy_datasets, shared_classes
from gsnet.errors import add_debug_flag, reporting_user_errors


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", default="datasets/toy", help="where to write (default: %(default)s)"
    )
    parser.add_argument("--num-train", type=int, default=64, help="training images")
    parser.add_argument("--num-test", type=int, default=8, help="images per test set")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return add_debug_flag(parser).parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with reporting_user_errors("make_toy_datasets.py", debug=args.debug):
        write(args)
    return 0


def write(args):
    """Write the toy datasets that ``args`` asks for; print what was written."""
    written = make_toy_datasets(
        args.root,
        num_train=args.num_train,
        num_test=args.num_test,
        image_size=args.size,
        seed=args.seed,
    )
    print(f"Wrote toy datasets under {os.path.abspath(args.root)}:")
    shared = shared_classes()
    for name, count in written.items():
        spec = get_dataset_spec(name)
        print(f"  {name:22s} {count:4d} images  {spec.image_dir}/, {spec.label_dir}/")
        if name in shared:
            print(f"      classes shared with training: {', '.join(shared[name])}")
    print(f"Use them with: export DETECTRON2_DATASETS={args.root}")


if __name__ == "__main__":
    sys.exit(main())
