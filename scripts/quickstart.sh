#!/bin/sh
# The toy default, end to end on a CPU: set up the environment, generate small synthetic
# datasets in the layouts of all five datasets, train the tiny GSNet of configs/toy.yaml on the
# LandDiscover50K-style set, evaluate it with scripts/eval.sh on the four test sets (their own
# class lists, sliding windows, 1x1 pooling) and print the mIoU table.
#   sh scripts/quickstart.sh [OUTPUT_DIR]     (default: output/toy)
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/output/toy}
sh "$repo/scripts/setup.sh"
python="$repo/.venv/bin/python"

export DETECTRON2_DATASETS="$out/datasets"
if [ ! -f "$DETECTRON2_DATASETS/GSNET_TOY_DATASETS.json" ]; then
    echo "[quickstart] generating toy datasets in $DETECTRON2_DATASETS"
    "$python" "$repo/tools/make_toy_datasets.py" --root "$DETECTRON2_DATASETS"
fi
echo "[quickstart] training configs/toy.yaml -> $out/train"
sh "$repo/scripts/train.sh" "$repo/configs/toy.yaml" 1 "$out/train" --resume
echo "[quickstart] evaluating -> $out/eval"
sh "$repo/scripts/eval.sh" "$repo/configs/toy.yaml" 1 "$out/eval" \
    MODEL.WEIGHTS "$out/train/model_final.pth"
echo "[quickstart] results (also in $out/eval/results.md):"
cat "$out/eval/results.md"
