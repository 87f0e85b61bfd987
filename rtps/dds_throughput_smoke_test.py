#!/usr/bin/env python3
"""Smoke test of ringlab_dds_throughput (rtps/dds_throughput.cc) on loopback:
bad flags exit 1; a pub and a sub on one preset exchange reliable 64 KiB
samples in their own DDS domain; the sub's bulk JSON and the pub's
SERVER_STATS line hold what the runner reads (experiments/README.md, "The
bulk JSON"). Then LATENCY_BUDGET batching: 64 B samples at a paced 2,000/s,
without a budget (each Write goes out at once: about one datagram per
sample) and with --latency_budget_us=5000 on both sides (about ten samples
share a datagram); the budgeted run must receive well under one datagram
per sample and fewer than the run without. Exit 77 (skipped) when the
preset cannot run here."""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def run_pair(a, flags, sub_flags):
    """Runs a pub and a sub with `flags` (both) in the test's domain: (the
    sub's JSON, the pub's stdout, its stderr, its exit code)."""
    common = [f"--backend={a.backend}", f"--domain={a.domain}"] + flags
    pub = subprocess.Popen([a.binary, "pub"] + common, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        line = pub.stdout.readline()
        if not line.startswith("READY "):
            pub.wait(timeout=10)
            if pub.returncode == 3:
                print("SKIP: " + pub.stderr.read().strip())
                sys.exit(77)
            fail(f"pub did not print READY (exit {pub.returncode}): {pub.stderr.read()}")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "sub.json")
            r = subprocess.run([a.binary, "sub"] + common + sub_flags +
                               ["--timeout_s=20", f"--json={path}"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                fail(f"sub {flags} exit {r.returncode}: {r.stderr}")
            doc = json.load(open(path))
    finally:
        pub.send_signal(signal.SIGINT)
        out, err = pub.communicate(timeout=20)
    return doc, out, err, pub.returncode


def check_batching(a):
    """LATENCY_BUDGET: fewer datagrams per sample with a budget than without."""
    paced = ["--payload=64", "--reliability=reliable", "--rate=2000", "--window=1024"]
    sub = ["--warmup_s=0.2", "--duration_s=1"]
    runs = {}
    for budget in (0, 5000):
        doc, out, err, code = run_pair(a, paced + [f"--latency_budget_us={budget}"], sub)
        stats = [ln for ln in out.splitlines() if ln.startswith("SERVER_STATS ")]
        if code != 0 or len(stats) != 1:
            fail(f"budget {budget}: pub exit {code}: {err}")
        s = json.loads(stats[0][len("SERVER_STATS "):])
        lat = doc.get("latency_us") or {}
        if doc.get("latency_budget_us") != budget or s.get("latency_budget_us") != budget:
            fail(f"budget {budget}: the JSON does not carry it: {json.dumps(doc)[:1000]}")
        if doc.get("samples", 0) < 100 or doc.get("lost") != 0:
            fail(f"budget {budget}: samples {doc.get('samples')}, lost {doc.get('lost')}")
        if not all(isinstance(lat.get(k), (int, float)) for k in ("p50", "p99", "max")) or \
                not 0 < lat["p50"] <= lat["max"]:
            fail(f"budget {budget}: latency_us {lat}")
        runs[budget] = (doc["datagrams_per_sample"], s["rtps"]["batched_datagrams"])
    (plain, _), (budgeted, batched) = runs[0], runs[5000]
    # Without a budget every paced Write is pushed at once (>= 1 datagram per
    # sample with heartbeats); with 5 ms at 2,000/s about ten share one.
    if not budgeted < 0.5 or not budgeted < plain or batched == 0:
        fail(f"datagrams/sample: {plain:.3f} without a budget, {budgeted:.3f} with "
             f"5 ms ({batched} batched datagrams): batching did not happen")
    print(f"ok: {a.backend} datagrams/sample {plain:.3f} without a budget, "
          f"{budgeted:.3f} with 5 ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--backend", default="epoll")
    ap.add_argument("--domain", type=int, default=97)
    a = ap.parse_args()

    for bad in (["pub", "--payload=5"], ["sub", "--nope"], ["both"],
                ["pub", "--latency_budget_us=-1"], ["pub", "--rate=x"]):
        r = subprocess.run([a.binary] + bad, capture_output=True, text=True, timeout=10)
        if r.returncode != 1 or "usage:" not in r.stderr:
            fail(f"{bad}: exit {r.returncode}, stderr {r.stderr!r}")

    doc, out, err, code = run_pair(a, ["--payload=65536", "--reliability=reliable"],
                                   ["--warmup_s=0.5", "--duration_s=1"])
    b = doc.get("bulk") or {}
    checks = [
        (doc.get("mode") == "bulk", "mode"),
        (doc.get("backend") == a.backend, "backend"),
        (doc.get("samples", 0) > 0, "samples"),
        (doc.get("lost") == 0, "reliable samples arrive in order, none lost"),
        (b.get("direction") == "download", "direction"),
        (b.get("bytes") == doc.get("samples", -1) * 65536, "bytes = samples x payload"),
        (b.get("completion_s", 0) > 0, "completion_s"),
        (doc.get("measured_end_ns", 0) > doc.get("measured_start_ns", 0), "measured phase"),
        (all(k in b for k in ("retransmission_ratio", "spurious_retransmissions",
                              "client_cpu_us_per_mb")), "required bulk keys"),
    ]
    for ok, what in checks:
        if not ok:
            fail(f"sub JSON: {what}: {json.dumps(doc)[:2000]}")
    stats = [ln for ln in out.splitlines() if ln.startswith("SERVER_STATS ")]
    if code != 0 or len(stats) != 1:
        fail(f"pub exit {code}, {len(stats)} SERVER_STATS lines: {err}")
    s = json.loads(stats[0][len("SERVER_STATS "):])
    tl = s.get("timeline", {})
    cols = [tl.get(k, []) for k in ("t_ns", "cpu_us", "messages", "kernel_entries",
                                    "rss_kib", "connections")]
    if s.get("messages", 0) < doc["samples"] or len(cols[0]) < 2 or \
            len({len(c) for c in cols}) != 1:
        fail(f"SERVER_STATS: {stats[0][:2000]}")
    print(f"ok: {a.backend} {doc['samples']} samples, "
          f"{b['goodput_bytes_per_s'] / 1e6:.0f} MB/s (smoke test, not a measurement)")
    check_batching(a)


if __name__ == "__main__":
    main()
