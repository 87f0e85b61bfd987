"""report.md (+ plots/*.png) for one result folder.

    path = write_report(run_dir)            # run_dir/report.md
    text = render(run, records, plots)      # the Markdown, without writing

Ratios are taken within one run only (absolute times drift on a shared
machine). For each scenario (protocol, payload, connections, mode, rate,
parameters) and each implementation (program:variant) the cells are the
median over its ok repetitions with min..max. Every "vs" column is a *paired*
ratio (stats.py): the ratio within each repetition, then the median and
min..max of those ratios, so a host that changes speed between repetitions
moves both sides of each ratio together. A ratio is bold (significant) when
its whole spread excludes 1.0 and its median is more than 5% (p99: 10%) from
1.

Plots need gnuplot; without it the report says they were skipped.
"""

import pathlib
import shutil
import subprocess

from . import protocols, results, stats, targets
from .results import Spread, group_by_case, metric, scenario_label, scenario_of

PCTS = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"))


def fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def fmt_spread(s, digits=1):
    if s.n == 0:
        return "–"
    if s.n == 1:
        return fmt(s.median, digits)
    return f"{fmt(s.median, digits)} ({fmt(s.lo, digits)}..{fmt(s.hi, digits)})"


def vs(row, other, name, min_n=2):
    """The paired ratio row/other of metric `name`, formatted; bold when
    significant."""
    if row is other:
        return "1.00"
    r = stats.paired(row.rep(name), other.rep(name))
    return stats.fmt_ratio(r, stats.threshold_for(name), min_n)


# ---------------------------------------------------------------- host state

# Two calibrations (the steadiness check before each repetition) more than
# this factor apart mean the host changed speed state between them. The
# states seen here differ by ~1.4x (sockperf blocking ~17 vs ~24 µs); the
# p50 of 1,000 round trips repeats within a few % on a steady host.
STATE_CHANGE_FACTOR = 1.15


def _cal_p50(cal):
    if isinstance(cal, dict) and cal.get("status") == "ok" and cal.get("p50_us"):
        return float(cal["p50_us"])
    return None


class HostState:
    """The steadiness check of a run, in run order.

    Rule: a record is *unsteady* when the calibration taken just before it
    and the next calibration of the run (before the next measured record, or
    the end-of-run calibration) differ by more than STATE_CHANGE_FACTOR
    (max/min > 1.15): the host changed speed state while it was measured.
    States are clusters of the run's calibration p50s: sorted, a new state
    starts where a value exceeds the previous one by the same factor; S1 is
    the fastest."""

    def __init__(self, run, records):
        self.records = sorted((r for r in records if r.get("calibration") is not None),
                              key=lambda r: r.get("sequence", 0))
        end = _cal_p50(run.get("calibration_end"))
        self.unsteady = {}   # id(record) -> (before, after)
        points = [(r, _cal_p50(r["calibration"])) for r in self.records]
        for i, (rec, before) in enumerate(points):
            after = points[i + 1][1] if i + 1 < len(points) else end
            if before and after and max(before, after) / min(before, after) > \
                    STATE_CHANGE_FACTOR:
                self.unsteady[id(rec)] = (before, after)
        values = sorted(v for _, v in points if v) + ([end] if end else [])
        values.sort()
        self.states = []     # [[values...], ...] fastest first
        for v in values:
            if self.states and v <= self.states[-1][-1] * STATE_CHANGE_FACTOR:
                self.states[-1].append(v)
            else:
                self.states.append([v])
        self.calibrated = any(v for _, v in points)

    def state_of(self, p50):
        for i, group in enumerate(self.states, 1):
            if group[0] <= p50 <= group[-1]:
                return f"S{i}"
        return "?"

    def is_unsteady(self, record):
        return id(record) in self.unsteady


def render_host_state(run, records, host):
    lines = ["## Host state (steadiness check)", ""]
    conf = run.get("calibration") or {}
    if not host.records:
        if conf and not conf.get("enabled", True):
            lines.append("The steadiness check was off for this run (`calibrate = false`).")
        else:
            lines.append("No calibrations in this run.")
        lines.append("")
        return lines
    failed = [r for r in host.records if not _cal_p50(r["calibration"])]
    lines.append(f"Before each repetition the runner ran {conf.get('samples', '?')} UDP round "
                 f"trips of `{conf.get('program', '?')} {conf.get('variant', '?')}`, pinned "
                 "like the cases; its p50 is the host's speed index. **Rule:** a repetition "
                 "is *unsteady* when the check before it and the next check differ by more "
                 f"than {STATE_CHANGE_FACTOR - 1:.0%} (the host changed speed state while it "
                 "ran); states S1 (fastest), S2, ... are clusters of the checks' p50 that are "
                 f"more than {STATE_CHANGE_FACTOR - 1:.0%} apart. Unsteady repetitions stay in "
                 "every table; the *ok/reps* column counts them.")
    lines.append("")
    if not host.calibrated:
        reason = failed[0]["calibration"].get("reason") if failed else "?"
        lines.append(f"No calibration succeeded ({reason}).")
        lines.append("")
        return lines
    states = ", ".join(f"S{i}: p50 {fmt(Spread(g).median, 2)} µs ({len(g)} checks, "
                       f"{fmt(g[0], 2)}..{fmt(g[-1], 2)})" for i, g in enumerate(host.states, 1))
    lines.append(f"States seen: {states}.")
    lines.append("")
    lines.append("| repetition | checks | check p50 µs | states | unsteady records |")
    lines.append("|---|---|---|---|---|")
    reps = sorted({r["repetition"] for r in host.records})
    for k in reps:
        recs = [r for r in host.records if r["repetition"] == k]
        vals = [_cal_p50(r["calibration"]) for r in recs]
        vals = [v for v in vals if v]
        seen = []
        for v in vals:
            st = host.state_of(v)
            if not seen or seen[-1] != st:
                seen.append(st)
        n_bad = sum(host.is_unsteady(r) for r in recs)
        lines.append(f"| {k} | {len(vals)}/{len(recs)} | {fmt_spread(Spread(vals), 2)} | "
                     f"{' -> '.join(seen) or '–'} | {n_bad or '–'} |")
    lines.append("")
    if host.unsteady:
        lines.append("Unsteady repetitions (check before -> check after, µs):")
        lines.append("")
        for r in host.records:
            if host.is_unsteady(r):
                before, after = host.unsteady[id(r)]
                states = f"{host.state_of(before)} -> {host.state_of(after)}"
                change = f"{after / before - 1:+.0%}"
                lines.append(f"- `{r['case_id']}` rep {r['repetition']}: {before:.2f} -> "
                             f"{after:.2f} ({change}" +
                             (f", {states})" if host.state_of(before) != host.state_of(after)
                              else ")"))
        lines.append("")
    if failed:
        lines.append(f"{len(failed)} check(s) failed or were unavailable: "
                     f"{_cell(failed[0]['calibration'].get('reason'))}.")
        lines.append("")
    return lines


def _threads_text(threads):
    if not threads:
        return "–"
    parts = []
    for t in threads:
        last = f", last on {t['last_cpu']}" if t.get("last_cpu") is not None else ""
        parts.append(f"{t['name']} (cpus {t.get('cpus') or '?'}{last})")
    # One entry per distinct thread description; counts for repeats.
    seen = {}
    for x in parts:
        seen[x] = seen.get(x, 0) + 1
    return "; ".join(x if n == 1 else f"{n}x {x}" for x, n in seen.items())


def render_threads(records):
    """Where each implementation's threads ran (sampled by the runner from
    /proc: affinity and the cpu each last ran on), from its first ok
    record."""
    lines = ["## Where threads ran", ""]
    rows, seen = [], set()
    for r in records:
        threads = r.get("threads")
        if r.get("status") != "ok" or not threads or r["implementation"] in seen:
            continue
        seen.add(r["implementation"])
        rows.append((r["implementation"], _threads_text(threads.get("server")),
                     _threads_text(threads.get("client"))))
    if not rows:
        lines += ["No thread placement recorded (runs made before the runner sampled it).", ""]
        return lines
    lines.append("Sampled from /proc while the client ran (client) and before the server "
                 "was stopped (server): each thread's allowed cpus and the cpu it last ran "
                 "on. `iou-sqp` is io_uring's SQPOLL kernel thread, `iou-wrk` an io-wq "
                 "worker. A client that finished within "
                 "0.15 s was not sampled.")
    lines.append("")
    lines.append("| implementation | server threads | client threads |")
    lines.append("|---|---|---|")
    for impl, srv, cli in rows:
        lines.append(f"| `{impl}` | {_cell(srv)} | {_cell(cli)} |")
    lines.append("")
    return lines


class Row:
    """One implementation in one scenario, over its repetitions."""

    def __init__(self, records):
        first = records[0]
        self.records = records
        self.implementation = first["implementation"]
        self.program = first.get("program")
        self.variant = first.get("variant")
        self.program_kind = first["program_kind"]
        self.ok = [r for r in records if r["status"] == "ok"]
        self.flags = next((r.get("flags") for r in self.ok), first.get("flags"))
        self.backend_effective = next((r.get("backend_effective") for r in self.ok), None)
        self.reps = len({r["repetition"] for r in records})

    def s(self, name):
        return results.spread(self.records, name)

    def rep(self, name):
        """{repetition: value} of metric `name` over the ok repetitions."""
        return stats.by_repetition(self.records, name)


def scenarios(records):
    """scenario tuple -> list of Row, in first-seen order."""
    out = {}
    for case_records in group_by_case(records).values():
        out.setdefault(scenario_of(case_records[0]), []).append(Row(case_records))
    return out


def render(run, records, plots, plot_note=None):
    lines = []
    suite = run.get("suite") or (records[0]["suite"] if records else "?")
    lines.append(f"# ringlab report: suite `{suite}`")
    lines.append("")
    counts = {k: sum(1 for r in records if r["status"] == k) for k in ("ok", "failed", "skipped")}
    lines.append(f"- run: `{run.get('run_id', '?')}`, status **{run.get('status', '?')}**, "
                 f"started {run.get('started_utc', '?')}, finished {run.get('finished_utc', '?')}")
    lines.append(f"- records: {len(records)} ({counts['ok']} ok, {counts['failed']} failed, "
                 f"{counts['skipped']} skipped); "
                 f"{run.get('case_count', '?')} cases x {run.get('repetitions', '?')} "
                 f"repetitions, order {run.get('order', '?')}, topology "
                 f"{run.get('topology', '?')}")
    pin = run.get("pinning") or {}
    if pin:
        lines.append(f"- pinning: server on cpu {pin.get('server_cpu')}, client on cpu "
                     f"{pin.get('client_cpu')} (ours: `--cpu`; peers: `taskset -c`); "
                     "`uring-sqpoll` pins each side's SQPOLL thread to that side's cpu "
                     "(`--sqpoll_cpu`). Every thread's observed affinity is under *Where "
                     "threads ran*.")
    lines.append("- RTT is the full round trip in µs (sockperf runs with `--full-rtt`). Cells are "
                 "the median over ok repetitions with (min..max).")
    lines.append("- Every \"vs\" column is a **paired ratio**: the ratio of the two "
                 "implementations within each repetition (interleaved repetitions share the "
                 "host's state), then the median and (min..max) of those per-repetition ratios. "
                 "<1 is faster / lower. **Bold** = significant: the whole spread excludes 1.0 "
                 "and the median is more than 5% (p99: 10%) away from 1; never with fewer than "
                 "2 paired repetitions.")
    lines.append("")

    groups = scenarios(records)
    host = HostState(run, records)
    if host.unsteady:
        lines.append(f"- **{len(host.unsteady)} repetition(s) were taken while the host changed "
                     "speed state** (see *Host state*); ratios that pair them mix states.")
        lines.append("")
    lines += targets.render(targets.evaluate(run.get("targets"), records))
    lines += protocols.render(groups, host)
    lines.append("## Summary")
    lines.append("")
    for scen, rows in groups.items():
        rows_ok = [r for r in rows if r.ok]
        lines.append(f"### {scenario_label(scen)}")
        lines.append("")
        if not rows_ok:
            lines.append("No successful runs in this scenario (see *Failed and skipped*).")
            lines.append("")
            continue
        if scen[3] == "bulk":
            # A transfer has no round trips: its own columns.
            lines += protocols.bulk_table([(scen, rows_ok)], host,
                                          [p.implementation for p in rows_ok
                                           if p.program_kind == "peer"], with_scenario=False)
            sources = protocols.bulk_sources(rows_ok)
            if sources:
                lines += ["CPU per MB sources: " + "; ".join(sources) + ".", ""]
            continue
        inf = float("inf")
        rows_ok.sort(key=lambda r: r.s("p50").median or inf)
        best_p50 = min(rows_ok, key=lambda r: r.s("p50").median or inf)
        best_p99 = min(rows_ok, key=lambda r: r.s("p99").median or inf)
        peers = [r for r in rows_ok if r.program_kind == "peer"]
        # Server-side columns appear where some row has them (the scale suite).
        has = lambda name: any(r.s(name).n for r in rows_ok)
        srv_entries = has("server_kernel_entries_per_msg")
        srv_rss = has("server_rss_kib_per_connection")
        # Burst rows: how many messages the client kept in flight, of the
        # connections x inflight asked for (a client that falls short
        # measures a lighter load).
        in_flight = scen[3] == "burst" and has("inflight_achieved")
        # "server CPU vs best" only among rows measured the same way (the
        # server's rusage over the client's measured phase), and only where
        # server efficiency is the question (several connections or batches).
        srv_cpu = [r for r in rows_ok if r.s("server_cpu_us_per_msg").n and
                   all(x.get("server_measured") for x in r.ok)]
        scale_like = scen[2] > 1 or scen[3] != "pingpong"
        best_srv = min(srv_cpu, key=lambda r: r.s("server_cpu_us_per_msg").median) \
            if len(srv_cpu) > 1 and scale_like else None
        head = ["implementation", "ok/reps", "p50 µs", "p99 µs", "p99.9 µs", "max µs",
                "msg/s", "CPU µs/msg", "server CPU µs/msg"]
        head += ["server entries/msg"] if srv_entries else []
        head += ["server RSS KiB/conn"] if srv_rss else []
        head += [f"in flight (of {scen[2] * scen[5]})"] if in_flight else []
        head += ["kernel entries/msg", "p50 vs best", "p99 vs best"]
        head += ["server CPU vs best"] if best_srv else []
        head += [f"p50 vs {p.implementation}" for p in peers]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rows_ok:
            n_bad = sum(host.is_unsteady(x) for x in r.ok)
            cells = [f"`{r.implementation}`", f"{len(r.ok)}/{len(r.records)}" +
                     (f" ({n_bad} unsteady)" if n_bad else ""),
                     fmt_spread(r.s("p50")), fmt_spread(r.s("p99")), fmt_spread(r.s("p999")),
                     fmt_spread(r.s("max")), fmt_spread(r.s("messages_per_s"), 0),
                     fmt_spread(r.s("cpu_us_per_msg"), 2),
                     fmt_spread(r.s("server_cpu_us_per_msg"), 2)]
            if srv_entries:
                cells.append(fmt_spread(r.s("server_kernel_entries_per_msg"), 3))
            if srv_rss:
                cells.append(fmt_spread(r.s("server_rss_kib_per_connection"), 2))
            if in_flight:
                cells.append(fmt_spread(r.s("inflight_achieved"), 0))
            cells += [fmt_spread(r.s("kernel_entries_per_msg"), 2),
                      vs(r, best_p50, "p50"), vs(r, best_p99, "p99")]
            if best_srv:
                cells.append(vs(r, best_srv, "server_cpu_us_per_msg") if r in srv_cpu
                             else "–")
            cells += [vs(r, p, "p50") for p in peers]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Best p50: `{best_p50.implementation}`; best p99: "
                     f"`{best_p99.implementation}`.")
        lines.append("")
        sources = sorted({r["cpu_source"] for row in rows_ok for r in row.ok if r["cpu_source"]})
        if sources:
            lines.append("CPU µs/msg source: " + "; ".join(sources) + ".")
            lines.append("")
        by_source = {}
        for row in rows_ok:
            for src in sorted({r["server_cpu_source"] for r in row.ok
                               if r.get("server_cpu_source")}):
                by_source.setdefault(src, []).append(f"`{row.implementation}`")
        if by_source:
            lines.append("Server CPU µs/msg source: " + "; ".join(
                f"{src} ({', '.join(impls)})" for src, impls in by_source.items()) + ".")
            lines.append("")

    lines += render_host_state(run, records, host)

    lines.append("## Plots")
    lines.append("")
    if plot_note:
        lines.append(plot_note)
        lines.append("")
    for title, rel in plots:
        lines.append(f"**{title}**")
        lines.append("")
        lines.append(f"![{title}]({rel})")
        lines.append("")

    bad = {}
    for r in records:
        if r["status"] != "ok":
            key = (r["case_id"], r["status"], r.get("reason") or "")
            bad.setdefault(key, []).append(r)
    lines.append("## Failed and skipped")
    lines.append("")
    if not bad:
        lines.append("None.")
    else:
        lines.append("| case | status | repetitions | reason |")
        lines.append("|---|---|---|---|")
        for (case_id, status, reason), recs in bad.items():
            reps = ",".join(str(r["repetition"]) for r in recs)
            lines.append(f"| `{case_id}` | {status} | {reps} | {_cell(reason)} |")
        tails = [(k, recs[0]["stderr_tail"]) for k, recs in bad.items()
                 if recs[0].get("stderr_tail") and k[1] == "failed"]
        for (case_id, _, _), tail in tails[:10]:
            lines.append("")
            lines.append(f"<details><summary>stderr tail: {case_id}</summary>")
            lines.append("")
            lines.append("```")
            lines.append(tail)
            lines.append("```")
            lines.append("</details>")
    lines.append("")

    lines += render_threads(records)

    lines.append("## Backends and flags in effect")
    lines.append("")
    lines.append("| implementation | ran as | flags |")
    lines.append("|---|---|---|")
    seen = set()
    all_rows = [r for rows in groups.values() for r in rows]
    ran = {r.implementation for r in all_rows if r.ok}
    for r in all_rows:
        key = (r.implementation, r.backend_effective, r.flags)
        if key in seen or (not r.ok and r.implementation in ran):
            continue
        seen.add(key)
        if True:
            lines.append(f"| `{r.implementation}` | {r.backend_effective or '–'} | "
                         f"{_cell(r.flags or '–')} |")
    lines.append("")

    m = run.get("machine") or (records[0]["machine"] if records else {})
    lines.append("## Machine")
    lines.append("")
    lines.append("| field | value |")
    lines.append("|---|---|")
    for key in ("hostname", "kernel", "cpu_model", "cores", "liburing", "compiler",
                "build_type", "git_commit", "git_dirty", "memlock_limit", "io_uring_disabled",
                "python", "time_utc"):
        lines.append(f"| {key} | {_cell(str(m.get(key)))} |")
    for name, ver in (m.get("peer_versions") or {}).items():
        lines.append(f"| {name} version | {ver} |")
    if run.get("build_dir"):
        lines.append(f"| build dir | {run['build_dir']} |")
    lines.append("")
    return "\n".join(lines)


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- plots

def gnuplot_terminal(gnuplot):
    try:
        out = subprocess.run([gnuplot, "-e", "set terminal"], capture_output=True, text=True,
                             timeout=20)
        listing = out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError):
        return "png"
    return "pngcairo" if "pngcairo" in listing else "png"


def _q(s):
    return '"' + str(s).replace('"', "'") + '"'


def make_plots(run_dir, records, gnuplot=None, run=None):
    """Writes plots/*.dat, *.gp and *.png. Returns ([(title, relpath)], note)."""
    gnuplot = gnuplot if gnuplot is not None else shutil.which("gnuplot")
    if not gnuplot:
        return [], "Plots were skipped: gnuplot is not installed (apt-get install gnuplot-nox)."
    plot_dir = pathlib.Path(run_dir) / "plots"
    plot_dir.mkdir(exist_ok=True)
    term = gnuplot_terminal(gnuplot)
    header = [f"set terminal {term} size 960,540", "set termoption noenhanced",
              "set grid", "set key outside right top", 'set datafile missing "?"']
    jobs = []
    groups = scenarios(records)

    # 1. Latency percentiles per implementation, log axis.
    for n, (scen, rows) in enumerate(groups.items()):
        rows = [r for r in rows if r.ok]
        if not rows or scen[3] == "rate" or not any(r.s("p50").n for r in rows):
            continue
        name = f"latency-{n:02d}-{scen[0]}-{scen[1]}B-c{scen[2]}-{scen[3]}"
        with open(plot_dir / f"{name}.dat", "w") as f:
            f.write("percentile " + " ".join(_q(r.implementation) for r in rows) + "\n")
            for key, label in PCTS:
                vals = [r.s(key).median for r in rows]
                f.write(_q(label) + " " + " ".join("?" if v is None else f"{v:.3f}"
                                                    for v in vals) + "\n")
        script = header + [
            f"set output {_q(name + '.png')}", "set logscale y",
            f"set title {_q('RTT percentiles (median of reps): ' + scenario_label(scen))}",
            "set ylabel 'RTT (µs, log scale)'", "set xlabel 'percentile'",
            f"plot for [i=2:{len(rows) + 1}] {_q(name + '.dat')} using i:xtic(1) "
            "with linespoints lw 2 title columnheader(i)"]
        jobs.append((f"RTT percentiles, {scenario_label(scen)}", name, script))

    # 2. Throughput (and p99) vs offered rate.
    sweeps = {}
    for scen, rows in groups.items():
        if scen[3] != "rate":
            continue
        key = (scen[0], scen[1], scen[2], scen[6])
        for r in rows:
            if r.ok:
                sweeps.setdefault(key, {}).setdefault(r.implementation, []).append((scen[4], r))
    for n, (key, impls) in enumerate(sweeps.items()):
        name = f"rate-{n:02d}-{key[0]}-{key[1]}B-c{key[2]}"
        blocks = []
        with open(plot_dir / f"{name}.dat", "w") as f:
            for impl, pts in impls.items():
                f.write(f"# {impl}\n")
                for rate, row in sorted(pts, key=lambda p: p[0]):
                    tput, p99 = row.s("messages_per_s").median, row.s("p99").median
                    f.write(f"{rate:g} {'?' if tput is None else f'{tput:.1f}'} "
                            f"{'?' if p99 is None else f'{p99:.3f}'}\n")
                f.write("\n\n")
                blocks.append(impl)
        plots_t = ", ".join(f"{_q(name + '.dat')} index {i} using 1:2 with linespoints lw 2 "
                            f"title {_q(b)}" for i, b in enumerate(blocks))
        plots_l = ", ".join(f"{_q(name + '.dat')} index {i} using 1:3 with linespoints lw 2 "
                            f"title {_q(b)}" for i, b in enumerate(blocks))
        label = f"{key[0].upper()} {key[1]} B, {key[2]} conn" + \
            (f", {results.params_label(key[3])}" if key[3] else "")
        script = header + [
            f"set output {_q(name + '.png')}", "set multiplot layout 1,2",
            f"set title {_q('Achieved vs offered rate: ' + label)}",
            "set xlabel 'offered msg/s'", "set ylabel 'achieved msg/s'", "set key top left",
            f"plot {plots_t}, x with lines dt 2 lc rgb 'gray' title 'offered'",
            f"set title {_q('p99 RTT vs offered rate: ' + label)}", "set logscale y",
            "set ylabel 'p99 RTT (µs, log)'", f"plot {plots_l}", "unset multiplot"]
        jobs.append((f"Throughput and p99 vs offered rate, {label}", name, script))

    # 3. Scaling: msg/s and server CPU per message against the connection
    # count (log x), one plot per (protocol, payload, mode, rate, inflight,
    # params) that has at least two connection counts.
    curves = {}
    for scen, rows in groups.items():
        if scen[0] == "mqtt" or scen[3] == "bulk":
            continue    # MQTT has its own plot (protocols.py); a transfer has one peer
        key = scen[:2] + scen[3:]
        for r in rows:
            if r.ok:
                curves.setdefault(key, {}).setdefault(r.implementation, []).append((scen[2], r))
    n_scale = 0
    for key, impls in curves.items():
        if len({c for pts in impls.values() for c, _ in pts}) < 2:
            continue
        name = f"scale-{n_scale:02d}-{key[0]}-{key[1]}B-{key[2]}"
        n_scale += 1
        blocks = []
        with open(plot_dir / f"{name}.dat", "w") as f:
            for impl, pts in impls.items():
                f.write(f"# {impl}: connections msg/s server_cpu_us_per_msg\n")
                for conns, row in sorted(pts, key=lambda p: p[0]):
                    tput = row.s("messages_per_s").median
                    cpu = row.s("server_cpu_us_per_msg").median
                    f.write(f"{conns} {'?' if tput is None else f'{tput:.1f}'} "
                            f"{'?' if cpu is None else f'{cpu:.4f}'}\n")
                f.write("\n\n")
                blocks.append(impl)
        label = scenario_label((key[0], key[1], "N") + key[2:]).replace("N conn, ", "")
        plot = lambda col: ", ".join(
            f"{_q(name + '.dat')} index {i} using 1:{col} with linespoints lw 2 title {_q(b)}"
            for i, b in enumerate(blocks))
        script = [header[0].replace("960,540", "1280,540")] + header[1:] + [
            f"set output {_q(name + '.png')}", "set multiplot layout 1,2",
            "set logscale x", "set xlabel 'connections (log)'",
            "set key inside top left font ',9'", "set xrange [0.7:*]",
            f"set title {_q('msg/s: ' + label)}", "set ylabel 'msg/s'", "set yrange [0:*]",
            f"plot {plot(2)}",
            f"set title {_q('server CPU per message: ' + label)}",
            "set ylabel 'server CPU µs/msg'", f"plot {plot(3)}", "unset multiplot"]
        jobs.append((f"msg/s and server CPU/msg vs connections, {label}", name, script))

    # The protocol families' plots: MQTT broker CPU vs connections, goodput
    # vs loss.
    jobs += protocols.plot_jobs(groups, plot_dir, header)

    # 4. The host's speed index over the run.
    host = HostState(run or {}, records)
    if host.calibrated:
        name = "host-state"
        with open(plot_dir / f"{name}.dat", "w") as f:
            f.write("# sequence calibration_p50_us repetition\n")
            for r in host.records:
                v = _cal_p50(r["calibration"])
                if v:
                    f.write(f"{r.get('sequence', 0)} {v:.3f} {r['repetition']}\n")
        script = header + [
            f"set output {_q(name + '.png')}",
            "set title 'Steadiness check before each repetition (p50 of the floor ping-pong)'",
            "set xlabel 'record in run order'", "set ylabel 'check p50 (µs)'",
            "set yrange [0:*]",
            f"plot {_q(name + '.dat')} using 1:2 with linespoints lw 2 title 'check p50'"]
        jobs.append(("Host state: steadiness check in run order", name, script))

    # 5. Kernel entries per message.
    impls, cols, table = [], [], {}
    for scen, rows in groups.items():
        for r in rows:
            v = r.s("kernel_entries_per_msg").median
            if v is None:
                continue
            if r.implementation not in impls:
                impls.append(r.implementation)
            label = scenario_label(scen)
            if label not in cols:
                cols.append(label)
            table[(r.implementation, label)] = v
    if impls:
        name = "kernel-entries"
        with open(plot_dir / f"{name}.dat", "w") as f:
            f.write("implementation " + " ".join(_q(c) for c in cols) + "\n")
            for impl in impls:
                f.write(_q(impl) + " " + " ".join(
                    f"{table[(impl, c)]:.3f}" if (impl, c) in table else "?" for c in cols) + "\n")
        script = header + [
            f"set output {_q(name + '.png')}", "set style data histogram",
            "set style histogram cluster gap 1", "set style fill solid 0.8 border -1",
            "set boxwidth 0.9", "set xtics rotate by -30", "set yrange [0:*]",
            "set title 'Kernel entries per message (client, median of reps)'",
            "set ylabel 'kernel entries / message'",
            f"plot for [i=2:{len(cols) + 1}] {_q(name + '.dat')} using i:xtic(1) "
            "title columnheader(i)"]
        jobs.append(("Kernel entries per message", name, script))

    done, failures = [], []
    for title, name, script in jobs:
        gp = plot_dir / f"{name}.gp"
        gp.write_text("\n".join(script) + "\n")
        try:
            r = subprocess.run([gnuplot, gp.name], cwd=plot_dir, capture_output=True, text=True,
                               timeout=60)
            ok = r.returncode == 0 and (plot_dir / f"{name}.png").exists()
            err = r.stderr.strip()
        except (OSError, subprocess.SubprocessError) as e:
            ok, err = False, str(e)
        if ok:
            done.append((title, f"plots/{name}.png"))
        else:
            failures.append(f"{name}: {err.splitlines()[-1] if err else 'no output'}")
    note = f"Plots made with gnuplot (terminal {term}); data and scripts are in plots/."
    if failures:
        note += " Some plots failed: " + "; ".join(failures)
    if not jobs:
        note = "No plots: no successful runs."
    return done, note


def write_report(run_dir, gnuplot=None):
    run_dir = pathlib.Path(run_dir)
    run, records = results.load(run_dir)
    plots, note = make_plots(run_dir, records, gnuplot, run)
    path = run_dir / "report.md"
    path.write_text(render(run, records, plots, note))
    return path
