"""report.md (+ plots/*.png) for one result folder.

    path = write_report(run_dir)            # run_dir/report.md
    text = render(run, records, plots)      # the Markdown, without writing

Ratios are taken within one run only (absolute times drift on a shared
machine). For each scenario (protocol, payload, connections, mode, rate) and
each implementation (program:variant) we take the median over its ok
repetitions and show min..max; "vs best" divides by the best median in the
scenario, "vs <peer>" by the peer's median. The range of a ratio a/b is
[min a / max b, max a / min b], so it is wide when either side is noisy.

Plots need gnuplot; without it the report says they were skipped.
"""

import pathlib
import shutil
import subprocess

from . import results
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


def ratio_range(a, b):
    """(median ratio, lo, hi) of Spread a over Spread b, or None."""
    if not a.n or not b.n or not b.median or not b.lo or not b.hi:
        return None
    return a.median / b.median, a.lo / b.hi, a.hi / b.lo


def fmt_ratio(r):
    if r is None:
        return "–"
    mid, lo, hi = r
    if abs(hi - lo) < 0.005:
        return f"{mid:.2f}"
    return f"{mid:.2f} ({lo:.2f}..{hi:.2f})"


class Row:
    """One implementation in one scenario, over its repetitions."""

    def __init__(self, records):
        first = records[0]
        self.records = records
        self.implementation = first["implementation"]
        self.program_kind = first["program_kind"]
        self.ok = [r for r in records if r["status"] == "ok"]
        self.flags = next((r.get("flags") for r in self.ok), first.get("flags"))
        self.backend_effective = next((r.get("backend_effective") for r in self.ok), None)
        self.reps = len({r["repetition"] for r in records})

    def s(self, name):
        return results.spread(self.records, name)


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
                     f"{pin.get('client_cpu')} (ours: `--cpu`; peers: `taskset -c`). Kernel "
                     "threads (SQPOLL) are not pinned and share these cores.")
    lines.append("- RTT is the full round trip in µs (sockperf runs with `--full-rtt`). Cells are "
                 "the median over ok repetitions with (min..max). Ratios: <1 is faster / "
                 "lower; the range is [min a / max b .. max a / min b].")
    lines.append("")

    groups = scenarios(records)
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
        inf = float("inf")
        rows_ok.sort(key=lambda r: r.s("p50").median or inf)
        best_p50 = min(rows_ok, key=lambda r: r.s("p50").median or inf)
        best_p99 = min(rows_ok, key=lambda r: r.s("p99").median or inf)
        peers = [r for r in rows_ok if r.program_kind == "peer"]
        head = ["implementation", "ok/reps", "p50 µs", "p99 µs", "p99.9 µs", "max µs",
                "msg/s", "CPU µs/msg", "server CPU µs/msg", "kernel entries/msg", "p50 vs best",
                "p99 vs best"]
        head += [f"p50 vs {p.implementation}" for p in peers]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rows_ok:
            cells = [f"`{r.implementation}`", f"{len(r.ok)}/{len(r.records)}",
                     fmt_spread(r.s("p50")), fmt_spread(r.s("p99")), fmt_spread(r.s("p999")),
                     fmt_spread(r.s("max")), fmt_spread(r.s("messages_per_s"), 0),
                     fmt_spread(r.s("cpu_us_per_msg"), 2),
                     fmt_spread(r.s("server_cpu_us_per_msg"), 2),
                     fmt_spread(r.s("kernel_entries_per_msg"), 2),
                     fmt_ratio(ratio_range(r.s("p50"), best_p50.s("p50"))),
                     fmt_ratio(ratio_range(r.s("p99"), best_p99.s("p99")))]
            cells += [fmt_ratio(ratio_range(r.s("p50"), p.s("p50"))) for p in peers]
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


def make_plots(run_dir, records, gnuplot=None):
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
        if not rows or scen[3] == "rate":
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

    # 3. Kernel entries per message.
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
    plots, note = make_plots(run_dir, records, gnuplot)
    path = run_dir / "report.md"
    path.write_text(render(run, records, plots, note))
    return path
