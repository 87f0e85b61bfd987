"""Turns a client's output into the metric fields of a result record.

Each registry entry names one parser here (PARSERS). A parser takes the
client's stdout and stderr text and the path of its --json file (which may not
exist) and returns a dict with these keys (None where the program cannot say):

    samples, lost, rtt_us {min mean p50 p90 p99 p999 max} (full round trips, µs),
    rtt_note, messages_per_s, cpu_us_per_msg, kernel_entries_per_msg,
    backend_effective, flags, total_messages (for CPU/message from rusage),
    program_result (the program's own JSON, if any)

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
            "total_messages": None, "program_result": None}


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
    m["program_result"] = doc
    return m


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


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v):
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


PARSERS = {
    "ringlab_json": parse_ringlab_json,
    "sockperf": parse_sockperf,
}
