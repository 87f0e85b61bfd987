#!/usr/bin/env bash
# The README's test command: install what is missing, build with ASan+UBSan
# (CMake preset `ci`, -j2) and run every ctest label, then build the release
# preset and run the suite again. Extra arguments go to both ctest runs
# (e.g. `tools/test.sh -L unit`).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
cmake --preset ci
cmake --build --preset ci -j2
ctest --preset ci "$@"
cmake --preset release
cmake --build --preset release -j2
ctest --preset release "$@"
