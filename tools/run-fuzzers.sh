#!/usr/bin/env bash
# Builds every libFuzzer target with clang (-fsanitize=fuzzer,address,undefined)
# and runs each for FUZZ_SECONDS (default 20; CI uses the default, run longer
# on demand: FUZZ_SECONDS=600 tools/run-fuzzers.sh). Corpora are kept under
# build/fuzz/<target>/corpus so later runs continue where earlier ones ended.
#
# A fuzz target is a file named *_fuzzer.cc. The sources it needs besides
# itself are listed in a comment line of the target, relative to the
# repository root:
#   // fuzz-deps: mqtt/codec.cc transport/endpoint.cc
# and extra link flags (e.g. -lcrypto) in a "// fuzz-libs:" line. TARGET_DEPS
# below is the fallback for targets written before that convention.
# FUZZ_ONLY=REGEX restricts the run to matching target names.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
out=build/fuzz
mkdir -p "$out"

if ! command -v clang++ >/dev/null; then
  echo "run-fuzzers: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi

absl_libs=$(ls /usr/lib/x86_64-linux-gnu/libabsl_*.so | sed 's|.*/lib\(absl_[a-z0-9_]*\)\.so|-l\1|' | tr '\n' ' ')

declare -A TARGET_DEPS=(
  [endpoint_fuzzer]="transport/endpoint.cc"
)

status=0
for src in $(find transport bench udp mqtt rtps -name "*_fuzzer.cc" 2>/dev/null | sort); do
  name=$(basename "$src" .cc)
  if [ -n "${FUZZ_ONLY:-}" ] && ! [[ "$name" =~ $FUZZ_ONLY ]]; then
    continue
  fi
  deps=$(sed -n 's|^// fuzz-deps:||p' "$src" | tr '\n' ' ')
  [ -n "${deps// }" ] || deps="${TARGET_DEPS[$name]:-}"
  libs=$(sed -n 's|^// fuzz-libs:||p' "$src" | tr '\n' ' ')
  bin="$out/$name/$name"
  mkdir -p "$out/$name/corpus"
  echo "== $name: building"
  # shellcheck disable=SC2086
  clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. \
    "$src" $deps -o "$bin" $absl_libs $libs
  echo "== $name: fuzzing for ${seconds}s"
  # -timeout: one input running longer than 30 s is a hang and fails the run
  # (libFuzzer's default, 1200 s, outlasts the ctest timeout).
  if ! "$bin" -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
      "$out/$name/corpus" > "$out/$name/log.txt" 2>&1; then
    echo "== $name: FAILED (log: $out/$name/log.txt)"
    tail -40 "$out/$name/log.txt"
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$out/$name/log.txt" || true
    echo "== $name: ok"
  fi
done
exit $status
