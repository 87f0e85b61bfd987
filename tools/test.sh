#!/usr/bin/env bash
# The README's test command: install what is missing, build with ASan+UBSan
# (CMake preset `ci`, -j2) and run every ctest label, then build the release
# preset and run the suite again. Extra arguments go to both ctest runs
# (e.g. `tools/test.sh -L unit`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Runs one preset's tests. On failure it prints, last, the failing tests'
# failed cases and assertion lines from ctest's log, so that the end of a
# long CI log names what failed even when the log is cut.
run_tests() {
  local preset=$1
  shift
  if ctest --preset "$preset" "$@"; then
    return 0
  fi
  local log="build/$preset/Testing/Temporary/LastTest.log"
  echo "=== $preset: failing cases (from $log) ==="
  if [[ -f $log ]]; then
    # gtest assertions with the lines that say what differed, then the
    # failed cases; script tests print "FAIL:"/"fail:" lines.
    grep -E -A4 ': Failure$' "$log" | head -n 60 || true
    grep -E '^\[  FAILED  \] [^ ]+\.|^(FAIL|fail)[: ]' "$log" | sort -u |
      head -n 40 || true
  fi
  return 1
}

tools/install-deps.sh
cmake --preset ci
cmake --build --preset ci -j2
run_tests ci "$@"
cmake --preset release
cmake --build --preset release -j2
run_tests release "$@"
