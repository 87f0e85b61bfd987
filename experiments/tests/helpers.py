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


# ---------------------------------------------------------------- protocol runs

HOST = {1: 1.0, 2: 1.3, 3: 0.9}   # the host's speed factor per repetition


def proto_record(program, variant, protocol, rep, mode="pingpong", connections=1, payload=64,
                 params=None, inflight=1, rate=None, p50=None, p99=None, mps=None,
                 **extra):
    """A record of one case repetition, with a case id built like the suite
    loader's (so report.scenarios groups it), latency and throughput scaled
    by HOST[rep]."""
    from ringlab_exp.suite import params_id
    params = dict(params or {})
    kind = "peer" if program in ("ddsperf", "mosquitto", "enet", "sockperf") else "ours"
    parts = [protocol, f"{payload}B", f"c{connections}", mode]
    if mode == "rate":
        parts.append(f"r{rate:g}")
    if mode == "burst":
        parts.append(f"i{inflight}")
    parts += params_id(sorted(params.items())) + [program, variant]
    h = HOST[rep]
    rec = make_record(program=program, variant=variant, protocol=protocol, rep=rep,
                      kind=kind, p50=(p50 or 10.0) * h, p99=(p99 or (p50 or 10.0) * 2) * h,
                      mps=(mps or 1e4) / h, case_id="-".join(parts), mode=mode,
                      connections=connections, payload_bytes=payload, params=params,
                      inflight=inflight, rate_per_s=rate)
    if p50 is None:
        rec["rtt_us"] = {k: None for k in rec["rtt_us"]}
    if kind == "peer":
        rec["kernel_entries_per_msg"] = None
    for key, value in extra.items():
        if key == "bulk":
            value = dict(value)
            for f in ("goodput_bytes_per_s",):
                value[f] = value[f] / h
            value["completion_s"] = value["bytes"] / value["goodput_bytes_per_s"]
        elif key == "server_cpu_us_per_msg" and value is not None:
            value = value * h
        rec[key] = value
    return rec


def bulk_fields(goodput, loss, direction, nbytes=104857600, entries=None):
    from ringlab_exp.parsers import BULK_FIELDS
    b = {k: None for k in BULK_FIELDS}
    b.update(direction=direction, bytes=nbytes, chunk_bytes=65536, completion_s=1.0,
             goodput_bytes_per_s=goodput, retransmission_ratio=loss / 100 * 1.1,
             spurious_retransmissions=int(loss * 3), client_cpu_us_per_mb=2000.0,
             client_cpu_source="program (client, transfer)", server_cpu_us_per_mb=1500.0,
             server_cpu_source="program (bulk.server_cpu_us_per_mb)",
             client_kernel_entries_per_mb=entries, server_kernel_entries_per_mb=None)
    return b


def protocol_records():
    """Three repetitions of a run with every protocol family: raw UDP rows of
    ringlab_pingpong, DDS (ours and ddsperf), MQTT (round trip per QoS,
    fan-in and fan-out against mosquitto) and reliable UDP (round trip and
    bulk goodput per loss rate against ENet). The numbers are chosen so the
    issues' targets have known verdicts (see test_protocol_report.py)."""
    recs = []
    for rep in (1, 2, 3):
        for variant, p50 in (("epoll", 20.0), ("uring-fixed", 18.0), ("uring-busy", 8.0)):
            recs.append(proto_record("ringlab_pingpong", variant, "udp", rep, p50=p50))
        rel = {"reliability": "reliable"}
        for variant, p50 in (("epoll", 21.0), ("uring-fixed", 19.0), ("uring-busy", 9.6)):
            recs.append(proto_record("ringlab_dds_pingpong", variant, "dds", rep, p50=p50,
                                     params=rel, kernel_entries_per_msg=4.0))
        recs.append(proto_record("ddsperf", "listener", "dds", rep, p50=30.0, params=rel))
        for qos in (0, 1):
            for prog, variant, p50 in (("ringlab_mqtt_broker", "epoll", 40.0),
                                       ("ringlab_mqtt_broker", "uring-fixed", 34.0),
                                       ("mosquitto", "default", 60.0)):
                recs.append(proto_record(prog, variant, "mqtt", rep, p50=p50 * (1 + qos),
                                         params={"qos": qos}, server_cpu_us_per_msg=5.0))
        for pattern, widths in (("fanin", (100, 1000)), ("fanout", (10, 100, 1000))):
            for n in widths:
                for prog, variant, mps, cpu in (("ringlab_mqtt_broker", "epoll", 3e5, 3.0),
                                                ("ringlab_mqtt_broker", "uring-fixed", 4e5, 2.0),
                                                ("mosquitto", "default", 1.5e5, 6.0)):
                    grow = 1 + n / 2000
                    fan = n if pattern == "fanout" else 1
                    r = proto_record(prog, variant, "mqtt", rep, mode="burst", inflight=8,
                                     connections=n, p50=200.0 * grow, mps=mps / grow / fan,
                                     params={"qos": 0, "pattern": pattern},
                                     server_cpu_us_per_msg=cpu * grow,
                                     connections_open=n + 1)
                    r["deliveries_per_s"] = r["messages_per_s"] * fan
                    recs.append(r)
        for prog, variant, p50 in (("ringlab_rudp_bench", "epoll", 25.0),
                                   ("ringlab_rudp_bench", "uring-fixed", 22.0),
                                   ("enet", "default", 35.0)):
            recs.append(proto_record(prog, variant, "rudp", rep, p50=p50,
                                     params={"loss_pct": 0}))
        for loss in (0, 1, 5, 20):
            for direction in ("upload", "download"):
                for prog, variant, base, slope, entries in (
                        ("ringlab_rudp_bench", "epoll", 1e8, 0.1, 40.0),
                        ("ringlab_rudp_bench", "uring-fixed", 1.1e8, 0.1, 15.0),
                        ("enet", "default", 6e7, 0.5, None)):
                    recs.append(proto_record(
                        prog, variant, "rudp", rep, mode="bulk", payload=65536,
                        params={"loss_pct": loss, "direction": direction,
                                "bytes": 104857600},
                        bulk=bulk_fields(base / (1 + loss * slope), loss, direction,
                                         entries=entries)))
    return recs
