"""Targets: paired ratios a suite checks against bounds ([[target]] blocks).

    rows = evaluate(targets, records)   # one row per scenario a target applies to
    lines = render(rows)                # Markdown for the report

A target names a metric, two record selectors `a` and `b` (plus an optional
`where` for both) and a bound (`max` and/or `min`) on the ratio a/b.

Pairing. Each side's records are grouped by the fields its own selector
leaves open: the scenario fields (protocol, payload, connections, mode,
rate, inflight), each parameter the records carry, and program and variant
(unless the selector names `implementation`, which fixes both). An a-group
and a b-group form a row when they agree on every field open on **both**
sides; a field open on one side only splits that side into rows. So

  - `a = { variant = "uring-fixed" }, b = { variant = "epoll" }` pairs the
    same program in the same scenario;
  - `a = { program = "ringlab_dds_pingpong", protocol = "dds" },
    b = { program = "ringlab_pingpong", protocol = "udp" }` pairs the same
    **variant** (preset) across two programs: DDS over raw UDP per preset;
  - `a = { program = "ringlab_rudp_bench" }, b = { implementation =
    "enet:default" }` gives one row per preset of ours against ENet;
  - a parameter only one side has (DDS `reliability` against raw UDP)
    splits that side and does not stop the pairing.

Each row's ratio is paired repetition by repetition (stats.py).

Verdict: **met** when the whole spread (min..max of the per-repetition
ratios) satisfies the bound; **met by the median** when only the median
does; **not met** otherwise; **no data** without a paired repetition.
"""

from . import results, stats

SCENARIO_FIELDS = ("protocol", "payload_bytes", "connections", "mode", "rate_per_s",
                   "inflight")


def _value(record, field):
    if field.startswith("params."):
        return (record.get("params") or {}).get(field[7:])
    return record.get(field)


def _same(x, y):
    """Selector and record values: numbers compare as numbers (5 == 5.0),
    everything else as text."""
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if num(x) and num(y):
        return float(x) == float(y)
    return str(x) == str(y)


def _selects(record, selector):
    return all(_same(_value(record, f), v) for f, v in selector.items())


def _open_fields(record, named):
    """{field: value} of what a side's selector leaves open for `record`."""
    out = {f: record.get(f) for f in SCENARIO_FIELDS if f not in named}
    if "implementation" not in named:
        out.update({f: record.get(f) for f in ("program", "variant") if f not in named})
    for k, v in sorted((record.get("params") or {}).items()):
        if f"params.{k}" not in named:
            out[f"params.{k}"] = v
    return out


def _groups(records, selector):
    """frozen open-field key -> records, in first-seen order."""
    groups = {}
    for r in records:
        key = tuple(sorted(_open_fields(r, set(selector)).items(), key=lambda kv: kv[0]))
        groups.setdefault(key, []).append(r)
    return groups


def _compatible(ka, kb):
    da, db = dict(ka), dict(kb)
    return all(_same(da[f], db[f]) for f in da.keys() & db.keys())


def _label(ka, kb):
    """The row's scenario (fields open on both sides), then what differs:
    "a: ...; b: ..." for fields open on one side only."""
    da, db = dict(ka), dict(kb)
    k = {f: da[f] for f in da if f in db}
    parts = []
    if "protocol" in k:
        parts.append(str(k["protocol"]).upper())
    if "payload_bytes" in k:
        parts.append(f"{k['payload_bytes']} B")
    if "connections" in k:
        parts.append(f"{k['connections']} conn")
    if "mode" in k:
        mode = k["mode"]
        if mode == "rate" and k.get("rate_per_s"):
            mode += f" @ {k['rate_per_s']:g}/s"
        if mode == "burst" and k.get("inflight"):
            mode += f", {k['inflight']} in flight"
        parts.append(mode)
    params = [(f[7:], v) for f, v in k.items() if f.startswith("params.")]
    if params:
        parts.append(results.params_label(params))
    if "program" in k and "variant" in k:
        parts.append(f"`{k['program']}:{k['variant']}`")
    elif "program" in k:
        parts.append(f"program `{k['program']}`")
    elif "variant" in k:
        parts.append(f"variant `{k['variant']}`")
    label = ", ".join(parts)
    sides = []
    for name, d in (("a", da), ("b", db)):
        own = [f"{f[7:] if f.startswith('params.') else f}={d[f]}" for f in d if f not in k
               and d[f] is not None and not (f == "inflight" and d[f] == 1)]
        if own:
            sides.append(f"{name}: {', '.join(own)}")
    if sides:
        label += (" (" if label else "(") + "; ".join(sides) + ")"
    return label or "–"


def evaluate(targets, records):
    rows = []
    ok = [r for r in records if r.get("status") == "ok"]
    for t in targets or []:
        where, a_sel, b_sel = t.get("where", {}), t["a"], t["b"]
        inside = [r for r in ok if _selects(r, where)]
        a_groups = _groups([r for r in inside if _selects(r, a_sel)], a_sel)
        b_groups = _groups([r for r in inside if _selects(r, b_sel)], b_sel)
        pairs = [(ka, kb) for ka in a_groups for kb in b_groups if _compatible(ka, kb)]
        if not pairs:
            rows.append({"target": t, "label": "–", "ratio": None, "verdict": "no data"})
        for ka, kb in pairs:
            ratio = stats.paired(stats.by_repetition(a_groups[ka], t["metric"]),
                                 stats.by_repetition(b_groups[kb], t["metric"]))
            rows.append({"target": t, "label": _label(ka, kb), "ratio": ratio,
                         "verdict": verdict(ratio, t.get("min"), t.get("max"))})
    return rows


def verdict(ratio, lo=None, hi=None):
    if ratio is None or not ratio.n:
        return "no data"
    ok = lambda v: (lo is None or v >= lo) and (hi is None or v <= hi)
    if ok(ratio.lo) and ok(ratio.hi):
        return "met"
    if ok(ratio.median):
        return "met by the median"
    return "not met"


def _bound(t):
    parts = []
    if "min" in t:
        parts.append(f">= {t['min']:g}")
    if "max" in t:
        parts.append(f"<= {t['max']:g}")
    return " and ".join(parts)


def render(rows):
    if not rows:
        return []
    lines = ["## Targets", "",
             "Each target is a paired ratio a/b of one metric (within each repetition, then "
             "median and (min..max)), checked against its bound: **met** when the whole "
             "spread satisfies it, *met by the median* when only the median does.", "",
             "| target | metric: a / b | scenario | ratio | bound | verdict | reps |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        t = row["target"]
        a = ", ".join(f"{k}={v}" for k, v in t["a"].items())
        b = ", ".join(f"{k}={v}" for k, v in t["b"].items())
        verdict_text = {"met": "**met**", "not met": "**not met**"}.get(row["verdict"],
                                                                       row["verdict"])
        ratio = stats.fmt_ratio(row["ratio"]) if row["ratio"] is not None else "–"
        n = row["ratio"].n if row["ratio"] is not None else 0
        lines.append(f"| {t['name']} | {t['metric']}: {a} / {b} | {row['label']} | {ratio} | "
                     f"{_bound(t)} | {verdict_text} | {n} |")
    lines.append("")
    return lines
