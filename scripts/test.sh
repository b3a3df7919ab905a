#!/bin/sh
# Set up the environment if needed (scripts/setup.sh), then run the lint check and the tests.
# Extra arguments go to pytest, e.g.  sh scripts/test.sh -k checkpoint
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
sh "$repo/scripts/setup.sh"
cd "$repo"
echo "[test] ruff check"
.venv/bin/ruff check .
echo "[test] pytest"
exec .venv/bin/python -m pytest "$@"
