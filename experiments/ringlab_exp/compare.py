"""Compares two result sets case by case: B relative to A.

    rows = compare(records_a, records_b, threshold=0.05)
    print(render(rows, "A label", "B label", threshold=0.05))

Cases are matched on (protocol, payload, connections, mode, rate, inflight,
program, variant). `ignore` drops fields from that key and `where_a`/`where_b`
filter each side, so one run's epoll rows can be compared with its uring rows:

    compare(r, r, ignore=["variant"], where_a={"variant": "epoll"},
            where_b={"variant": "uring-fixed"})

Significance, for each metric (p50, p99, messages_per_s) of a matched case:
a difference is *significant* when all of these hold
  1. both sides have at least `min_reps` ok repetitions (default 2);
  2. the ranges [min, max] of the repetition values on the two sides do not
     overlap (every B repetition is above every A one, or below);
  3. the ratio of medians B/A differs from 1 by more than `threshold`
     (default 0.05, i.e. 5%) for p50 and msg/s, or by more than
     `tail_threshold` (default 0.10) for p99.
So a difference smaller than the spread between repetitions is never marked.
The tail gets a wider threshold because repetitions inside one run are
interleaved and share the machine's state, while two runs minutes apart do
not: measured here, p99 of identical code moved by up to 8% between two quick
runs whose per-run ranges were narrower than that.
"""

import statistics

from . import results

KEY_FIELDS = ("protocol", "payload_bytes", "connections", "mode", "rate_per_s", "inflight",
              "params", "program", "variant")
# (record field, column title, which direction is better, is it a tail metric)
METRICS = (("p50", "p50 RTT", "lower", False), ("p99", "p99 RTT", "lower", True),
           ("messages_per_s", "msg/s", "higher", False))


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
    """(ratio of medians B/A or None, significant: bool, why: str)."""
    a = sorted(v for v in a_vals if v is not None)
    b = sorted(v for v in b_vals if v is not None)
    if not a or not b:
        return None, False, "missing"
    ma, mb = statistics.median(a), statistics.median(b)
    if ma == 0:
        return None, False, "zero baseline"
    ratio = mb / ma
    if len(a) < min_reps or len(b) < min_reps:
        return ratio, False, f"fewer than {min_reps} reps"
    overlap = not (b[0] > a[-1] or b[-1] < a[0])
    if overlap:
        return ratio, False, "ranges overlap"
    if abs(ratio - 1) <= threshold:
        return ratio, False, f"within {threshold:.0%}"
    return ratio, True, "ranges disjoint"


def compare(records_a, records_b, threshold=0.05, min_reps=2, ignore=(), where_a=None,
            where_b=None, tail_threshold=0.10):
    where_a, where_b = where_a or {}, where_b or {}
    ignore = set(ignore) | set(where_a) | set(where_b)
    ga, gb = {}, {}
    for recs, where, g in ((records_a, where_a, ga), (records_b, where_b, gb)):
        for r in recs:
            if _matches(r, where):
                g.setdefault(_key(r, ignore), []).append(r)
    rows = []
    for key in list(ga) + [k for k in gb if k not in ga]:
        a, b = ga.get(key, []), gb.get(key, [])
        row = {"key": dict(key), "a_case": a[0]["case_id"] if a else None,
               "b_case": b[0]["case_id"] if b else None,
               "a_ok": sum(r["status"] == "ok" for r in a),
               "b_ok": sum(r["status"] == "ok" for r in b), "metrics": {}}
        for name, _, better, tail in METRICS:
            sa, sb = results.spread(a, name), results.spread(b, name)
            ratio, sig, why = significance(sa.values, sb.values,
                                           tail_threshold if tail else threshold, min_reps)
            verdict = ""
            if sig:
                improved = ratio < 1 if better == "lower" else ratio > 1
                verdict = "better" if improved else "worse"
            row["metrics"][name] = {"a": sa, "b": sb, "ratio": ratio, "significant": sig,
                                    "why": why, "verdict": verdict}
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
    impl = ":".join(str(k[f]) for f in ("program", "variant") if f in k)
    return " ".join(parts) + (f" {impl}" if impl else "")


def render(rows, label_a, label_b, threshold=0.05, min_reps=2, tail_threshold=0.10):
    out = [f"# ringlab compare", "",
           f"- A: `{label_a}`", f"- B: `{label_b}`",
           f"- Cells: B/A ratio of medians over ok repetitions; (A median -> B median). "
           f"**bold + verdict** = significant: both sides have >= {min_reps} ok reps, "
           f"their min..max ranges do not overlap, and the ratio differs from 1 by more "
           f"than {threshold:.0%} ({tail_threshold:.0%} for p99).", ""]
    head = ["case", "ok reps A/B"] + [m[1] for m in METRICS]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    n_sig = 0
    only = []
    for row in rows:
        if row["a_case"] is None or row["b_case"] is None:
            only.append(row)
            continue
        cells = [f"`{_label(row)}`", f"{row['a_ok']}/{row['b_ok']}"]
        for name, _, _, _ in METRICS:
            m = row["metrics"][name]
            if m["ratio"] is None:
                cells.append("–")
                continue
            text = f"{m['ratio']:.2f} ({_f(m['a'].median)} -> {_f(m['b'].median)})"
            if m["significant"]:
                n_sig += 1
                text = f"**{m['ratio']:.2f} {m['verdict']}** ({_f(m['a'].median)} -> " \
                       f"{_f(m['b'].median)})"
            cells.append(text)
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
