"""Turns a client's output into the metric fields of a result record.

Each registry entry names one parser here (PARSERS). A parser takes the
client's stdout and stderr text and the path of its --json file (which may not
exist) and returns a dict with these keys (None where the program cannot say):

    samples, lost, rtt_us {min mean p50 p90 p99 p999 max} (full round trips, µs),
    rtt_note, messages_per_s, cpu_us_per_msg, kernel_entries_per_msg,
    backend_effective, flags, total_messages (for CPU/message from rusage),
    program_result (the program's own JSON, if any),
    deliveries_per_s, connections_open (MQTT throughput modes), and bulk (a
    bulk transfer's figures, see bulk_metrics)

It raises ParseError with a human-readable reason when the output holds no
result. Adding a peer (ddsperf, mosquitto, ENet) means adding one function and
naming it in registry.toml.
"""

import json
import pathlib
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RTT_KEYS = ("min", "mean", "p50", "p90", "p99", "p999", "max")


class ParseError(Exception):
    pass


def empty_metrics():
    return {"samples": None, "lost": None, "rtt_us": {k: None for k in RTT_KEYS},
            "rtt_note": None, "messages_per_s": None, "cpu_us_per_msg": None,
            "kernel_entries_per_msg": None, "backend_effective": None, "flags": None,
            "total_messages": None, "program_result": None, "deliveries_per_s": None,
            "connections_open": None, "bulk": None, "inflight_achieved": None}


def parse_ringlab_json(stdout, stderr, json_path):
    """ringlab_pingpong: the --json file, else the last `RESULT {...}` line."""
    doc = None
    if json_path and pathlib.Path(json_path).exists():
        text = pathlib.Path(json_path).read_text(encoding="utf-8", errors="replace")
        if text.strip():
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as e:
                raise ParseError(f"{json_path}: invalid JSON: {e}") from None
    if doc is None:
        for line in reversed(stdout.splitlines()):
            if line.startswith("RESULT "):
                try:
                    doc = json.loads(line[len("RESULT "):])
                except json.JSONDecodeError as e:
                    raise ParseError(f"RESULT line is not valid JSON: {e}") from None
                break
    if doc is None:
        raise ParseError("no --json file and no RESULT line in the client output")
    if not isinstance(doc, dict) or "rtt_us" not in doc:
        raise ParseError("client JSON has no rtt_us object")
    if doc.get("mode") == "bulk" and not isinstance(doc.get("bulk"), dict):
        raise ParseError("client JSON says mode bulk but has no bulk object")
    m = empty_metrics()
    rtt = doc.get("rtt_us") or {}
    m["rtt_us"] = {k: _num(rtt.get(k)) for k in RTT_KEYS}
    m["samples"] = _int(doc.get("samples"))
    m["lost"] = _int(doc.get("lost"))
    m["messages_per_s"] = _num(doc.get("messages_per_s"))
    m["cpu_us_per_msg"] = _num(doc.get("cpu_us_per_msg"))
    m["kernel_entries_per_msg"] = _num(doc.get("kernel_entries_per_msg"))
    m["backend_effective"] = doc.get("backend")
    m["flags"] = doc.get("backend_flags")
    note = doc.get("backend_note")
    m["rtt_note"] = f"backend note: {note}" if note else None
    # Throughput modes of a broker bench (MQTT fan-in/fan-out): deliveries
    # count each subscriber's copy; total_messages covers the whole run.
    m["deliveries_per_s"] = _num(doc.get("deliveries_per_s"))
    m["connections_open"] = _int(doc.get("connections_open"))
    # ringlab_pingpong burst: the mean in flight it achieved (of
    # connections x inflight asked for).
    m["inflight_achieved"] = _num(doc.get("inflight_achieved"))
    m["total_messages"] = _num(doc.get("total_messages"))
    m["bulk"] = bulk_metrics(doc)
    m["program_result"] = doc
    return m


# A bulk object's fields (experiments/README.md, "The bulk JSON"); MB = 1e6
# bytes of application payload.
BULK_FIELDS = ("direction", "bytes", "chunk_bytes", "completion_s", "goodput_bytes_per_s",
               "receive_span_s", "retransmission_ratio", "spurious_retransmissions",
               "client_cpu_us_per_mb", "client_cpu_source", "server_cpu_us_per_mb",
               "server_cpu_source", "client_kernel_entries_per_mb",
               "server_kernel_entries_per_mb")


# Keys a bulk object must have (values may be null where SCHEMA.md allows).
BULK_REQUIRED = ("direction", "bytes", "completion_s", "retransmission_ratio",
                 "spurious_retransmissions", "client_cpu_us_per_mb")


def bulk_metrics(doc):
    """The record's `bulk` object from a client JSON's `bulk` section, or
    None when there is none. Required there: `bytes` (application payload
    delivered, > 0) and `completion_s` (> 0). `goodput_bytes_per_s` defaults
    to bytes / completion_s. The server's CPU per MB comes from
    `bulk.server_cpu_us_per_mb`, else from a top-level `server.cpu_us` (the
    server's own CPU since the connection, which ringlab_enet_bench fetches
    after the transfer); the runner fills what is still missing from the
    server's timeline or rusage."""
    b = doc.get("bulk")
    if b is None:
        return None
    if not isinstance(b, dict):
        raise ParseError("bulk: expected an object")
    for key in BULK_REQUIRED:
        if key not in b:
            raise ParseError(f"bulk.{key}: missing (null if the program cannot say)")
    nbytes, seconds = _num(b.get("bytes")), _num(b.get("completion_s"))
    if not nbytes or nbytes <= 0:
        raise ParseError("bulk.bytes: expected the number of payload bytes transferred (> 0)")
    if not seconds or seconds <= 0:
        raise ParseError("bulk.completion_s: expected the transfer's duration in s (> 0)")
    direction = b.get("direction")
    if direction not in ("upload", "download", None):
        raise ParseError(f"bulk.direction: {direction!r}; expected upload or download")
    mb = nbytes / 1e6
    out = {k: None for k in BULK_FIELDS}
    out.update({
        "direction": direction, "bytes": int(nbytes), "chunk_bytes": _int(b.get("chunk_bytes")),
        "completion_s": seconds,
        "goodput_bytes_per_s": _num(b.get("goodput_bytes_per_s")) or nbytes / seconds,
        "receive_span_s": _num(b.get("receive_span_s")),
        "retransmission_ratio": _num(b.get("retransmission_ratio")),
        "spurious_retransmissions": _int(b.get("spurious_retransmissions")),
        "client_cpu_us_per_mb": _num(b.get("client_cpu_us_per_mb")),
        "server_cpu_us_per_mb": _num(b.get("server_cpu_us_per_mb")),
        "client_kernel_entries_per_mb": _num(b.get("client_kernel_entries_per_mb")),
        "server_kernel_entries_per_mb": _num(b.get("server_kernel_entries_per_mb")),
    })
    if out["client_cpu_us_per_mb"] is not None:
        out["client_cpu_source"] = "program (client, transfer)"
    if out["server_cpu_us_per_mb"] is not None:
        out["server_cpu_source"] = "program (bulk.server_cpu_us_per_mb)"
    else:
        server = doc.get("server")
        cpu = _num(server.get("cpu_us")) if isinstance(server, dict) else None
        if cpu is not None:
            out["server_cpu_us_per_mb"] = cpu / mb
            out["server_cpu_source"] = "program (server.cpu_us: the server's own CPU since " \
                                       "the connection, fetched after the transfer)"
    return out


_SOCKPERF_PCT = {"p50": "50.000", "p90": "90.000", "p99": "99.000", "p999": "99.900"}


def parse_sockperf(stdout, stderr, json_path):
    """sockperf pp. Its numbers are RTT/2 unless --full-rtt was given; the
    output says which ("avg-rtt"/"Round trip is" vs "avg-latency"/"Latency
    is"), and half values are doubled here so every record holds full RTT."""
    text = _ANSI.sub("", stdout + "\n" + stderr)
    m = empty_metrics()
    obs = re.search(r"Total (\d+) observations", text)
    if not obs:
        err = re.search(r"sockperf: (?:ERROR|error)[^\n]*", text)
        raise ParseError(err.group(0) if err else "no 'Total N observations' line in "
                         "sockperf output (did the test run?)")
    m["samples"] = int(obs.group(1))
    if re.search(r"avg-rtt=|Round trip is", text):
        factor, m["rtt_note"] = 1.0, "sockperf --full-rtt"
    elif re.search(r"avg-latency=|Latency is", text):
        factor, m["rtt_note"] = 2.0, "sockperf reported RTT/2; doubled"
    else:
        raise ParseError("sockperf output says neither avg-rtt nor avg-latency")

    def grab(pattern):
        hit = re.search(pattern, text)
        return float(hit.group(1)) * factor if hit else None

    rtt = {"min": grab(r"<MIN> observation\s*=\s*([\d.]+)"),
           "max": grab(r"<MAX> observation\s*=\s*([\d.]+)"),
           "mean": grab(r"avg-(?:rtt|latency)=([\d.]+)")}
    for key, pct in _SOCKPERF_PCT.items():
        rtt[key] = grab(rf"percentile {re.escape(pct)}\s*=\s*([\d.]+)")
    m["rtt_us"] = {k: rtt.get(k) for k in RTT_KEYS}
    if m["rtt_us"]["p50"] is None:
        raise ParseError("sockperf output has no 50th percentile line")
    valid = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); "
                      r"ReceivedMessages=(\d+)", text)
    if valid and float(valid.group(1)) > 0:
        m["messages_per_s"] = int(valid.group(3)) / float(valid.group(1))
    total = re.search(r"\[Total Run\] RunTime=[\d.]+ sec; Warm up time=\d+ msec; "
                      r"SentMessages=(\d+); ReceivedMessages=(\d+)", text)
    if total:
        m["total_messages"] = int(total.group(2))
    dropped = re.search(r"# dropped messages = (\d+)", text)
    m["lost"] = int(dropped.group(1)) if dropped else None
    return m


# One per-second round-trip line of `ddsperf ping` (Cyclone DDS 0.10):
#   [1459] 3.000  vm:1430 size 64 mean 37.184us min 12.348us 50% 36.350us
#   90% 40.508us 99% 55.440us max 1865.598us cnt 13426
# Values are half round trips. "sublat" lines (one-way, sub mode) do not match.
_DDSPERF_LINE = re.compile(
    r"^\[(?P<pid>\d+)\]\s+(?P<t>[\d.]+)\s+(?P<peer>\S+)\s+size (?P<size>\d+)"
    r" mean (?P<mean>[\d.]+)us min (?P<min>[\d.]+)us 50% (?P<p50>[\d.]+)us"
    r" 90% (?P<p90>[\d.]+)us 99% (?P<p99>[\d.]+)us max (?P<max>[\d.]+)us"
    r" cnt (?P<cnt>\d+)\s*$", re.M)
_DDSPERF_TIMEOUTS = re.compile(r"ping timed out \(total (\d+) times\)")
_DDSPERF_ERROR = re.compile(r"^\[\d+\] error: .*$", re.M)


def _weighted_median(pairs):
    """Median of values weighted by counts: [(value, count), ...]."""
    pairs = sorted(pairs)
    total = sum(c for _, c in pairs)
    seen = 0
    for value, count in pairs:
        seen += count
        if 2 * seen >= total:
            return value
    return None


def parse_ddsperf(stdout, stderr, json_path):
    """`ddsperf ping` against `ddsperf pong`. ddsperf prints, once a second,
    mean/min/50%/90%/99%/max of **half** round trips in µs and their count;
    this returns full round trips (doubled). Seconds are combined: min and
    max over all, the mean weighted by cnt, and each percentile as the
    cnt-weighted median of the per-second values (ddsperf keeps no histogram
    across seconds). With 3 or more seconds the first is dropped as warm-up
    (discovery just finished, caches cold). ddsperf computes each second's
    percentiles from at most its first 20000 round trips; it has no p99.9."""
    text = _ANSI.sub("", stdout + "\n" + stderr)
    lines = [m.groupdict() for m in _DDSPERF_LINE.finditer(text)]
    if not lines:
        errors = _DDSPERF_ERROR.findall(text)
        raise ParseError("; ".join(e.split("] ", 1)[1] for e in errors) if errors else
                         "no ddsperf round-trip lines ('... size S mean ... cnt N'): "
                         "did ping match a pong within -Qinitwait?")
    peers = sorted({ln["peer"] for ln in lines})
    if len(peers) > 1:
        raise ParseError(f"pongs from {len(peers)} ddsperf participants ({', '.join(peers)}): "
                         "another ddsperf shares the domain; give each run its own -i")
    lines.sort(key=lambda ln: float(ln["t"]))
    total_all = sum(int(ln["cnt"]) for ln in lines)
    dropped = 1 if len(lines) >= 3 else 0
    kept = lines[dropped:]
    times = [float(ln["t"]) for ln in lines]
    # Each line covers the time since the previous one (ddsperf prints once a
    # second, later when it wakes late); the first covers 1 s.
    spans = [times[i] - times[i - 1] if i > 0 else min(1.0, times[0]) or 1.0
             for i in range(dropped, len(lines))]
    cnts = [int(ln["cnt"]) for ln in kept]
    samples = sum(cnts)
    if samples == 0:
        raise ParseError("ddsperf reported no round trips")

    def f(ln, key):
        return float(ln[key])

    m = empty_metrics()
    m["samples"] = samples
    m["rtt_us"] = {
        "min": 2 * min(f(ln, "min") for ln in kept),
        "max": 2 * max(f(ln, "max") for ln in kept),
        "mean": 2 * sum(f(ln, "mean") * int(ln["cnt"]) for ln in kept) / samples,
        "p50": 2 * _weighted_median([(f(ln, "p50"), int(ln["cnt"])) for ln in kept]),
        "p90": 2 * _weighted_median([(f(ln, "p90"), int(ln["cnt"])) for ln in kept]),
        "p99": 2 * _weighted_median([(f(ln, "p99"), int(ln["cnt"])) for ln in kept]),
        "p999": None,
    }
    span = sum(spans)
    m["messages_per_s"] = samples / span if span > 0 else None
    m["total_messages"] = total_all
    timeouts = [int(x) for x in _DDSPERF_TIMEOUTS.findall(text)]
    m["lost"] = max(timeouts) if timeouts else 0
    m["rtt_note"] = (f"ddsperf prints RTT/2; doubled. Over {len(kept)} s"
                     + (" (first second dropped as warm-up)" if dropped else "")
                     + "; percentiles are the cnt-weighted median of per-second values, "
                       "each from at most 20000 round trips; no p99.9")
    m["program_result"] = {"peer": peers[0], "size_bytes": int(lines[0]["size"]),
                           "intervals": [{k: (float(v) if k not in ("peer", "pid") else v)
                                          for k, v in ln.items()} for ln in lines],
                           "dropped_intervals": dropped}
    return m


# One per-second receive line of `ddsperf sub` (Cyclone DDS 0.10):
#   [19615] 2.000  size 65536 total 52662 lost 0 delta 27136 lost 0 rate
#   27.14 kS/s 14226.99 Mb/s (5.27 kS/s 2760.99 Mb/s)
_DDSPERF_SUB_LINE = re.compile(
    r"^\[(?P<pid>\d+)\]\s+(?P<t>[\d.]+)\s+size (?P<size>\d+) total (?P<total>\d+)"
    r" lost (?P<lost_total>\d+) delta (?P<delta>\d+) lost (?P<lost>\d+) rate", re.M)


def parse_ddsperf_sub(stdout, stderr, json_path):
    """`ddsperf sub` receiving from `ddsperf pub`: a bulk record (direction
    download). ddsperf prints, once a second, the samples received since the
    previous line (`delta`) and lost ones; with 3 or more lines the first is
    dropped as warm-up (discovery, the writer ramping up). Bytes = delta x
    size over the kept lines, completion_s = the time those lines cover.
    ddsperf reports neither resends nor kernel entries (null); the runner
    fills CPU per MB from its rusage of each process (whole run)."""
    text = _ANSI.sub("", stdout + "\n" + stderr)
    lines = [m.groupdict() for m in _DDSPERF_SUB_LINE.finditer(text)]
    if not lines:
        errors = _DDSPERF_ERROR.findall(text)
        raise ParseError("; ".join(e.split("] ", 1)[1] for e in errors) if errors else
                         "no ddsperf sub lines ('... size S total N lost L delta D ...'): "
                         "did sub match a pub within -Qinitwait?")
    lines.sort(key=lambda ln: float(ln["t"]))
    times = [float(ln["t"]) for ln in lines]
    dropped = 1 if len(lines) >= 3 else 0
    kept = lines[dropped:]
    span = sum(times[i] - times[i - 1] if i > 0 else min(1.0, times[0]) or 1.0
               for i in range(dropped, len(lines)))
    size = int(lines[0]["size"])
    samples = sum(int(ln["delta"]) for ln in kept)
    if samples == 0 or span <= 0:
        raise ParseError("ddsperf sub received no samples in its measured seconds")
    nbytes = samples * size
    m = empty_metrics()
    m["samples"] = samples
    m["lost"] = sum(int(ln["lost"]) for ln in kept)
    m["messages_per_s"] = samples / span
    m["total_messages"] = int(lines[-1]["total"])
    m["rtt_note"] = "throughput run: no round trips"
    doc = {"mode": "bulk", "bulk": {
        "direction": "download", "bytes": nbytes, "chunk_bytes": size,
        "completion_s": span, "goodput_bytes_per_s": nbytes / span,
        "receive_span_s": span, "retransmission_ratio": None,
        "spurious_retransmissions": None, "client_cpu_us_per_mb": None,
        "client_kernel_entries_per_mb": None}}
    m["bulk"] = bulk_metrics(doc)
    m["program_result"] = {"size_bytes": size, "dropped_intervals": dropped,
                           "intervals": [{k: (float(v) if k != "pid" else v)
                                          for k, v in ln.items()} for ln in lines]}
    return m


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v):
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


PARSERS = {
    "ringlab_json": parse_ringlab_json,
    "sockperf": parse_sockperf,
    "ddsperf": parse_ddsperf,
    "ddsperf_sub": parse_ddsperf_sub,
}
