#!/usr/bin/env bash
# Loopback smoke test of ringlab_rudp_bench: a server on a free port that
# drops 5% of what it receives, then reliable ping-pongs and bulk transfers
# both ways (with congestion control on and off), on epoll and, where the
# kernel has it, uring-fixed. Checks the JSON each client writes. Bounded:
# every client has --timeout_s, the script runs under ctest's timeout.
# Exit 77 = skipped (binary missing).
set -euo pipefail
bin=${1:?usage: rudp_bench_smoke_test.sh PATH/TO/ringlab_rudp_bench}
[ -x "$bin" ] || { echo "not built: $bin"; exit 77; }
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

start_server() {  # start_server BACKEND ARGS...
  local backend=$1; shift
  if [ -n "$server_pid" ]; then kill -INT "$server_pid"; wait "$server_pid" || true; fi
  : >"$work/server.out"
  "$bin" server --bind=127.0.0.1:0 --backend="$backend" "$@" >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q '^READY ' "$work/server.out" && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  address=$(sed -n 's/^READY //p' "$work/server.out")
  if [ -z "$address" ]; then
    wait "$server_pid" && rc=0 || rc=$?
    server_pid=
    [ "$rc" = 3 ] && return 3  # backend unsupported here
    echo "server never printed READY"; cat "$work/server.err"; exit 1
  fi
}

check() {  # check NAME PYTHON-EXPRESSION-ON-d
  python3 - "$work/$1.json" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ok = eval(sys.argv[2], {"d": d})
print(("ok   " if ok else "FAIL ") + sys.argv[2])
sys.exit(0 if ok else 1)
PY
}

run() {  # run NAME BACKEND ARGS...
  local name=$1 backend=$2; shift 2
  "$bin" client --server="$address" --backend="$backend" --timeout_s=60 \
    --json="$work/$name.json" "$@" >"$work/$name.out" 2>"$work/$name.err" \
    || { echo "client $name failed:"; cat "$work/$name.err"; exit 1; }
  head -1 "$work/$name.out"
}

start_server epoll --loss=5 --seed=11
run pingpong epoll --mode=pingpong --payload=64 --samples=2000 --warmup=200
check pingpong 'd["samples"] == 2000 and 0 < d["rtt_us"]["min"] <= d["rtt_us"]["p50"] <= d["rtt_us"]["p99"] <= d["rtt_us"]["max"]'
check pingpong 'd["protocol"] == "rudp" and d["backend"] == "epoll" and d["lost"] == 0'

run pingpong_loss epoll --mode=pingpong --payload=64 --samples=500 --warmup=50 --loss=10 --seed=5
check pingpong_loss 'd["samples"] == 500 and d["client"]["dropped_by_impairment"] > 0'

run up epoll --mode=bulk --bytes=4MiB --chunk=64KiB --direction=upload
check up 'd["bulk"]["bytes"] == 4 << 20 and d["bulk"]["goodput_mbit_s"] > 0 and d["samples"] == 64'
check up 'd["server"]["bytes_received"] == 4 << 20 and d["bulk"]["kernel_entries_per_mb"] > 0'

run down_loss epoll --mode=bulk --bytes=4MiB --direction=download --loss=5 --seed=7
# Both sides drop 5% of what they receive: the server (the sender) resends.
check down_loss 'd["server"]["fragments_retransmitted"] > 0 and d["bulk"]["retransmission_ratio"] > 0'
check down_loss 'd["client"]["dropped_by_impairment"] > 0 and d["server"]["dropped_by_impairment"] > 0'
check down_loss 'd["client"]["bytes_received"] == 4 << 20'

start_server epoll --loss=20 --seed=13 --cc=off
run up_nc epoll --mode=bulk --bytes=2MiB --direction=upload --loss=20 --seed=3 --cc=off
check up_nc 'd["congestion_control"] is False and d["client"]["fragments_retransmitted"] > 0'

if start_server uring-fixed --loss=1 --seed=17; then
  run uring_pingpong uring-fixed --mode=pingpong --payload=64 --samples=1000 --warmup=100
  check uring_pingpong 'd["backend"] == "uring-fixed" and d["samples"] == 1000'
  run uring_down uring-fixed --mode=bulk --bytes=4MiB --direction=download --loss=1 --seed=19
  check uring_down 'd["client"]["bytes_received"] == 4 << 20'
else
  echo "uring-fixed unsupported here: skipped that part"
fi
