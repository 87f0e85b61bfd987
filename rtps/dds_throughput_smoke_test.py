#!/usr/bin/env python3
"""Smoke test of ringlab_dds_throughput (rtps/dds_throughput.cc) on loopback:
bad flags exit 1; a pub and a sub on one preset exchange reliable 64 KiB
samples in their own DDS domain; the sub's bulk JSON and the pub's
SERVER_STATS line hold what the runner reads (experiments/README.md, "The
bulk JSON"). Exit 77 (skipped) when the preset cannot run here."""

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--backend", default="epoll")
    ap.add_argument("--domain", type=int, default=97)
    a = ap.parse_args()

    for bad in (["pub", "--payload=5"], ["sub", "--nope"], ["both"]):
        r = subprocess.run([a.binary] + bad, capture_output=True, text=True, timeout=10)
        if r.returncode != 1 or "usage:" not in r.stderr:
            fail(f"{bad}: exit {r.returncode}, stderr {r.stderr!r}")

    common = [f"--backend={a.backend}", f"--domain={a.domain}", "--payload=65536",
              "--reliability=reliable"]
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
            r = subprocess.run([a.binary, "sub"] + common +
                               ["--warmup_s=0.5", "--duration_s=1", "--timeout_s=20",
                                f"--json={path}"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                fail(f"sub exit {r.returncode}: {r.stderr}")
            doc = json.load(open(path))
    finally:
        pub.send_signal(signal.SIGINT)
        out, err = pub.communicate(timeout=20)
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
    if pub.returncode != 0 or len(stats) != 1:
        fail(f"pub exit {pub.returncode}, {len(stats)} SERVER_STATS lines: {err}")
    s = json.loads(stats[0][len("SERVER_STATS "):])
    tl = s.get("timeline", {})
    cols = [tl.get(k, []) for k in ("t_ns", "cpu_us", "messages", "kernel_entries",
                                    "rss_kib", "connections")]
    if s.get("messages", 0) < doc["samples"] or len(cols[0]) < 2 or \
            len({len(c) for c in cols}) != 1:
        fail(f"SERVER_STATS: {stats[0][:2000]}")
    print(f"ok: {a.backend} {doc['samples']} samples, "
          f"{b['goodput_bytes_per_s'] / 1e6:.0f} MB/s (smoke test, not a measurement)")


if __name__ == "__main__":
    main()
