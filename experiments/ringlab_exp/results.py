"""Result folders: creation (never overwriting), appending records as they
complete, and loading a folder or file back for reports and compare.

    d = create_run_dir(results_root, "quick", "20250101T120000Z", "host")
    w = RecordWriter(d)           # appends to records.jsonl, fsync per record
    w.write(record)
    run, records = load("results/quick/20250101T120000Z-host")   # or a file

A folder holds run.json (run metadata), records.jsonl (one record per line,
written as each case repetition completes, so an interrupted run keeps what it
measured), results.json (run + records, written at the end, also after an
interruption), report.md, plots/ and logs/.
"""

import json
import os
import pathlib
import statistics

from . import stats

RUN_SCHEMA = "ringlab.run/1"
RESULTS_SCHEMA = "ringlab.results/1"


def create_run_dir(results_root, suite_name, stamp, host):
    """Creates results_root/suite/STAMP-HOST; adds -2, -3... if it exists.
    os.mkdir is atomic, so two runs in the same second can't share a folder."""
    parent = pathlib.Path(results_root) / suite_name
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{stamp}-{host}"
    for n in range(1, 1000):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a fresh result folder under {parent}")


class RecordWriter:
    def __init__(self, run_dir):
        self.path = pathlib.Path(run_dir) / "records.jsonl"
        self._f = open(self.path, "a", encoding="utf-8")
        self.records = []

    def write(self, record):
        self._f.write(json.dumps(record, sort_keys=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.records.append(record)

    def close(self):
        self._f.close()


def write_json(path, obj):
    tmp = pathlib.Path(str(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def load(path):
    """(run metadata dict or {}, list of records) from a result folder,
    results.json, records.jsonl or a JSON list of records."""
    p = pathlib.Path(path)
    if p.is_dir():
        if (p / "results.json").exists():
            return load(p / "results.json")
        run = json.loads((p / "run.json").read_text()) if (p / "run.json").exists() else {}
        if not (p / "records.jsonl").exists():
            raise FileNotFoundError(f"{p}: no results.json or records.jsonl here")
        return run, _load_jsonl(p / "records.jsonl")
    if p.suffix == ".jsonl":
        return {}, _load_jsonl(p)
    doc = json.loads(p.read_text())
    if isinstance(doc, list):
        return {}, doc
    if isinstance(doc, dict) and "records" in doc:
        return doc.get("run", {}), doc["records"]
    if isinstance(doc, dict) and "case_id" in doc:
        return {}, [doc]
    raise ValueError(f"{p}: not a ringlab result file (expected results.json, "
                     "records.jsonl or a list of records)")


def _load_jsonl(path):
    out = []
    for n, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            # A run killed mid-write can leave a torn last line; keep the rest.
            if n != len(pathlib.Path(path).read_text().splitlines()):
                raise
    return out


# ---------------------------------------------------------------- aggregation

def metric(record, name):
    return stats.metric_value(record, name)


class Spread:
    """Median and range of one metric over a case's ok repetitions."""

    def __init__(self, values):
        self.values = sorted(v for v in values if v is not None)

    @property
    def n(self):
        return len(self.values)

    @property
    def median(self):
        return statistics.median(self.values) if self.values else None

    @property
    def lo(self):
        return self.values[0] if self.values else None

    @property
    def hi(self):
        return self.values[-1] if self.values else None


def group_by_case(records):
    """case_id -> list of records (all statuses), in first-seen order."""
    groups = {}
    for r in records:
        groups.setdefault(r["case_id"], []).append(r)
    return groups


def spread(records, name):
    return Spread(metric(r, name) for r in records if r.get("status") == "ok")


def params_key(record):
    """A record's parameters as a hashable, sorted tuple of (name, value)."""
    return tuple(sorted((record.get("params") or {}).items()))


def scenario_of(record):
    return (record["protocol"], record["payload_bytes"], record["connections"],
            record["mode"], record.get("rate_per_s"), record.get("inflight", 1),
            params_key(record))


def params_label(params):
    return ", ".join(f"{k}={v}" for k, v in params)


def scenario_label(s):
    protocol, payload, conns, mode, rate, inflight = s[:6]
    params = s[6] if len(s) > 6 else ()
    label = f"{protocol.upper()} {payload} B, {conns} conn, {mode}"
    if mode == "rate" and rate:
        label += f" @ {rate:g}/s"
    if mode == "burst":
        label += f", {inflight} in flight"
    if params:
        label += f", {params_label(params)}"
    return label
