#!/bin/sh
# Evaluate GSNet on the paper's four test sets (FloodNet, FLAIR, FAST, Potsdam), each with its
# own class list, with the paper's protocol: sliding-window inference and 1x1 class pooling.
#   sh scripts/eval.sh CONFIG NUM_GPUS OUTPUT_DIR [KEY VALUE ...]
# Weights: MODEL.WEIGHTS as an override, default OUTPUT_DIR/model_final.pth. Writes the table to
# OUTPUT_DIR/results.{json,csv,md}.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/_launch_args.sh"
parse_launch_args eval.sh "" "$@"
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

eval "set -- $opts"
eval "exec \"\$python\" \"\$repo/tools/train_net.py\" --config-file \"\$config\" --eval-only \
    --paper-evaluation --num-gpus \"\$gpus\" $launcher_flags OUTPUT_DIR \"\$output\" \"\$@\""
