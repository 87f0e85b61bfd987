#!/usr/bin/env python3
"""Loopback smoke test for ringlab_pingpong (ctest label: loopback).

Starts a server on 127.0.0.1:0, waits for its READY line, runs a short client
against it, checks the client's JSON result against the shared schema, stops
the server with SIGTERM and checks its SERVER_STATS. Exit 77 (ctest
SKIP_RETURN_CODE) when the backend preset is unsupported on this machine
(exit code 3 from either side), so an unsupported preset is reported as
skipped, never as passed. It also checks the measured phase's clock
(measured_start_ns / measured_end_ns), the server's timeline, and a
--max_duration_s run. With --check_usage it checks the usage-error and
failure exit codes instead (also: more --connections than RLIMIT_NOFILE
allows exits 3).

Standard library only.
"""

import argparse
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
SAMPLES = 2000
WARMUP = 200


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def skip(message):
    print(f"SKIP: {message}")
    sys.exit(SKIP)


def check(condition, message):
    if not condition:
        fail(message)


def start_server(args, json_path):
    cmd = [args.binary, "server", f"--proto={args.proto}",
           f"--backend={args.backend}", "--bind=127.0.0.1:0",
           f"--json={json_path}"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([server.stdout], [], [], 0.2)
        if ready:
            line = server.stdout.readline()
            if line.startswith("READY "):
                return server, line.split()[1]
            if line == "":  # stdout closed: the server is exiting
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                break
            fail(f"unexpected server output before READY: {line!r}")
        if server.poll() is not None:
            break
    if server.poll() is None:
        server.kill()
        fail("server printed no READY line within 20 s")
    err = server.stderr.read()
    if server.returncode == 3:
        skip(f"backend {args.backend} unsupported (server exit 3): "
             f"{err.strip()}")
    fail(f"server exited {server.returncode} before READY: {err}")


def stop_server(server):
    server.send_signal(signal.SIGTERM)
    try:
        out, err = server.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        fail("server did not exit within 10 s of SIGTERM")
    return server.returncode, out, err


def run_client(args, address, extra, timeout=90):
    cmd = [args.binary, "client", f"--proto={args.proto}",
           f"--backend={args.backend}", f"--server={address}",
           f"--mode={args.mode}", f"--connections={args.connections}",
           "--timeout_s=30"] + extra
    if args.mode == "rate":
        cmd.append(f"--rate={args.rate}")
    if args.mode == "burst":
        cmd.append(f"--inflight={args.inflight}")
    print("+", " ".join(cmd))
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout)


def validate_result(result, args, samples, warmup):
    for key in ("schema", "program", "protocol", "backend",
                "backend_requested", "backend_flags", "backend_note", "mode",
                "payload_bytes", "connections", "inflight", "rate_per_s",
                "samples", "warmup", "lost", "rtt_us", "duration_s",
                "messages_per_s", "cpu_us_per_msg", "kernel_entries_per_msg",
                "counters", "cpu"):
        check(key in result, f"result lacks '{key}': {result}")
    check(result["schema"] == "ringlab.pingpong/1", "schema")
    check(result["program"] == "ringlab_pingpong", "program")
    check(result["protocol"] == args.proto, "protocol")
    check(result["backend"] == args.backend,
          f"backend {result['backend']} != requested {args.backend}")
    check(result["backend_requested"] == args.backend, "backend_requested")
    check(isinstance(result["backend_flags"], str) and result["backend_flags"],
          "backend_flags empty")
    check(result["mode"] == args.mode, "mode")
    check(result["payload_bytes"] == 64, "payload_bytes")
    check(result["connections"] == args.connections, "connections")
    check(result["samples"] == samples,
          f"samples {result['samples']} != {samples}")
    check(result["warmup"] == warmup, "warmup")
    check(isinstance(result["lost"], int) and result["lost"] >= 0, "lost")
    rtt = result["rtt_us"]
    order = ["min", "p50", "p90", "p99", "p999", "max"]
    for key in order + ["mean"]:
        check(isinstance(rtt.get(key), (int, float)), f"rtt_us.{key}")
    check(rtt["min"] > 0, "rtt min must be > 0")
    values = [rtt[k] for k in order]
    check(values == sorted(values), f"rtt percentiles not monotone: {rtt}")
    check(rtt["min"] <= rtt["mean"] <= rtt["max"], "mean outside [min, max]")
    check(result["duration_s"] > 0, "duration_s")
    check(result["messages_per_s"] > 0, "messages_per_s")
    check(result["cpu_us_per_msg"] >= 0, "cpu_us_per_msg")
    check(result["kernel_entries_per_msg"] > 0,
          "kernel_entries_per_msg must be > 0 (counters not wired?)")
    counters = result["counters"]
    for key in ("io_uring_enter", "epoll_wait", "socket_syscalls",
                "completions", "bytes_sent", "bytes_received"):
        check(isinstance(counters.get(key), int), f"counters.{key}")
    # Answers that arrived in the same read as the last warm-up answer are
    # counted before the measured phase starts, so allow for what can be in
    # flight at that moment.
    slack = {"pingpong": 0, "burst": args.connections * args.inflight,
             "rate": samples // 2}[args.mode]
    expected = (samples - slack) * 64
    check(counters["bytes_received"] >= expected,
          f"measured phase received {counters['bytes_received']} bytes, "
          f"expected >= {expected}")
    uring = args.backend.startswith("uring")
    # A burst with at least as many messages in flight as the measured phase
    # has samples can finish it from one batch of events, without a wait in
    # the phase (seen: 1,000 connections x 8, 100 samples, epoll_wait=0).
    may_not_wait = (args.mode == "burst" and
                    samples <= args.connections * args.inflight)
    # The other backend's wait is never used; this one's at least once,
    # unless the phase may finish without waiting.
    used, unused = (("io_uring_enter", "epoll_wait") if uring else
                    ("epoll_wait", "io_uring_enter"))
    check(counters[unused] == 0,
          f"{unused}={counters[unused]} on {args.backend}")
    if uring or not may_not_wait:
        check(counters[used] > 0, f"{used}={counters[used]} on {args.backend}")
    check(result["cpu"] == -1, "cpu")
    # Burst: the client kept its target in flight (the epoll client used to
    # keep ~2,000 of 1,000 x 8, its pool spent on queued sends).
    # Checked once the measured phase is long enough to leave the ramp-up.
    target = args.connections * args.inflight
    if args.mode == "burst" and samples >= 4 * target:
        achieved = result.get("inflight_achieved")
        check(isinstance(achieved, (int, float)) and
              0.5 * target <= achieved <= target,
              f"inflight_achieved {achieved} of {target} in flight")


def smoke(args):
    with tempfile.TemporaryDirectory(prefix="pingpong_smoke_") as tmp:
        server_json = os.path.join(tmp, "server.json")
        client_json = os.path.join(tmp, "client.json")
        server, address = start_server(args, server_json)
        try:
            run = run_client(args, address,
                             [f"--samples={args.samples}", f"--warmup={WARMUP}",
                              f"--json={client_json}"])
            if run.returncode == 3:
                skip(f"backend {args.backend} unsupported (client exit 3): "
                     f"{run.stderr.strip()}")
            print(run.stdout, end="")
            check(run.returncode == 0,
                  f"client exited {run.returncode}: {run.stderr}")
            check("rtt us:" in run.stdout, "no human-readable summary")
            check("RESULT " not in run.stdout,
                  "RESULT line printed although --json was given")
            with open(client_json) as f:
                first = json.load(f)
            validate_result(first, args, args.samples, WARMUP)
            check(first["measured_start_ns"] < first["measured_end_ns"],
                  "measured phase start/end (CLOCK_MONOTONIC ns)")

            # Without --json the result is the last stdout line.
            run = run_client(args, address, ["--samples=100", "--warmup=10"])
            check(run.returncode == 0,
                  f"second client exited {run.returncode}: {run.stderr}")
            last = run.stdout.strip().splitlines()[-1]
            check(last.startswith("RESULT "), f"last line is {last!r}")
            validate_result(json.loads(last[len("RESULT "):]), args, 100, 10)

            # --max_duration_s: samples become a cap; the phase ends by time.
            cap = 10**9
            run = run_client(args, address, [f"--samples={cap}", "--warmup=10",
                                             "--max_duration_s=0.3",
                                             "--timeout_s=20"])
            check(run.returncode == 0,
                  f"--max_duration_s client exited {run.returncode}: "
                  f"{run.stderr}")
            timed = json.loads(run.stdout.strip().splitlines()[-1][7:])
            check(0 < timed["samples"] < cap, f"samples {timed['samples']}")
            check(timed["duration_s"] >= 0.3,
                  f"measured phase ended early: {timed['duration_s']} s")
            check(abs(timed["messages_per_s"] * timed["duration_s"] -
                      timed["samples"]) <= 1, "msg/s counts recorded samples")
        finally:
            if server.poll() is None:
                code, out, err = stop_server(server)
            else:
                code, out, err = server.returncode, "", server.stderr.read()
        check(code == 0, f"server exited {code} after SIGTERM: {err}")
        lines = [l for l in out.splitlines() if l.startswith("SERVER_STATS ")]
        check(len(lines) == 1, f"expected one SERVER_STATS line: {out!r}")
        stats = json.loads(lines[0][len("SERVER_STATS "):])
        with open(server_json) as f:
            check(json.load(f) == stats, "server --json differs from stdout")
        check(stats["backend"] == args.backend, "server backend")
        check(stats["protocol"] == args.proto, "server protocol")
        total = (args.samples + WARMUP + 110) * 64
        check(stats["bytes_echoed"] >= total,
              f"server echoed {stats['bytes_echoed']} bytes, "
              f"expected >= {total}")
        if args.proto == "udp":
            check(stats["datagrams_echoed"] >= args.samples + WARMUP + 110,
                  "datagrams_echoed")
        else:
            check(stats["connections_accepted"] == 3 * args.connections,
                  f"connections_accepted {stats['connections_accepted']}")
        # The timeline the runner cuts the measured phase from.
        tl = stats["timeline"]
        n = len(tl["t_ns"])
        check(n >= 2, f"timeline has {n} samples")
        for key in ("cpu_us", "messages", "kernel_entries", "rss_kib",
                    "connections"):
            check(len(tl[key]) == n, f"timeline.{key} length")
        for key in ("t_ns", "cpu_us", "messages", "kernel_entries"):
            check(tl[key] == sorted(tl[key]), f"timeline.{key} not cumulative")
        check(tl["messages"][-1] == stats["messages"], "timeline ends at total")
        check(tl["t_ns"][0] <= first["measured_start_ns"] and
              first["measured_end_ns"] <= tl["t_ns"][-1],
              "the timeline does not cover the client's measured phase")
        check(stats["rss_kib_ready"] > 0, "rss_kib_ready")
        check(stats["nofile_limit"] >= 64, "nofile_limit")
        print(f"server: {lines[0][:300]}...")
    print("PASS")


def smoke_idle(args):
    """--mode=idle: a warm-up, then a quiet phase; the result reports the
    Loop's CPU share and no latency (a hybrid preset must sleep when idle)."""
    with tempfile.TemporaryDirectory(prefix="pingpong_idle_") as tmp:
        server, address = start_server(args, os.path.join(tmp, "server.json"))
        try:
            run = run_client(args, address, ["--warmup=200", "--idle_s=0.5"])
            if run.returncode == 3:
                skip(f"backend {args.backend} unsupported (client exit 3): "
                     f"{run.stderr.strip()}")
            print(run.stdout, end="")
            check(run.returncode == 0,
                  f"client exited {run.returncode}: {run.stderr}")
            check("idle " in run.stdout, "no idle summary line")
            last = run.stdout.strip().splitlines()[-1]
            check(last.startswith("RESULT "), f"last line is {last!r}")
            result = json.loads(last[len("RESULT "):])
        finally:
            if server.poll() is None:
                code, _, err = stop_server(server)
            else:
                code, err = server.returncode, server.stderr.read()
        check(code == 0, f"server exited {code} after SIGTERM: {err}")
    check(result["mode"] == "idle", "mode")
    check(result["backend"] == args.backend, "backend")
    check(result["samples"] == 0, f"samples {result['samples']}")
    check(all(v is None for v in result["rtt_us"].values()),
          f"idle mode reported latencies: {result['rtt_us']}")
    check(result["duration_s"] >= 0.5,
          f"quiet phase ended early: {result['duration_s']} s")
    check(isinstance(result["cpu_pct"], (int, float)) and
          0 <= result["cpu_pct"] <= 200, f"cpu_pct {result['cpu_pct']}")
    counters = result["counters"]
    check(counters["bytes_sent"] == 0 and counters["bytes_received"] == 0,
          f"traffic in the quiet phase: {counters}")
    if "hybrid_spin" in result["backend_flags"]:
        # Counts, not times: an idle hybrid Loop never polls for a reply.
        check(counters["hybrid_spins"] == 0,
              f"idle hybrid Loop spun {counters['hybrid_spins']} times")
    print("PASS")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_usage(args):
    def run(extra, timeout=30):
        return subprocess.run([args.binary] + extra, capture_output=True,
                              text=True, timeout=timeout)

    r = run([])
    check(r.returncode == 2, f"no arguments: exit {r.returncode}")
    r = run(["client", "--bogus=1"])
    check(r.returncode == 2 and "valid flags" in r.stderr,
          f"unknown flag: exit {r.returncode}: {r.stderr}")
    check("--samples" in r.stderr, "unknown-flag message lists flags")
    r = run(["server", "--samples=5"])
    check(r.returncode == 2, "client-only flag accepted by server")
    r = run(["client", "--payload=8"])
    check(r.returncode == 2 and ">= 16" in r.stderr,
          f"small payload: exit {r.returncode}: {r.stderr}")
    r = run(["client", "--proto=udp", "--payload=70000"])
    check(r.returncode == 2, "oversized UDP payload accepted")
    r = run(["client", "--backend=nope"])
    check(r.returncode == 2 and "uring-fixed" in r.stderr,
          f"unknown backend: exit {r.returncode}: {r.stderr}")
    r = run(["client", "--mode=rate"])
    check(r.returncode == 2, "rate mode without --rate accepted")
    r = run(["client", "--samples=0"])
    check(r.returncode == 2, "--samples=0 accepted")
    r = run(["client", "--hybrid_spin_max_us=0"])
    check(r.returncode == 2, "--hybrid_spin_max_us=0 accepted")
    r = run(["client", "--mode=idle", "--idle_s=0"])
    check(r.returncode == 2, "--idle_s=0 accepted")
    r = run(["--help"])
    check(r.returncode == 0 and "usage" in r.stdout, "--help")
    # More connections than the hard descriptor limit allows: "unsupported
    # here" (3) with both numbers, before any socket is opened.
    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
    for role, address in (("client", "--server=127.0.0.1:9"),
                          ("server", "--bind=127.0.0.1:0")):
        r = subprocess.run([args.binary, role, "--proto=tcp", "--backend=epoll",
                            "--connections=200", address],
                           capture_output=True, text=True, timeout=30,
                           preexec_fn=low_nofile)
        check(r.returncode == 3 and "RLIMIT_NOFILE allows 100" in r.stderr,
              f"{role} over the fd limit: exit {r.returncode}: {r.stderr}")
    # Nobody listens on this port: a run failure (1), not a hang.
    port = free_port()
    for proto in ("udp", "tcp"):
        start = time.monotonic()
        r = run(["client", f"--proto={proto}", "--backend=epoll",
                 f"--server=127.0.0.1:{port}", "--samples=10", "--warmup=0",
                 "--timeout_s=5"])
        check(r.returncode == 1,
              f"{proto} client without server: exit {r.returncode}: "
              f"{r.stderr}")
        check(time.monotonic() - start < 20, "unreachable server took too long")
        print(f"{proto} without server: {r.stderr.strip()}")
    print("PASS")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--proto", default="udp")
    parser.add_argument("--backend", default="epoll")
    parser.add_argument("--mode", default="pingpong")
    parser.add_argument("--rate", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--samples", type=int, default=SAMPLES,
                        help="measured round trips of the main run")
    parser.add_argument("--check_usage", action="store_true")
    args = parser.parse_args()
    if args.check_usage:
        check_usage(args)
    elif args.mode == "idle":
        smoke_idle(args)
    else:
        smoke(args)


if __name__ == "__main__":
    main()
