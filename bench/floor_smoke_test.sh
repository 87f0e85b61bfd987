#!/usr/bin/env bash
# ctest smoke test for ringlab_floor_pingpong: one variant over UDP or TCP
# answers 2000 round trips and writes a JSON result with a positive p50, and
# the server stops on SIGINT. Exit 77 (ctest skip) when the kernel refuses a
# variant (exit code 3), never a silent pass.
#   floor_smoke_test.sh BINARY VARIANT [udp|tcp]
set -u
bin="$1"
variant="$2"
proto="${3:-udp}"
dir=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
"$bin" server --proto="$proto" --variant="$variant" --bind=127.0.0.1:0 \
  > "$dir/server.out" 2>&1 &
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
# Two clients in a row: a TCP server must take the second one after the
# first has left.
for run in 1 2; do
  "$bin" client --proto="$proto" --variant="$variant" --server="$address" \
    --samples=2000 --warmup=200 --json="$dir/result$run.json"
  rc=$?
  [ "$rc" -eq 3 ] && exit 77
  [ "$rc" -eq 0 ] || { echo "client $run exited with $rc"; exit 1; }
done
python3 - "$dir/result1.json" "$dir/result2.json" "$proto" <<'PY'
import json, sys
for path in sys.argv[1:3]:
    d = json.load(open(path))
    assert d["samples"] == 2000, d
    assert d["protocol"] == sys.argv[3], d
    assert d["rtt_us"]["p50"] > 0 and d["rtt_us"]["p99"] >= d["rtt_us"]["p50"], d
    assert d["kernel_entries_per_msg"] >= 1, d
    print("ok", d["backend"], d["protocol"], d["rtt_us"]["p50"], "us",
          d["kernel_entries_per_msg"], "entries/msg")
PY
rc=$?
[ "$rc" -eq 0 ] || exit 1
# SIGINT must stop the server promptly (a blocking wait ends with EINTR).
kill -INT "$server"
for _ in $(seq 40); do
  kill -0 "$server" 2>/dev/null || { wait "$server"; server=; exit 0; }
  sleep 0.05
done
echo "server did not stop within 2 s of SIGINT"
exit 1
