#!/bin/sh
# Evaluate GSNet on the paper's four test sets (FloodNet, FLAIR, FAST, Potsdam), each with its
# own class list, with the paper's protocol: sliding-window inference and 1x1 class pooling.
#   sh scripts/eval.sh CONFIG NUM_GPUS OUTPUT_DIR [KEY VALUE ...] [--suite NAME]
# --suite evaluates another suite instead: ovrsisbench (its eight test sets and protocol), or
# registered dataset names separated by commas (the paper's protocol on those sets).
# Weights: MODEL.WEIGHTS as an override, default OUTPUT_DIR/model_final.pth. Writes the table to
# OUTPUT_DIR/results.{json,csv,md} and the per-class IoU to OUTPUT_DIR/results_per_class.csv.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/_launch_args.sh"
accepts_suite=1
parse_launch_args eval.sh " [--suite NAME]" "$@"
python=${GSNET_PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3

case " $opts " in
    *" 'MODEL.WEIGHTS' "*) ;;
    *)
        weights="$output/model_final.pth"
        if [ ! -f "$weights" ]; then
            echo "error: no weights: $weights does not exist; pass MODEL.WEIGHTS path/to/model.pth." >&2
            exit 2
        fi
        opts="$opts 'MODEL.WEIGHTS' $(quote "$weights")" ;;
esac

if [ -n "$suite" ]; then
    protocol="--suite $(quote "$suite")"
else
    protocol="--paper-evaluation"
fi

eval "set -- $opts"
eval "exec \"\$python\" \"\$repo/tools/train_net.py\" --config-file \"\$config\" --eval-only \
    $protocol --num-gpus \"\$gpus\" $launcher_flags OUTPUT_DIR \"\$output\" \"\$@\""
