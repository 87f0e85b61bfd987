"""Targets: paired ratios a suite checks against bounds ([[target]] blocks).

    rows = evaluate(targets, records)   # one row per scenario a target applies to
    lines = render(rows)                # Markdown for the report

A target names a metric, two record selectors `a` and `b` (plus an optional
`where` for both) and a bound (`max` and/or `min`) on the ratio a/b. The
records each side selects are grouped by what the selectors leave open (the
scenario fields they do not name, and the implementation unless they name
it), and each group's ratio is paired repetition by repetition (stats.py).

Verdict: **met** when the whole spread (min..max of the per-repetition
ratios) satisfies the bound; **met by the median** when only the median
does; **not met** otherwise; **no data** without a paired repetition.
"""

from . import results, stats

SCENARIO_FIELDS = ("protocol", "payload_bytes", "connections", "mode", "rate_per_s",
                   "inflight")
IMPL_FIELDS = ("implementation", "program", "variant")


def _value(record, field):
    if field.startswith("params."):
        return (record.get("params") or {}).get(field[7:])
    return record.get(field)


def _selects(record, selector):
    return all(str(_value(record, f)) == str(v) for f, v in selector.items())


def _group_key(record, named):
    key = [(f, record.get(f)) for f in SCENARIO_FIELDS if f not in named]
    named_params = {f[7:] for f in named if f.startswith("params.")}
    if "params" not in named:
        key.append(("params", tuple(p for p in results.params_key(record)
                                    if p[0] not in named_params)))
    if not named & set(IMPL_FIELDS):
        key.append(("implementation", record.get("implementation")))
    return tuple(key)


def _label(key):
    k = dict(key)
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
    if k.get("params"):
        parts.append(results.params_label(k["params"]))
    if k.get("implementation"):
        parts.append(f"`{k['implementation']}`")
    return ", ".join(parts)


def evaluate(targets, records):
    rows = []
    ok = [r for r in records if r.get("status") == "ok"]
    for t in targets or []:
        where, a_sel, b_sel = t.get("where", {}), t["a"], t["b"]
        named = set(a_sel) | set(b_sel)
        a_groups, b_groups = {}, {}
        for r in ok:
            if not _selects(r, where):
                continue
            if _selects(r, a_sel):
                a_groups.setdefault(_group_key(r, named), []).append(r)
            if _selects(r, b_sel):
                b_groups.setdefault(_group_key(r, named), []).append(r)
        keys = [k for k in a_groups if k in b_groups]
        if not keys:
            rows.append({"target": t, "label": "–", "ratio": None, "verdict": "no data"})
        for key in keys:
            ratio = stats.paired(stats.by_repetition(a_groups[key], t["metric"]),
                                 stats.by_repetition(b_groups[key], t["metric"]))
            rows.append({"target": t, "label": _label(key), "ratio": ratio,
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
