"""Compares two result sets case by case: B relative to A.

    rows = compare(records_a, records_b, threshold=0.05)
    print(render(rows, "A label", "B label", threshold=0.05))

Cases are matched on (protocol, payload, connections, mode, rate, inflight,
params, program, variant). `ignore` drops fields from that key and
`where_a`/`where_b` filter each side, so one run's epoll rows can be compared
with its uring rows:

    compare(r, r, where_a={"variant": "epoll"}, where_b={"variant": "uring-fixed"})

Each cell is a ratio B/A built from per-repetition values (stats.py):
  - **one run on both sides** (same run_id): the ratio is *paired*, taken
    within each repetition (the interleaved repetition k of both cases saw
    the same host state), then the median and min..max of those ratios;
  - **two runs**: repetitions of different runs share no host state, so no
    pairing exists; the ratio set is every cross pair B_j / A_i, whose
    min..max is [min B / max A, max B / min A];
  - **`normalize="program:variant"`** (sockperf:blocking, a floor row):
    each side's value in repetition k is first divided by the anchor's value
    in repetition k of the same run (itself a paired ratio), which removes
    the host's speed state from both sides; then as above. Latency metrics
    are divided by the anchor's p50 (the host-speed index: the anchor's own
    tails are too noisy to divide by), msg/s by the anchor's msg/s. The
    anchor is taken from the same scenario, else the same protocol (same
    payload preferred), else any scenario of that repetition; the row says
    which. `normalize="calibration"` divides each record by its own
    steadiness check instead (the floor ping-pong run just before it).
A cell is *significant* when it has >= `min_reps` ratios, their whole spread
lies on one side of 1.0, and the median differs from 1 by more than
`threshold` (default 5%; p99 `tail_threshold`, default 10%, because tails
drift more than medians).
"""

import re

from . import results, stats

KEY_FIELDS = ("protocol", "payload_bytes", "connections", "mode", "rate_per_s", "inflight",
              "params", "program", "variant")
# (record field, column title, which direction is better, is it a tail metric)
METRICS = (("p50", "p50 RTT", "lower", False), ("p99", "p99 RTT", "lower", True),
           ("messages_per_s", "msg/s", "higher", False),
           ("deliveries_per_s", "deliveries/s", "higher", False),
           ("goodput_bytes_per_s", "goodput B/s", "higher", False))
# The anchor metric each metric is normalised by.
ANCHOR_METRIC = {"p50": "p50", "p99": "p50", "messages_per_s": "messages_per_s",
                 "deliveries_per_s": "messages_per_s", "goodput_bytes_per_s": "messages_per_s"}
# Metrics that grow when the host is faster (normalising multiplies them by
# the steadiness check's p50 instead of dividing).
THROUGHPUT_METRICS = ("messages_per_s", "deliveries_per_s", "goodput_bytes_per_s")
# Metrics a row carries only when one of its sides has them (a fan-out's
# deliveries, a bulk transfer's goodput).
OPTIONAL_METRICS = ("deliveries_per_s", "goodput_bytes_per_s")


class CompareError(ValueError):
    pass


def _field(record, name):
    """A match-key field; "params" is the sorted (name, value) tuple and
    "params.NAME" one parameter."""
    if name == "params":
        return results.params_key(record)
    if name.startswith("params."):
        return (record.get("params") or {}).get(name[7:])
    return record.get(name)


def _key(record, ignore):
    ignore_params = {f[7:] for f in ignore if f.startswith("params.")}
    out = []
    for f in KEY_FIELDS:
        if f in ignore:
            continue
        v = _field(record, f)
        if f == "params" and ignore_params:
            v = tuple(p for p in v if p[0] not in ignore_params)
        out.append((f, v))
    return tuple(out)


def _matches(record, where):
    return all(str(_field(record, k)) == str(v) for k, v in where.items())


def significance(a_vals, b_vals, threshold, min_reps=2):
    """Unpaired rule on two lists of values: (median ratio B/A or None,
    significant, why). Kept for callers that have no repetition numbers."""
    a = {i: v for i, v in enumerate(x for x in a_vals if x is not None)}
    b = {i: v for i, v in enumerate(x for x in b_vals if x is not None)}
    if not a or not b:
        return None, False, "missing"
    r = stats.unpaired(b, a)
    if not r.n:
        return None, False, "zero baseline"
    sig, why = r.verdict(threshold, min_reps)
    if len(a) < min_reps or len(b) < min_reps:
        sig, why = False, f"fewer than {min_reps} reps"
    return r.median, sig, why


CALIBRATION = "calibration"


class CalibrationAnchor:
    """`--normalize calibration`: each record divided by its own steadiness
    check (the floor ping-pong run just before it)."""
    implementation = CALIBRATION

    def __init__(self, records):
        self.n = sum(1 for r in records if _cal_p50(r) is not None)

    def __bool__(self):
        return self.n > 0


def _cal_p50(record):
    c = record.get("calibration")
    if isinstance(c, dict) and c.get("status") == "ok" and c.get("p50_us"):
        return float(c["p50_us"])
    return None


class Anchor:
    """Per-repetition values of the anchor implementation in one record set."""

    def __init__(self, records, implementation):
        self.implementation = implementation
        self.by_scenario = {}   # scenario -> records
        for r in records:
            if r.get("implementation") == implementation and r.get("status") == "ok":
                self.by_scenario.setdefault(results.scenario_of(r), []).append(r)

    def __bool__(self):
        return bool(self.by_scenario)

    def pick(self, scenario):
        """(records of the anchor scenario used, how it was chosen) or (None, why)."""
        if scenario in self.by_scenario:
            return self.by_scenario[scenario], "same scenario"
        same_proto = [s for s in self.by_scenario if s[0] == scenario[0]]
        if same_proto:
            same_proto.sort(key=lambda s: (s[1] != scenario[1], s[2] != scenario[2]))
            return self.by_scenario[same_proto[0]], results.scenario_label(same_proto[0])
        if self.by_scenario:
            first = next(iter(self.by_scenario))
            return self.by_scenario[first], results.scenario_label(first)
        return None, f"no ok record of {self.implementation}"


def _side_values(records, name, anchor):
    """{repetition: value}, divided by the anchor when normalising; and the
    anchor label used."""
    values = stats.by_repetition(records, name)
    if anchor is None or not records:
        return values, None
    if isinstance(anchor, CalibrationAnchor):
        # Latency in units of the check's p50; msg/s times it (a slower host
        # has a larger p50 and fewer messages per second).
        cal = {r["repetition"]: _cal_p50(r) for r in records if r.get("status") == "ok"}
        out = {}
        for rep, v in values.items():
            c = cal.get(rep)
            if c:
                out[rep] = v * c if name in THROUGHPUT_METRICS else v / c
        return out, "own check"
    anchor_recs, how = anchor.pick(results.scenario_of(records[0]))
    if anchor_recs is None:
        return {}, how
    return stats.normalised(values, stats.by_repetition(anchor_recs, ANCHOR_METRIC[name])), how


def _run_ids(records):
    return {r.get("run_id") for r in records}


# Variants that spin instead of sleeping: their cost does not move with the
# host's wake-up cost, so `normalize_spinning` may give them their own anchor.
SPINNING_RE = re.compile(r"busy|nonblocked|spin")


def _pick_anchor(records, anchors, spinning_anchors):
    if spinning_anchors is not None and records and \
            SPINNING_RE.search(str(records[0].get("variant", ""))):
        return spinning_anchors
    return anchors


def compare(records_a, records_b, threshold=0.05, min_reps=2, ignore=(), where_a=None,
            where_b=None, tail_threshold=0.10, normalize=None, normalize_spinning=None):
    where_a, where_b = where_a or {}, where_b or {}
    ignore = set(ignore) | set(where_a) | set(where_b)
    anchors = (None, None)
    spinning = None
    if normalize_spinning:
        if not normalize:
            raise CompareError("--normalize-spinning needs --normalize (the anchor of the "
                               "other rows)")
        spinning = (Anchor(records_a, normalize_spinning),
                    Anchor(records_b, normalize_spinning))
        for side, anchor, recs in (("A", spinning[0], records_a), ("B", spinning[1], records_b)):
            if not anchor:
                raise CompareError(f"--normalize-spinning {normalize_spinning}: side {side} "
                                   "has no ok record of it")
    if normalize:
        make = (lambda recs: CalibrationAnchor(recs)) if normalize == CALIBRATION else \
            (lambda recs: Anchor(recs, normalize))
        anchors = (make(records_a), make(records_b))
        for side, anchor, recs in (("A", anchors[0], records_a), ("B", anchors[1], records_b)):
            if not anchor and normalize == CALIBRATION:
                raise CompareError(f"--normalize calibration: side {side} has no record with "
                                   "an ok steadiness check (calibrate = false, or a run made "
                                   "before the check existed)")
            if not anchor:
                impls = sorted({r.get("implementation") for r in recs if r.get("implementation")})
                raise CompareError(f"--normalize {normalize}: side {side} has no ok record of "
                                   f"it; implementations there: {', '.join(impls)}")
    ga, gb = {}, {}
    for recs, where, g in ((records_a, where_a, ga), (records_b, where_b, gb)):
        for r in recs:
            if _matches(r, where):
                g.setdefault(_key(r, ignore), []).append(r)
    rows = []
    for key in list(ga) + [k for k in gb if k not in ga]:
        a, b = ga.get(key, []), gb.get(key, [])
        same_run = bool(a and b) and _run_ids(a) == _run_ids(b) and len(_run_ids(a)) == 1
        row = {"key": dict(key), "a_case": a[0]["case_id"] if a else None,
               "b_case": b[0]["case_id"] if b else None,
               "a_ok": sum(r["status"] == "ok" for r in a),
               "b_ok": sum(r["status"] == "ok" for r in b), "paired": same_run,
               "a_impl": a[0].get("implementation") if a else None,
               "b_impl": b[0].get("implementation") if b else None,
               "anchor": None, "metrics": {}}
        for name, _, better, tail in METRICS:
            if name in OPTIONAL_METRICS and not (stats.by_repetition(a, name) or
                                                 stats.by_repetition(b, name)):
                continue    # e.g. goodput outside bulk transfers
            use = _pick_anchor(a or b, anchors, spinning)
            va, how_a = _side_values(a, name, use[0])
            vb, how_b = _side_values(b, name, use[1])
            if use is spinning:
                how_a, how_b = (f"{normalize_spinning}: {how_a}", f"{normalize_spinning}: "
                                f"{how_b}")
            if normalize and row["anchor"] is None and (how_a or how_b):
                row["anchor"] = (how_a, how_b)
            ratio = stats.paired(vb, va) if same_run else stats.unpaired(vb, va)
            sig, why = ratio.verdict(tail_threshold if tail else threshold, min_reps)
            verdict = ""
            if sig:
                improved = ratio.median < 1 if better == "lower" else ratio.median > 1
                verdict = "better" if improved else "worse"
            row["metrics"][name] = {
                "a": results.spread(a, name), "b": results.spread(b, name),
                "ratio": ratio.median, "lo": ratio.lo, "hi": ratio.hi, "n": ratio.n,
                "significant": sig, "why": why, "verdict": verdict}
        rows.append(row)
    return rows


def _label(row):
    k = row["key"]
    parts = []
    if "protocol" in k:
        parts.append(k["protocol"])
    if "payload_bytes" in k:
        parts.append(f"{k['payload_bytes']}B")
    if "connections" in k:
        parts.append(f"c{k['connections']}")
    if "mode" in k:
        parts.append(k["mode"] + (f"@{k['rate_per_s']:g}" if k.get("rate_per_s") else ""))
    if k.get("params"):
        parts.append(results.params_label(k["params"]))
    if "program" in k and "variant" in k:
        impl = f"{k['program']}:{k['variant']}"
    elif row.get("a_impl") and row.get("b_impl"):
        impl = row["a_impl"] if row["a_impl"] == row["b_impl"] else \
            f"{row['a_impl']} -> {row['b_impl']}"
    else:
        impl = ":".join(str(k[f]) for f in ("program", "variant") if f in k)
    return " ".join(parts) + (f" {impl}" if impl else "")


def render(rows, label_a, label_b, threshold=0.05, min_reps=2, tail_threshold=0.10,
           normalize=None, normalize_spinning=None):
    paired = any(r["paired"] for r in rows)
    unpaired = any(not r["paired"] and r["a_case"] and r["b_case"] for r in rows)
    how = []
    if paired:
        how.append("rows from one run are **paired**: the B/A ratio within each repetition, "
                   "then the median and (min..max) of those ratios")
    if unpaired:
        how.append("rows from two runs share no host state, so every cross pair B_j/A_i "
                   "counts: (min..max) = [min B / max A .. max B / min A]")
    out = ["# ringlab compare", "",
           f"- A: `{label_a}`", f"- B: `{label_b}`",
           "- Cells: B/A ratio (median, (min..max) of the per-repetition ratios), then "
           "(A median -> B median) of the raw values. " + "; ".join(how) + "."]
    if normalize == CALIBRATION:
        out.append("- **Normalised by each record's steadiness check**: latency is divided by "
                   "the p50 of the floor ping-pong run just before that repetition (msg/s "
                   "multiplied by it), so a host that changed speed cancels out.")
    elif normalize:
        out.append(f"- **Normalised by `{normalize}`**: each repetition's value is first "
                   "divided by the anchor's value in the same repetition of its own run "
                   "(latency by the anchor's p50, msg/s by its msg/s), so a host that changed "
                   "speed between the runs cancels out. The anchor's own row is 1.00 by "
                   "construction.")
    if normalize_spinning:
        out.append(f"- Spinning rows (variant matching `{SPINNING_RE.pattern}`) are divided "
                   f"by `{normalize_spinning}` instead: a spinning loop's cost does not move "
                   "with the host's wake-up cost.")
    out += [f"- **bold + verdict** = significant: >= {min_reps} ratios, the whole spread "
            f"excludes 1.0, and the median differs from 1 by more than {threshold:.0%} "
            f"({tail_threshold:.0%} for p99).", ""]
    # A metric no row has (goodput outside bulk transfers) gets no column.
    metrics = [m for m in METRICS if m[0] not in OPTIONAL_METRICS or
               any(m[0] in r["metrics"] for r in rows)]
    head = ["case", "ok reps A/B"] + [m[1] for m in metrics]
    if normalize:
        head.append("anchor used (A / B)")
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    n_sig = 0
    only = []
    for row in rows:
        if row["a_case"] is None or row["b_case"] is None:
            only.append(row)
            continue
        cells = [f"`{_label(row)}`", f"{row['a_ok']}/{row['b_ok']}"]
        for name, _, _, _ in metrics:
            m = row["metrics"].get(name)
            if m is None or m["ratio"] is None:
                cells.append("–")
                continue
            ratio = f"{m['ratio']:.2f}"
            if m["significant"]:
                n_sig += 1
                ratio = f"**{ratio} {m['verdict']}**"
            spread = f" ({m['lo']:.2f}..{m['hi']:.2f})" if m["n"] > 1 and \
                abs(m["hi"] - m["lo"]) >= 0.005 else ""
            cells.append(f"{ratio}{spread} ({_f(m['a'].median)} -> {_f(m['b'].median)})")
        if normalize:
            a_how, b_how = row["anchor"] or (None, None)
            cells.append(f"{a_how or '–'} / {b_how or '–'}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(f"{n_sig} significant difference(s).")
    if only:
        out.append("")
        out.append("Only on one side: " + ", ".join(
            f"`{_label(r)}` ({'A' if r['a_case'] else 'B'})" for r in only))
    out.append("")
    return "\n".join(out)


def _f(v):
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"
