#!/usr/bin/env bash
# Goodput under loss, rudp against ENet, by hand: the goodput cases of
# experiments/suites/rudp.toml outside the runner, plus a kernel-side loss
# the runner has no mode for. Every case is a fresh server + client pair on
# loopback, server pinned to cpu 0 and client to cpu 1; repetitions are
# interleaved over the cases, so drift on a shared host hits all
# implementations alike. The loss is either
#  - IMPAIR=inprocess (default): each side drops LOSS% of what it receives
#    (seeded), as in the suite; or
#  - IMPAIR=nft: both run inside a network namespace this script creates,
#    whose nftables input hook drops LOSS% of the UDP datagrams (random, not
#    seeded; integer LOSS). On loopback every datagram crosses the input hook
#    once, so it is the same loss rate, taken in the kernel (the field notes
#    explain why the input hook, not output). Needs root, ip and nft; the
#    namespace is deleted on exit.
#
#   udp/goodput_sweep.sh [OUT_DIR] [BYTES=100MiB] [REPS=3]
#   env: BUILD=build/release  LOSSES="0 1 5 20"  BACKENDS="epoll uring-fixed"
#        DIRECTIONS="upload download"  ENET=1 (0 skips ENet)  IMPAIR=inprocess
#
# Writes OUT_DIR/goodput.csv (one row per run), OUT_DIR/goodput.md (medians
# per case, with rudp/ENet ratios) and OUT_DIR/goodput.png (gnuplot, median
# goodput against loss), and keeps every client's JSON in OUT_DIR/json/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/rudp-goodput/$(date -u +%Y%m%dT%H%M%SZ)}
bytes=${2:-100MiB}
reps=${3:-3}
build=${BUILD:-build/release}
losses=${LOSSES:-"0 1 5 20"}
backends=${BACKENDS:-"epoll uring-fixed"}
directions=${DIRECTIONS:-"upload download"}
rudp=$build/udp/ringlab_rudp_bench
enet=$build/bench/ringlab_enet_bench
[ -x "$rudp" ] || { echo "build it first: cmake --build --preset release --target ringlab_rudp_bench"; exit 1; }
if [ "${ENET:-1}" = 1 ] && [ ! -x "$enet" ]; then
  echo "no $enet (cmake --build --preset release --target ringlab_enet_bench); ENet skipped"
  ENET=0
fi
impair=${IMPAIR:-inprocess}
case $impair in
  inprocess) ;;
  nft)
    [ "$(id -u)" = 0 ] || { echo "IMPAIR=nft needs root"; exit 1; }
    command -v ip >/dev/null && command -v nft >/dev/null ||
      { echo "IMPAIR=nft needs ip (iproute2) and nft (nftables)"; exit 1; }
    for loss in $losses; do
      [[ "$loss" =~ ^[0-9]+$ ]] || { echo "IMPAIR=nft: loss $loss is not an integer percentage"; exit 1; }
    done ;;
  *) echo "IMPAIR must be inprocess or nft"; exit 1 ;;
esac
mkdir -p "$out/json"
csv=$out/goodput.csv
echo "rep,impl,backend,cc,direction,loss_pct,bytes,goodput_mbit_s,completion_s,retransmission_ratio,spurious,client_cpu_us_per_mb,server_cpu_us_per_mb,kernel_entries_per_mb,impairment" >"$csv"

server_pid=
ns=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  wait 2>/dev/null || true
  [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null
  return 0
}
trap cleanup EXIT
wrap=()
if [ "$impair" = nft ]; then
  ns=rl-rudp-sweep-$$
  ip netns add "$ns"
  wrap=(ip netns exec "$ns")
  "${wrap[@]}" ip link set lo up
  "${wrap[@]}" nft add table inet rudp_sweep
  "${wrap[@]}" nft 'add chain inet rudp_sweep input { type filter hook input priority 0; policy accept; }'
fi
current_nft_loss=
# set_nft_loss LOSS: the namespace's input hook drops LOSS% of UDP datagrams.
set_nft_loss() {
  [ "$1" = "$current_nft_loss" ] && return
  "${wrap[@]}" nft flush chain inet rudp_sweep input
  if [ "$1" != 0 ]; then
    "${wrap[@]}" nft add rule inet rudp_sweep input meta l4proto udp numgen random mod 100 '<' "$1" counter drop
  fi
  current_nft_loss=$1
}

# run_case REP IMPL BACKEND CC DIRECTION LOSS
run_case() {
  local rep=$1 impl=$2 backend=$3 cc=$4 dir=$5 loss=$6
  local name="$impl-$backend-cc$cc-$dir-loss$loss-r$rep" srv cli
  if [ "$impair" = nft ]; then
    set_nft_loss "$loss"
    loss=0  # the programs' own receive loss is off: the kernel drops
    name="$name-nft"
  fi
  if [ "$impl" = enet ]; then
    srv=("$enet" server --bind=127.0.0.1:0 --cpu=0 --loss="$loss" --seed=1)
    cli=("$enet" client --mode=bulk --bytes="$bytes" --chunk=64KiB --direction="$dir"
         --loss="$loss" --seed=2 --cpu=1 --timeout_s=900)
  else
    srv=("$rudp" server --bind=127.0.0.1:0 --backend="$backend" --cpu=0 --loss="$loss"
         --seed=1 --cc="$cc")
    cli=("$rudp" client --backend="$backend" --mode=bulk --bytes="$bytes" --chunk=64KiB
         --direction="$dir" --loss="$loss" --seed=2 --cc="$cc" --cpu=1 --timeout_s=900)
  fi
  : >"$out/server.out"
  "${wrap[@]}" "${srv[@]}" >"$out/server.out" 2>"$out/server.err" &
  server_pid=$!
  for _ in $(seq 100); do grep -q '^READY ' "$out/server.out" && break; sleep 0.05; done
  local address
  address=$(sed -n 's/^READY //p' "$out/server.out")
  if [ -z "$address" ]; then
    echo "$name: server not ready (unsupported backend?)"; kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true; server_pid=; return
  fi
  if "${wrap[@]}" "${cli[@]}" --server="$address" --json="$out/json/$name.json" >"$out/client.out" 2>"$out/client.err"; then
    python3 - "$out/json/$name.json" "$rep" "$impl" "$backend" "$cc" "$dir" "${current_nft_loss:-$loss}" "$impair" >>"$csv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); b = d["bulk"]
rep, impl, backend, cc, direction, loss, impair = sys.argv[2:9]
def g(k, src=b):
    v = src.get(k)
    return "" if v is None else f"{v:.6g}"
print(",".join([rep, impl, backend, cc, direction, loss, str(b["bytes"]), g("goodput_mbit_s"),
                g("completion_s"), g("retransmission_ratio"), g("spurious_retransmissions"),
                g("client_cpu_us_per_mb"), g("server_cpu_us_per_mb"), g("kernel_entries_per_mb"),
                impair]))
PY
    echo "$name: $(head -1 "$out/client.out")"
  else
    echo "$name: FAILED: $(tail -1 "$out/client.err")"
  fi
  kill -INT "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

for rep in $(seq "$reps"); do
  for loss in $losses; do
    for dir in $directions; do
      for backend in $backends; do
        for cc in on off; do run_case "$rep" rudp "$backend" "$cc" "$dir" "$loss"; done
      done
      [ "${ENET:-1}" = 1 ] && run_case "$rep" enet enet - "$dir" "$loss"
    done
  done
done

python3 - "$csv" "$out/goodput.md" "$out/goodput.dat" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cases = {}
for r in rows:
    key = (r["direction"], int(r["loss_pct"]), r["impl"], r["backend"], r["cc"])
    cases.setdefault(key, []).append(r)
def med(rs, k):
    v = [float(r[k]) for r in rs if r[k] != ""]
    return statistics.median(v) if v else None
with open(sys.argv[2], "w") as md:
    md.write(f"Loss applied by: {', '.join(sorted({r['impairment'] for r in rows})) or '-'}\n\n")
    md.write("| direction | loss % | implementation | goodput Mbit/s (median) | vs ENet | completion s | retx ratio | spurious | client CPU µs/MB | kernel entries/MB |\n")
    md.write("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
    for key in sorted(cases):
        d, loss, impl, backend, cc = key
        rs = cases[key]
        gp = med(rs, "goodput_mbit_s")
        enet = cases.get((d, loss, "enet", "enet", "-"))
        ratio = gp / med(enet, "goodput_mbit_s") if enet and gp and med(enet, "goodput_mbit_s") else None
        name = "ENet" if impl == "enet" else f"rudp {backend} cc={cc}"
        f = lambda v, p=1: "" if v is None else f"{v:.{p}f}"
        md.write(f"| {d} | {loss} | {name} | {f(gp)} | {f(ratio, 2)} | {f(med(rs, 'completion_s'), 2)} | "
                 f"{f(med(rs, 'retransmission_ratio'), 3)} | {f(med(rs, 'spurious'), 0)} | "
                 f"{f(med(rs, 'client_cpu_us_per_mb'), 0)} | {f(med(rs, 'kernel_entries_per_mb'), 0)} |\n")
with open(sys.argv[3], "w") as dat, open(sys.argv[3].replace(".dat", ".gp"), "w") as gp:
    impls = sorted({(k[2], k[3], k[4]) for k in cases})
    plots = []
    index = 0
    for d in ("upload", "download"):
        for impl in impls:
            points = [(loss, med(cases[(d, loss) + impl], "goodput_mbit_s"))
                      for loss in sorted({k[1] for k in cases}) if (d, loss) + impl in cases]
            if not points:
                continue
            for loss, value in points:
                dat.write(f"{loss} {value}\n")
            dat.write("\n\n")
            title = "ENet" if impl[0] == "enet" else f"rudp {impl[1]} cc={impl[2]}"
            style = "lw 2" if impl[0] == "enet" else ""
            plots.append(f"'goodput.dat' index {index} using 1:2 with linespoints {style} "
                         f"title '{d}: {title}'")
            index += 1
    gp.write("set terminal pngcairo size 1100,650 noenhanced\nset output 'goodput.png'\n"
             "set xlabel 'loss % (each side drops that share of what it receives)'\n"
             "set ylabel 'goodput, Mbit/s (median)'\nset logscale y\nset key outside\n"
             "set title 'rudp vs ENet: goodput against loss'\nplot " + ", \\\n  ".join(plots) + "\n")
PY
if command -v gnuplot >/dev/null; then
  (cd "$out" && gnuplot goodput.gp) || echo "gnuplot failed (goodput.gp kept)"
fi
echo "wrote $csv, $out/goodput.md"
