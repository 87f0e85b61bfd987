"""Shared test helpers: synthetic records and temporary suite files."""

import copy
import pathlib
import sys
import tempfile

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent
if str(EXPERIMENTS) not in sys.path:
    sys.path.insert(0, str(EXPERIMENTS))

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
FAKE = FIXTURES / "fake_pingpong.py"

MACHINE = {"hostname": "testhost", "kernel": "6.1.0", "cpu_model": "Test CPU", "cores": 2,
           "liburing": "2.3-3", "compiler": "g++ 12", "build_type": "Release",
           "git_commit": "abc123", "git_dirty": False, "time_utc": "2025-01-01T00:00:00Z",
           "python": "3.11.7", "memlock_limit": "8192 KiB", "io_uring_disabled": "0",
           "peer_versions": {"sockperf": "3.7"}}


def make_record(program="ringlab_pingpong", variant="epoll", protocol="udp", rep=1,
                p50=20.0, p99=40.0, mps=40000.0, status="ok", kind=None, **extra):
    kind = kind or ("peer" if program == "sockperf" else "ours")
    case_id = f"{protocol}-64B-c1-pingpong-{program}-{variant}"
    rec = {
        "schema": "ringlab.result/1", "run_id": "t/1", "suite": "t", "case_id": case_id,
        "case_index": 1, "case_count": 1, "repetition": rep, "repetitions": 3,
        "status": status, "reason": None if status == "ok" else "because",
        "stderr_tail": None, "program": program, "program_kind": kind, "variant": variant,
        "implementation": f"{program}:{variant}", "backend": variant,
        "backend_effective": variant if status == "ok" else None, "flags": "edge_triggered",
        "protocol": protocol, "payload_bytes": 64, "connections": 1, "mode": "pingpong",
        "rate_per_s": None, "inflight": 1, "samples_requested": 1000, "warmup": 100,
        "duration_s_requested": 1.0, "samples": 1000 if status == "ok" else None, "lost": 0,
        "rtt_us": {"min": p50 / 2, "mean": p50 * 1.1, "p50": p50, "p90": p50 * 1.2,
                   "p99": p99, "p999": p99 * 1.5, "max": p99 * 3} if status == "ok" else
        {k: None for k in ("min", "mean", "p50", "p90", "p99", "p999", "max")},
        "rtt_note": None, "messages_per_s": mps if status == "ok" else None,
        "cpu_us_per_msg": 5.0 if status == "ok" else None, "cpu_source": "program",
        "kernel_entries_per_msg": (2.0 if kind == "ours" else None) if status == "ok" else None,
        "server_stats": None,
        "pinning": {"server_cpu": 0, "client_cpu": 1, "method": "flag"},
        "topology": "loopback", "server_address": "127.0.0.1:1",
        "commands": {"server": ["x"], "client": ["y"]}, "started_utc": "2025-01-01T00:00:00Z",
        "wall_s": 1.0, "machine": copy.deepcopy(MACHINE), "program_result": None,
    }
    rec.update(extra)
    return rec


def write_suite(tmpdir, text, name="t.toml"):
    path = pathlib.Path(tmpdir) / name
    path.write_text(text)
    return path


def tempdir(testcase):
    d = tempfile.TemporaryDirectory(prefix="ringlab-test-")
    testcase.addCleanup(d.cleanup)
    return pathlib.Path(d.name)
