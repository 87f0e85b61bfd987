#!/usr/bin/env bash
# ctest smoke test for ringlab_floor_pingpong: each variant answers 2000 round
# trips and writes a JSON result with a positive p50. Exit 77 (ctest skip)
# when the kernel refuses a variant (exit code 3), never a silent pass.
set -u
bin="$1"
variant="$2"
dir=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
"$bin" server --variant="$variant" --bind=127.0.0.1:0 > "$dir/server.out" 2>&1 &
server=$!
for _ in $(seq 100); do
  grep -q '^READY ' "$dir/server.out" && break
  if ! kill -0 "$server" 2>/dev/null; then
    wait "$server"; rc=$?
    [ "$rc" -eq 3 ] && { echo "SKIP: $(cat "$dir/server.out")"; exit 77; }
    echo "server exited with $rc: $(cat "$dir/server.out")"; exit 1
  fi
  sleep 0.05
done
address=$(awk '/^READY /{print $2}' "$dir/server.out")
[ -n "$address" ] || { echo "server never printed READY"; exit 1; }
"$bin" client --variant="$variant" --server="$address" --samples=2000 \
  --warmup=200 --json="$dir/result.json"
rc=$?
[ "$rc" -eq 3 ] && exit 77
[ "$rc" -eq 0 ] || { echo "client exited with $rc"; exit 1; }
python3 - "$dir/result.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["samples"] == 2000, d
assert d["rtt_us"]["p50"] > 0 and d["rtt_us"]["p99"] >= d["rtt_us"]["p50"], d
assert d["kernel_entries_per_msg"] > 0, d
print("ok", d["backend"], d["rtt_us"]["p50"], "us")
PY
