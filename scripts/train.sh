#!/bin/sh
# Train GSNet:  sh scripts/train.sh CONFIG NUM_GPUS OUTPUT_DIR [KEY VALUE ...] [--resume]
#                                   [--num-machines N --machine-rank R --dist-url URL]
# The config is the whole experiment (configs/vitb_384.yaml is the paper's); pass only run
# arguments. --resume continues from OUTPUT_DIR's last checkpoint.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/_launch_args.sh"
parse_launch_args train.sh " [--resume]" "$@"
python=${GSNET_PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3

eval "set -- $opts"
eval "exec \"\$python\" \"\$repo/tools/train_net.py\" --config-file \"\$config\" \
    --num-gpus \"\$gpus\" $launcher_flags OUTPUT_DIR \"\$output\" \"\$@\""
