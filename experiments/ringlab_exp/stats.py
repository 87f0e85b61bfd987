"""Ratios that survive a noisy host: paired within a run, normalised across runs.

The host switches between speed states that last minutes. A median of each
implementation over repetitions mixes those states, so two implementations
are compared repetition by repetition: within one interleaved run, repetition
k of every implementation ran within a minute or two of the others, in the
same host state.

    a = by_repetition(records_a, "p50")        # {repetition: value}
    b = by_repetition(records_b, "p50")
    r = paired(a, b)                           # a/b per common repetition
    r.median, r.lo, r.hi, r.n
    r.significant(0.05)                        # spread excludes 1 and |median-1| > 5%

Across two runs there is no shared host state to pair on, so `unpaired`
takes every cross pair (the spread is [min a / max b, max a / min b]);
`normalised` first divides each repetition by an anchor measured in the
same repetition of the same run (sockperf, a floor row), which removes the
host's state from both sides.

Rule: a ratio is *significant* when it has at least `min_n` values, its
whole spread (min..max) lies on one side of 1.0, and its median differs from
1 by more than the threshold (default 5%; tails 10%).
"""

import statistics

DEFAULT_THRESHOLD = 0.05
DEFAULT_TAIL_THRESHOLD = 0.10
TAIL_METRICS = ("p99", "p999", "max")
LATENCY_METRICS = ("min", "mean", "p50", "p90", "p99", "p999", "max")
# A bulk transfer's figures, kept in the record's `bulk` object.
BULK_METRICS = ("goodput_bytes_per_s", "completion_s", "retransmission_ratio",
                "spurious_retransmissions", "client_cpu_us_per_mb", "server_cpu_us_per_mb",
                "client_kernel_entries_per_mb", "server_kernel_entries_per_mb")


def threshold_for(metric, threshold=DEFAULT_THRESHOLD, tail_threshold=DEFAULT_TAIL_THRESHOLD):
    return tail_threshold if metric in TAIL_METRICS else threshold


def metric_value(record, name):
    """A metric of a record by name: the RTT percentiles live in `rtt_us`,
    the bulk figures in `bulk`, everything else is a top-level field; a
    dotted name walks nested objects (`program_result.latency_us.p50`: a
    figure only one program reports, read from its own JSON)."""
    if name in LATENCY_METRICS:
        return (record.get("rtt_us") or {}).get(name)
    if name in BULK_METRICS:
        return (record.get("bulk") or {}).get(name)
    if "." in name:
        v = record
        for part in name.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        return v
    return record.get(name)


def by_repetition(records, name):
    """{repetition: value} over ok records that have the metric."""
    out = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        v = metric_value(r, name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[r["repetition"]] = float(v)
    return out


class Ratio:
    """Median and spread (min..max) of a set of ratios."""

    def __init__(self, values, paired):
        self.values = sorted(values)
        self.paired = paired

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

    def excludes_one(self):
        return bool(self.values) and (self.lo > 1.0 or self.hi < 1.0)

    def verdict(self, threshold, min_n=2):
        """(significant, why)."""
        if not self.values:
            return False, "missing"
        if self.n < min_n:
            return False, f"fewer than {min_n} " + ("paired repetitions" if self.paired
                                                    else "repetitions")
        if not self.excludes_one():
            return False, "spread includes 1.0"
        if abs(self.median - 1.0) <= threshold:
            return False, f"within {threshold:.0%}"
        return True, "spread excludes 1.0"

    def significant(self, threshold, min_n=2):
        return self.verdict(threshold, min_n)[0]


def _positive(d):
    return {k: v for k, v in d.items() if v and v > 0}


def paired(a, b):
    """Ratio a/b per repetition present (and non-zero) on both sides."""
    a, b = _positive(a), _positive(b)
    return Ratio([a[k] / b[k] for k in sorted(set(a) & set(b))], paired=True)


def unpaired(a, b):
    """Ratio a/b over every cross pair: for sides that share no host state."""
    a = [v for v in _positive(a).values()]
    b = [v for v in _positive(b).values()]
    if a and not b or b and not a:
        return Ratio([], paired=False)
    return Ratio([x / y for x in a for y in b], paired=False)


def normalised(values, anchor):
    """{repetition: value / anchor value} where both exist."""
    anchor = _positive(anchor)
    return {k: v / anchor[k] for k, v in values.items() if k in anchor}


def fmt_ratio(ratio, threshold=None, min_n=2, digits=2):
    """"0.93 (0.91..0.95)"; bold when significant at `threshold`."""
    if ratio is None or not ratio.n:
        return "–"
    mid = f"{ratio.median:.{digits}f}"
    if threshold is not None and ratio.significant(threshold, min_n):
        mid = f"**{mid}**"
    if ratio.n == 1 or abs(ratio.hi - ratio.lo) < 0.5 * 10 ** -digits:
        return mid
    return f"{mid} ({ratio.lo:.{digits}f}..{ratio.hi:.{digits}f})"
