#!/usr/bin/env bash
# The README's test command: install what is missing, build with ASan+UBSan
# (CMake preset `ci`, -j2), and run every ctest label. Extra arguments go to
# ctest (e.g. `tools/test.sh -L unit`).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
cmake --preset ci
cmake --build --preset ci -j2
ctest --preset ci "$@"
