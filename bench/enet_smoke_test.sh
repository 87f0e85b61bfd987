#!/usr/bin/env bash
# Loopback smoke test of ringlab_enet_bench: a server on a free port that
# drops 5% of what it receives, then reliable ping-pongs and bulk transfers
# both ways, with the client dropping 0, 5, 10 or 20% of what it receives.
# Checks the JSON each client writes. Bounded: every client has --timeout_s
# and the whole script runs under ctest's timeout. Exit 77 = skipped.
set -euo pipefail
bin=${1:?usage: enet_smoke_test.sh PATH/TO/ringlab_enet_bench}
[ -x "$bin" ] || { echo "not built: $bin"; exit 77; }
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" server --bind=127.0.0.1:0 --loss=5 --seed=11 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
  grep -q '^READY ' "$work/server.out" && break
  sleep 0.05
done
address=$(sed -n 's/^READY //p' "$work/server.out")
[ -n "$address" ] || { echo "server never printed READY"; cat "$work/server.err"; exit 1; }

check() {  # check NAME PYTHON-EXPRESSION-ON-d
  python3 - "$work/$1.json" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ok = eval(sys.argv[2], {"d": d})
print(("ok   " if ok else "FAIL ") + sys.argv[2])
sys.exit(0 if ok else 1)
PY
}

run() {  # run NAME ARGS...
  local name=$1; shift
  "$bin" client --server="$address" --timeout_s=60 --json="$work/$name.json" "$@" \
    >"$work/$name.out" 2>"$work/$name.err" || { echo "client $name failed:"; cat "$work/$name.err"; exit 1; }
  head -1 "$work/$name.out"
}

run pingpong --mode=pingpong --payload=64 --samples=2000 --warmup=200
check pingpong 'd["samples"] == 2000 and 0 < d["rtt_us"]["min"] <= d["rtt_us"]["p50"] <= d["rtt_us"]["p99"] <= d["rtt_us"]["max"]'
check pingpong 'd["protocol"] == "rudp" and d["backend"] == "enet" and d["lost"] == 0'

run pingpong_loss --mode=pingpong --payload=64 --samples=500 --warmup=50 --loss=10 --seed=5
check pingpong_loss 'd["samples"] == 500 and d["client"]["dropped_by_impairment"] > 0'

run up --mode=bulk --bytes=4MiB --chunk=64KiB --direction=upload
check up 'd["bulk"]["bytes"] == 4 << 20 and d["bulk"]["goodput_mbit_s"] > 0 and d["samples"] == 64'

run down_loss --mode=bulk --bytes=4MiB --direction=download --loss=5 --seed=7
# Both sides drop 5% of what they receive: the server (the sender) resends.
check down_loss 'd["server"]["reliable_resends"] > 0 and d["bulk"]["retransmission_ratio"] > 0'
check down_loss 'd["client"]["dropped_by_impairment"] > 0 and d["server"]["dropped_by_impairment"] > 0'

# 20% on the client: the acknowledgements of an upload get lost, so the
# client (the sender) resends.
run up_loss_a --mode=bulk --bytes=1MiB --direction=upload --loss=20 --seed=9
check up_loss_a 'd["client"]["reliable_resends"] > 0'

# Usage errors are exit 2.
set +e
"$bin" client --server="$address" --payload=8 >/dev/null 2>&1; rc=$?
set -e
[ "$rc" -eq 2 ] || { echo "FAIL --payload=8 exited $rc, not 2"; exit 1; }
echo "ok   bad --payload is a usage error"

kill -INT "$server_pid"
wait "$server_pid" || true
server_pid=
grep -q '^SERVER_STATS {' "$work/server.out" || { echo "FAIL no SERVER_STATS line"; exit 1; }
echo "ok   server stopped on SIGINT and printed SERVER_STATS"
