#!/bin/sh
# Creates (or refreshes) the project's virtual environment in .venv and installs everything GSNet
# needs: torch + torchvision, requirements.txt, Detectron2 and the gsnet package itself with its
# "cluster" extra (submitit, for tools/submit.py) and "demo" extra (the web demo); and Debian's
# chromium + chromium-driver (the demo's browser test).
# Idempotent: a second run with unchanged requirements and the browser present returns at once.
#
# Environment: PYTHON (default python3), GSNET_VENV (default <repo>/.venv),
#              TORCH_VERSION / TORCHVISION_VERSION (default 2.14.1 / 0.29.1).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${GSNET_VENV:-$repo/.venv}
python=${PYTHON:-python3}
torch_version=${TORCH_VERSION:-2.14.1}
torchvision_version=${TORCHVISION_VERSION:-0.29.1}

# The browser test of the web demo drives the system's Chromium (outside the virtual
# environment, so checked on every run).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=
    elif command -v sudo >/dev/null 2>&1; then
        as_root=sudo
    else
        echo "[setup] error: the web demo's browser test needs Debian's chromium and" \
            "chromium-driver: as root, apt-get install chromium chromium-driver" >&2
        exit 1
    fi
    echo "[setup] installing chromium and chromium-driver (apt-get)"
    $as_root apt-get update -qq
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
        >/dev/null
fi

stamp="$venv/.gsnet-setup"
fingerprint=$(cat "$repo/requirements.txt" "$repo/setup.py" "$repo/scripts/setup.sh" \
    "$repo/scripts/install_detectron2.py" | cksum | cut -d' ' -f1)
fingerprint="$fingerprint torch=$torch_version torchvision=$torchvision_version"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
    echo "[setup] environment up to date: $venv"
    exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
    echo "[setup] error: '$python' not found. Install Python 3.10+ or set PYTHON=/path/to/python3." >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
pip="$venv/bin/python -m pip"

echo "[setup] installing torch==$torch_version torchvision==$torchvision_version"
$pip install --quiet "torch==$torch_version" "torchvision==$torchvision_version"
echo "[setup] installing requirements.txt"
$pip install --quiet -r "$repo/requirements.txt"
echo "[setup] installing Detectron2"
"$venv/bin/python" "$repo/scripts/install_detectron2.py"
echo "[setup] installing gsnet (editable) with its cluster, demo and data extras"
# requirements.txt has installed gsnet's own dependencies: this adds only the extras'.
$pip install --quiet --no-build-isolation -e "$repo[cluster,demo,data]"

"$venv/bin/python" -c "import gsnet, detectron2, torch, gradio; print('[setup] ready: torch', torch.__version__, '| detectron2', detectron2.__version__, '| gsnet', gsnet.__version__)"
echo "$fingerprint" > "$stamp"
