#!/usr/bin/env python3
"""Loopback smoke test of ringlab_mqtt_broker and ringlab_mqtt_bench.

Starts the broker on a free port (READY line), runs the bench briefly in
every mode (rtt at QoS 0/1/2, fan-in at a fixed rate and at saturation,
fan-out, idle with the broker's RSS), checks each RESULT, stops the broker
with SIGINT and checks its SERVER_STATS. Exits 77 (skipped) when the backend
preset cannot run here. Standard library only.
"""

import argparse
import json
import re
import signal
import subprocess
import sys
import time


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--backend", default="epoll")
    a = ap.parse_args()

    for binary in (a.broker, a.bench):
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0 or "--help" not in out.stdout:
            fail(f"{binary} --help: exit {out.returncode}")
        bad = subprocess.run([binary, "--no_such_flag=1"], capture_output=True, text=True,
                             timeout=10)
        if bad.returncode != 2 or "unknown flag" not in bad.stderr:
            fail(f"{binary}: an unknown flag must exit 2 and say so")

    broker = subprocess.Popen([a.broker, f"--backend={a.backend}", "--listen=127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = broker.stdout.readline()
        if not line:
            broker.wait(timeout=10)
            if broker.returncode == 3:
                print(f"SKIP: backend {a.backend} unsupported here: "
                      f"{broker.stderr.read().strip()}")
                sys.exit(77)
            fail(f"broker exited {broker.returncode}: {broker.stderr.read()}")
        m = re.match(r"READY (\S+):(\d+)$", line.strip())
        if not m:
            fail(f"bad READY line {line!r}")
        server = f"{m.group(1)}:{m.group(2)}"

        def bench(*args):
            cmd = [a.bench, *args[:1]] if args[:1] == ("client",) else [a.bench]
            cmd += [f"--server={server}", "--backend=epoll", "--timeout_s=60",
                    *(args[1:] if args[:1] == ("client",) else args)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
            if r.returncode != 0:
                fail(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
            if len(lines) != 1:
                fail(f"{' '.join(cmd)}: expected one RESULT line, got {r.stdout!r}")
            return json.loads(lines[0][len("RESULT "):])

        for qos in (0, 1, 2):
            d = bench("--mode=rtt", f"--qos={qos}", "--samples=500", "--warmup=50")
            if d["samples"] != 500 or d["lost"] != 0 or not d["rtt_us"]["p50"] > 0:
                fail(f"rtt qos {qos}: {d}")
        d = bench("--mode=fanin", "--connections=20", "--rate=2000", "--samples=2000",
                  "--warmup=200", "--qos=1")
        if d["samples"] != 2000 or d["lost"] != 0 or d["publishers"] != 20:
            fail(f"fanin rate: {d}")
        d = bench("--mode=fanin", "--connections=20", "--inflight=4", "--samples=5000",
                  "--warmup=500", "--qos=1")
        if d["samples"] != 5000 or d["lost"] != 0 or not d["messages_per_s"] > 0:
            fail(f"fanin saturation: {d}")
        d = bench("--mode=fanout", "--connections=10", "--inflight=4", "--samples=5000",
                  "--warmup=500", "--qos=0")
        if d["samples"] != 5000 or d["subscribers"] != 10:
            fail(f"fanout: {d}")
        # The runner's form (experiments/README.md, the MQTT bench JSON).
        d = bench("client", "--mode=burst", "--pattern=fanout", "--connections=4",
                  "--inflight=4", "--samples=2000", "--warmup=20", "--max_duration_s=30")
        if d["mode"] != "burst" or d["pattern"] != "fanout" or d["connections_open"] != 5:
            fail(f"runner form: {d}")
        if abs(d["deliveries_per_s"] - 4 * d["messages_per_s"]) > 1e-6 * d["deliveries_per_s"]:
            fail(f"fan-out deliveries/s must be 4 x msg/s: {d}")
        if not (d["measured_end_ns"] > d["measured_start_ns"] > 0 and d["total_messages"] >= 2000):
            fail(f"measured phase / total_messages: {d}")
        # A run that times out still reports its measured phase, with a
        # duration >= 0 (it used to be end(unset) - start, negative).
        cmd = [a.bench, f"--server={server}", "--backend=epoll", "--mode=fanin",
               "--connections=2", "--rate=200", "--samples=1000000", "--warmup=10",
               "--qos=0", "--timeout_s=1", "--drain_s=0.2"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode == 0 or "timed out" not in r.stderr or len(lines) != 1:
            fail(f"timed-out run: exit {r.returncode}, {r.stderr!r}, {r.stdout!r}")
        d = json.loads(lines[0][len("RESULT "):])
        if not (0.5 < d["duration_s"] < 5 and d["samples"] > 0 and d["messages_per_s"] > 0):
            fail(f"timed-out run must report its measured phase: {d}")
        d = bench("--mode=idle", "--connections=200", "--hold_s=0.5",
                  f"--broker_pid={broker.pid}")
        if not d["broker_rss_after_bytes"] > 0:
            fail(f"idle: {d}")

        broker.send_signal(signal.SIGINT)
        out, err = broker.communicate(timeout=20)
        if broker.returncode != 0:
            fail(f"broker exit {broker.returncode} after SIGINT: {err}")
        stats = [ln for ln in out.splitlines() if ln.startswith("SERVER_STATS ")]
        if len(stats) != 1:
            fail(f"no SERVER_STATS line: {out!r}")
        s = json.loads(stats[0][len("SERVER_STATS "):])
        if not (s["messages"] > 0 and s["cpu_us"] > 0 and s["backend"]):
            fail(f"SERVER_STATS: {s}")
        tl = s["timeline"]
        if len(tl["t_ns"]) < 2 or tl["messages"][-1] != s["messages"] or \
                len({len(v) for k, v in tl.items() if k != "interval_ms"}) != 1:
            fail(f"SERVER_STATS timeline: {tl}")
        if s["broker"]["malformed_packets"] or s["broker"]["protocol_errors"]:
            fail(f"the bench broke a protocol rule: {s['broker']}")
        if sum(s["broker"]["publishes_sent"]) != s["messages"] or \
                s["driver"]["accepted"] != s["connections_accepted"]:
            fail(f"SERVER_STATS totals: {s['broker']} {s['driver']}")
        single = s
        print(f"ok: {a.backend}: {s['messages']} messages delivered, "
              f"{s['broker']['connects_accepted']} connects")
    finally:
        if broker.poll() is None:
            broker.kill()
            broker.wait()

    # --threads=2 prints the same counters, summed over its Loops (the two
    # brokers' SERVER_STATS are written by one piece of code).
    broker = subprocess.Popen([a.broker, f"--backend={a.backend}", "--listen=127.0.0.1:0",
                               "--threads=2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        m = re.match(r"READY (\S+):(\d+)$", broker.stdout.readline().strip())
        if not m:
            fail(f"--threads=2: no READY line: {broker.stderr.read()}")
        cmd = [a.bench, "client", f"--server={m.group(1)}:{m.group(2)}", "--backend=epoll",
               "--timeout_s=60", "--mode=burst", "--pattern=fanout", "--connections=4",
               "--inflight=4", "--samples=2000", "--warmup=20", "--max_duration_s=30"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        if r.returncode != 0:
            fail(f"--threads=2: {' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
        broker.send_signal(signal.SIGINT)
        out, err = broker.communicate(timeout=20)
        stats = [ln for ln in out.splitlines() if ln.startswith("SERVER_STATS ")]
        if broker.returncode != 0 or len(stats) != 1:
            fail(f"--threads=2: exit {broker.returncode}, {out!r}, {err!r}")
        t = json.loads(stats[0][len("SERVER_STATS "):])
        for part in ("broker", "driver"):
            if set(t[part]) != set(single[part]):
                fail(f"--threads=2 {part} keys differ from one Loop's: "
                     f"{sorted(set(t[part]) ^ set(single[part]))}")
        if t["threads"] != 2 or sum(t["broker"]["publishes_sent"]) != t["messages"] or \
                t["messages"] < 2000 or \
                t["driver"]["shared_sends"] + t["driver"]["payload_bytes_copied"] == 0:
            fail(f"--threads=2 SERVER_STATS: {t['messages']} {t['broker']} {t['driver']}")
        print(f"ok: {a.backend} --threads=2: {t['messages']} messages delivered")
    finally:
        if broker.poll() is None:
            broker.kill()
            broker.wait()


if __name__ == "__main__":
    main()
