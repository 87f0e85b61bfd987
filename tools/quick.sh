#!/usr/bin/env bash
# The README's main job: install what is missing, build the release preset,
# run the `quick` experiment suite (ringlab presets + sockperf side by side)
# and print the report's path as the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target ringlab_pingpong ringlab_floor_pingpong >/dev/null
exec python3 experiments/run.py quick "$@"
