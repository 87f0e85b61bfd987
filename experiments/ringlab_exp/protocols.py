"""Report sections per protocol family (DDS, MQTT, reliable UDP) and their plots.

    lines = render(groups, host)                  # Markdown, [] without records
    jobs = plot_jobs(groups, plot_dir, header)    # [(title, name, gnuplot lines)]

`groups` is report.scenarios(records): scenario tuple -> [Row]. A family's
section appears when the run has records of one of its protocols. Every
"vs" cell is a paired ratio (stats.py), bold when significant, like the
rest of the report:

- **DDS** (protocols `dds`, `rtps`): p50/p99 per implementation, vs each
  peer (ddsperf) and vs our `epoll` of the same program, the DDS p50 over the
  raw UDP p50 of the same preset in the same run (`ringlab_pingpong`, UDP,
  same payload, connections and mode, no parameters), CPU and kernel entries
  per sample; then DDS throughput (mode `bulk`): samples/s, MB/s, datagrams
  per sample, writer and reader CPU per sample, write-to-take latency, and
  each of those vs the same implementation at `latency_budget_us=0`
  (LATENCY_BUDGET batching), MB/s vs each peer and vs our epoll.
- **MQTT** (`mqtt`): the round trip per QoS (mode `pingpong`), then fan-in
  and fan-out (modes `rate` / `burst` with `params.pattern`): delivered
  msg/s, deliveries/s, broker CPU and kernel entries per delivery, p50/p99,
  connections open, vs each peer (mosquitto); a plot of broker CPU per
  delivery (and deliveries/s) against the connection count, log x.
- **Reliable UDP** (`rudp`, `enet`): the round trip vs each peer (ENet) and
  vs our epoll; bulk transfers per loss rate: goodput, completion time,
  retransmission ratio, spurious retransmissions, CPU and kernel entries per
  MB of both sides, goodput vs each peer; a plot of goodput against loss.
"""

from . import results, stats

FAMILIES = (("DDS", ("dds", "rtps")), ("MQTT", ("mqtt",)), ("Reliable UDP", ("rudp", "enet")))
# The raw ping-pong a DDS preset is compared with (same preset, same run).
RAW_PROGRAM = "ringlab_pingpong"
EPOLL = "epoll"


def _fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _spread(row, name, digits=1, scale=1.0):
    s = row.s(name)
    if s.n == 0:
        return "–"
    med = _fmt(s.median * scale, digits)
    if s.n == 1 or _fmt(s.lo * scale, digits) == _fmt(s.hi * scale, digits):
        return med
    return f"{med} ({_fmt(s.lo * scale, digits)}..{_fmt(s.hi * scale, digits)})"


def _vs(row, other, name):
    if other is None:
        return "–"
    if row is other:
        return "1.00"
    r = stats.paired(row.rep(name), other.rep(name))
    return stats.fmt_ratio(r, stats.threshold_for(name), 2)


def _cell(text):
    return str(text).replace("|", "\\|")


def _ok_label(row, host):
    n_bad = sum(host.is_unsteady(x) for x in row.ok) if host else 0
    return f"{len(row.ok)}/{len(row.records)}" + (f" ({n_bad} unsteady)" if n_bad else "")


def _family(groups, protocols):
    return {scen: [r for r in rows if r.ok] for scen, rows in groups.items()
            if scen[0] in protocols and any(r.ok for r in rows)}


def _peers(rows):
    return [r for r in rows if r.program_kind == "peer"]


def _epoll_of(row, rows):
    """Our epoll row of the same program in the same scenario."""
    if row.program_kind == "peer":
        return None
    return next((r for r in rows if r.program == row.program and r.variant == EPOLL), None)


def _sorted(rows, key="p50"):
    inf = float("inf")
    return sorted(rows, key=lambda r: (r.s(key).median is None, r.s(key).median or inf))


def _peer_names(fam):
    names = []
    for rows in fam.values():
        for p in _peers(rows):
            if p.implementation not in names:
                names.append(p.implementation)
    return names


def _peer_cells(row, rows, peer_names, name):
    by = {p.implementation: p for p in _peers(rows)}
    return [_vs(row, by.get(impl), name) for impl in peer_names]


# ---------------------------------------------------------------- DDS

def _raw_udp(groups, scen, row):
    if row.program_kind == "peer":
        return None
    raw = ("udp",) + tuple(scen[1:6]) + ((),)
    return next((r for r in groups.get(raw, []) if r.ok and r.program == RAW_PROGRAM and
                 r.variant == row.variant), None)


# LATENCY_BUDGET batching (suites/rtps-batching.toml): a throughput row is
# compared with the same implementation in the same scenario with this
# parameter at 0.
BUDGET_PARAM = "latency_budget_us"
# Figures only ringlab_dds_throughput reports (its JSON, kept in the record).
DDS_DATAGRAMS = "program_result.datagrams_per_sample"
DDS_LATENCY_P50 = "program_result.latency_us.p50"
DDS_LATENCY_P99 = "program_result.latency_us.p99"


def _no_budget(scen, row, fam):
    """The same implementation in `scen` with latency_budget_us = 0, or None
    (no such parameter, or none measured)."""
    params = dict(scen[6])
    if BUDGET_PARAM not in params:
        return None
    base = dict(params, **{BUDGET_PARAM: 0})
    key = tuple(scen[:6]) + (tuple(sorted(base.items())),)
    for other in fam.get(key, []):
        if other.implementation == row.implementation:
            return other
    # 0 and 0.0 are the same budget.
    for s2, rows in fam.items():
        p2 = dict(s2[6])
        if s2[:6] == scen[:6] and p2.keys() == base.keys() and \
                all(p2[k] == v or (k == BUDGET_PARAM and float(p2[k]) == 0)
                    for k, v in base.items()):
            return next((o for o in rows if o.implementation == row.implementation), None)
    return None


def _dds_bulk_key(scen):
    params = dict(scen[6])
    budget = params.pop(BUDGET_PARAM, 0)
    return (str(sorted(params.items())), scen[1], scen[2], float(budget or 0))


def render_dds_bulk(bulk, host):
    peers = _peer_names(bulk)
    lines = ["### DDS throughput and LATENCY_BUDGET batching", "",
             "One writer streams samples to one reader (mode bulk). *samples/s* and MB/s "
             "are the reader's over its measured phase; *datagrams/sample*: every datagram "
             "the reader's participant received per sample taken (data, heartbeats, "
             "discovery); writer CPU is the pub's rusage over the reader's measured phase "
             "(its timeline), reader CPU the sub's own; latency is write to take, one way, "
             "from the samples' source timestamps (one host only). *vs budget 0*: paired "
             "per repetition with the same implementation and scenario at "
             f"`{BUDGET_PARAM}=0` (samples/s > 1 is faster, CPU and datagrams < 1 cheaper, "
             "latency > 1 slower).", ""]
    head = ["scenario", "implementation", "ok/reps", "samples/s", "MB/s", "datagrams/sample",
            "writer CPU µs/sample", "reader CPU µs/sample", "latency p50 µs",
            "latency p99 µs", "lost", "samples/s vs budget 0", "writer CPU vs budget 0",
            "reader CPU vs budget 0", "datagrams vs budget 0", "latency p50 vs budget 0"]
    head += [f"MB/s vs `{p}`" for p in peers] + ["MB/s vs our epoll"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scen in sorted(bulk, key=_dds_bulk_key):
        rows = bulk[scen]
        for row in sorted(rows, key=lambda r: (r.program_kind == "peer", r.implementation)):
            base = _no_budget(scen, row, bulk)
            cells = [_cell(results.scenario_label(scen)), f"`{row.implementation}`",
                     _ok_label(row, host), _spread(row, "messages_per_s", 0),
                     _spread(row, "goodput_bytes_per_s", 2, 1e-6),
                     _spread(row, DDS_DATAGRAMS, 3),
                     _spread(row, "server_cpu_us_per_msg", 3),
                     _spread(row, "cpu_us_per_msg", 3),
                     _spread(row, DDS_LATENCY_P50, 0), _spread(row, DDS_LATENCY_P99, 0),
                     _spread(row, "lost", 0)]
            cells += [_vs(row, base, m) for m in (
                "messages_per_s", "server_cpu_us_per_msg", "cpu_us_per_msg", DDS_DATAGRAMS,
                DDS_LATENCY_P50)]
            cells += _peer_cells(row, rows, peers, "goodput_bytes_per_s")
            cells.append(_vs(row, _epoll_of(row, rows), "goodput_bytes_per_s"))
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def render_dds(groups, host):
    fam = _family(groups, FAMILIES[0][1])
    if not fam:
        return []
    bulk = {s: r for s, r in fam.items() if s[3] == "bulk"}
    fam = {s: r for s, r in fam.items() if s[3] != "bulk"}
    if not fam:
        return ["## DDS", ""] + render_dds_bulk(bulk, host)
    peers = _peer_names(fam)
    lines = ["## DDS", "",
             "Round trips of DDS samples (full RTT, µs; ddsperf's half round trips are "
             "doubled). Ratios are paired per repetition: vs each peer and vs our `epoll` "
             "(p50), and **DDS / raw UDP**: the p50 over the `ringlab_pingpong` UDP p50 of "
             "the same preset, payload and mode in this run (what the DDS layer costs). "
             "CPU and kernel entries are the client's per sample.", ""]
    head = ["scenario", "implementation", "ok/reps", "p50 µs", "p99 µs"]
    head += [f"p50 vs `{p}`" for p in peers] + ["p50 vs our epoll", "DDS / raw UDP p50",
                                                "CPU µs/sample", "kernel entries/sample"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    missing_raw = False
    for scen, rows in fam.items():
        for row in _sorted(rows):
            raw = _raw_udp(groups, scen, row)
            missing_raw |= raw is None and row.program_kind != "peer"
            cells = [_cell(results.scenario_label(scen)), f"`{row.implementation}`",
                     _ok_label(row, host), _spread(row, "p50"), _spread(row, "p99")]
            cells += _peer_cells(row, rows, peers, "p50")
            cells += [_vs(row, _epoll_of(row, rows), "p50"), _vs(row, raw, "p50"),
                      _spread(row, "cpu_us_per_msg", 2),
                      _spread(row, "kernel_entries_per_msg", 2)]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if missing_raw:
        lines += ["A DDS / raw UDP cell is – where the run has no `ringlab_pingpong` UDP row "
                  "of that preset, payload and mode (add one to the suite).", ""]
    if bulk:
        lines += render_dds_bulk(bulk, host)
    return lines


# ---------------------------------------------------------------- MQTT

ACK_P50 = "program_result.ack_us.p50"
ACK_P99 = "program_result.ack_us.p99"


def _pattern(scen):
    return dict(scen[6]).get("pattern")


def render_mqtt(groups, host):
    fam = _family(groups, FAMILIES[1][1])
    if not fam:
        return []
    peers = _peer_names(fam)
    lines = ["## MQTT", ""]
    trip = {s: r for s, r in fam.items() if s[3] == "pingpong"}
    fan = {s: r for s, r in fam.items() if s[3] != "pingpong"}
    if trip:
        lines += ["### Round trip", "",
                  "Publish to delivery through the broker (publisher and subscriber are "
                  "separate connections of our bench client), per QoS. Broker CPU is per "
                  "delivery (its own rusage for ours, the runner's wait4 for a peer).", ""]
        head = ["scenario", "implementation", "ok/reps", "p50 µs", "p99 µs"]
        head += [f"p50 vs `{p}`" for p in peers] + ["p50 vs our epoll", "client CPU µs/msg",
                                                    "broker CPU µs/msg"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for scen, rows in trip.items():
            for row in _sorted(rows):
                cells = [_cell(results.scenario_label(scen)), f"`{row.implementation}`",
                         _ok_label(row, host), _spread(row, "p50"), _spread(row, "p99")]
                cells += _peer_cells(row, rows, peers, "p50")
                cells += [_vs(row, _epoll_of(row, rows), "p50"),
                          _spread(row, "cpu_us_per_msg", 2),
                          _spread(row, "server_cpu_us_per_msg", 2)]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if fan:
        lines += ["### Fan-in and fan-out", "",
                  "`fanin`: N publishers to one subscriber; `fanout`: one publisher to N "
                  "subscribers (N = connections). *msg/s* counts each publish once when "
                  "delivered, *deliveries/s* each subscriber's copy. Broker CPU and kernel "
                  "entries are per delivery: ours over the client's measured phase (the "
                  "broker's timeline), a peer's from the runner's wait4 over the whole run "
                  "(connection set-up included, so it is an upper bound). p50/p99: publish "
                  "(rate mode: its intended send time) to delivery. Ratios vs each peer are "
                  "paired; for msg/s higher is better, for CPU lower.", ""]
        # Publish to PUBACK (QoS 1) or PUBCOMP (QoS 2) at the publisher, where
        # the bench reports it: with a durable store, how long the broker held
        # the acknowledgement for its commit.
        ack = any(row.s(ACK_P50).n for rows in fan.values() for row in rows)
        if ack:
            lines[-1:-1] = ["*ack p50/p99*: publish to PUBACK (QoS 1) or PUBCOMP (QoS 2) "
                            "at the publisher, from our bench client's `ack_us`; with a "
                            "durable store it includes the commit the broker waits for."]
        head = ["scenario", "implementation", "ok/reps", "msg/s", "deliveries/s",
                "broker CPU µs/delivery", "broker entries/delivery", "client entries/msg",
                "p50 µs", "p99 µs", "connections open"]
        head += ["ack p50 µs", "ack p99 µs"] if ack else []
        for p in peers:
            head += [f"msg/s vs `{p}`", f"broker CPU vs `{p}`"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        order = sorted(fan, key=lambda s: (str(_pattern(s)), s[3], s[4] or 0, s[5], s[2],
                                           s[1], s[6]))
        for scen in order:
            rows = fan[scen]
            for row in _sorted(rows, "server_cpu_us_per_msg"):
                cells = [_cell(results.scenario_label(scen)), f"`{row.implementation}`",
                         _ok_label(row, host), _spread(row, "messages_per_s", 0),
                         _spread(row, "deliveries_per_s", 0),
                         _spread(row, "server_cpu_us_per_msg", 3),
                         _spread(row, "server_kernel_entries_per_msg", 3),
                         _spread(row, "kernel_entries_per_msg", 3),
                         _spread(row, "p50"), _spread(row, "p99"),
                         _spread(row, "connections_open", 0)]
                if ack:
                    cells += [_spread(row, ACK_P50), _spread(row, ACK_P99)]
                by = {p.implementation: p for p in _peers(rows)}
                for p in peers:
                    cells += [_vs(row, by.get(p), "messages_per_s"),
                              _vs(row, by.get(p), "server_cpu_us_per_msg")]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        sources = sorted({r.get("server_cpu_source") for rows in fan.values() for row in rows
                          for r in row.ok if r.get("server_cpu_source")})
        if sources:
            lines += ["Broker CPU source: " + "; ".join(sources) + ".", ""]
    return lines


# ---------------------------------------------------------------- reliable UDP

def bulk_table(scen_rows, host, peers=None, with_scenario=True):
    """Rows of a bulk-transfer table: [(scen, rows)] -> Markdown lines."""
    peers = peers if peers is not None else []
    head = (["scenario"] if with_scenario else []) + [
        "implementation", "ok/reps", "goodput MB/s", "completion s", "retransmission ratio",
        "spurious retransmissions", "client CPU µs/MB", "server CPU µs/MB",
        "client entries/MB", "server entries/MB"]
    head += [f"goodput vs `{p}`" for p in peers] + ["goodput vs our epoll"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scen, rows in scen_rows:
        for row in sorted(rows, key=lambda r: -(r.s("goodput_bytes_per_s").median or 0)):
            cells = ([_cell(results.scenario_label(scen))] if with_scenario else []) + [
                f"`{row.implementation}`", _ok_label(row, host),
                _spread(row, "goodput_bytes_per_s", 2, 1e-6),
                _spread(row, "completion_s", 3), _spread(row, "retransmission_ratio", 3),
                _spread(row, "spurious_retransmissions", 0),
                _spread(row, "client_cpu_us_per_mb", 0), _spread(row, "server_cpu_us_per_mb", 0),
                _spread(row, "client_kernel_entries_per_mb", 1),
                _spread(row, "server_kernel_entries_per_mb", 1)]
            cells += _peer_cells(row, rows, peers, "goodput_bytes_per_s")
            cells.append(_vs(row, _epoll_of(row, rows), "goodput_bytes_per_s"))
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def bulk_sources(rows):
    out = set()
    for row in rows:
        for r in row.ok:
            b = r.get("bulk") or {}
            for key in ("client_cpu_source", "server_cpu_source"):
                if b.get(key):
                    out.add(f"{key.split('_')[0]}: {b[key]}")
    return sorted(out)


def _loss_key(scen):
    params = dict(scen[6])
    return (params.get("direction", ""), params.get("bytes", 0), scen[1],
            float(params.get("loss_pct", 0) or 0))


def render_rudp(groups, host):
    fam = _family(groups, FAMILIES[2][1])
    if not fam:
        return []
    peers = _peer_names(fam)
    lines = ["## Reliable UDP", ""]
    trip = {s: r for s, r in fam.items() if s[3] != "bulk"}
    bulk = {s: r for s, r in fam.items() if s[3] == "bulk"}
    if trip:
        lines += ["### Round trip", "",
                  "Reliable ping-pong (full RTT, µs) per loss rate; ratios paired per "
                  "repetition, vs each peer and vs our `epoll`.", ""]
        head = ["scenario", "implementation", "ok/reps", "p50 µs", "p99 µs"]
        head += [f"p50 vs `{p}`" for p in peers] + ["p50 vs our epoll", "CPU µs/msg",
                                                    "kernel entries/msg"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for scen, rows in trip.items():
            for row in _sorted(rows):
                cells = [_cell(results.scenario_label(scen)), f"`{row.implementation}`",
                         _ok_label(row, host), _spread(row, "p50"), _spread(row, "p99")]
                cells += _peer_cells(row, rows, peers, "p50")
                cells += [_vs(row, _epoll_of(row, rows), "p50"),
                          _spread(row, "cpu_us_per_msg", 2),
                          _spread(row, "kernel_entries_per_msg", 2)]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if bulk:
        lines += ["### Bulk transfer: goodput per loss rate", "",
                  "Goodput = payload bytes / completion time (MB = 10^6 bytes). "
                  "Retransmission ratio = payload packets sent again / packets needed once; "
                  "spurious = resends the receiver already had (– = the program cannot "
                  "tell). CPU and kernel entries per MB of payload, client and server. "
                  "Goodput ratios are paired per repetition; > 1 is faster.", ""]
        order = sorted(bulk, key=_loss_key)
        lines += bulk_table([(s, bulk[s]) for s in order], host, peers)
        sources = bulk_sources([row for rows in bulk.values() for row in rows])
        if sources:
            lines += ["CPU per MB sources: " + "; ".join(sources) + ".", ""]
    return lines


def render(groups, host):
    return render_dds(groups, host) + render_mqtt(groups, host) + render_rudp(groups, host)


# ---------------------------------------------------------------- plots

def _q(s):
    return '"' + str(s).replace('"', "'") + '"'


def plot_jobs(groups, plot_dir, header):
    """The MQTT broker-CPU plot and the goodput-vs-loss plot."""
    jobs = []
    # MQTT: broker CPU per delivery and deliveries/s against connections.
    curves = {}
    for scen, rows in _family(groups, FAMILIES[1][1]).items():
        if scen[3] == "pingpong":
            continue
        key = (scen[1], scen[3], scen[4], scen[5], scen[6])
        for row in rows:
            curves.setdefault(key, {}).setdefault(row.implementation, []).append(
                (scen[2], row))
    for n, (key, impls) in enumerate(curves.items()):
        if len({c for pts in impls.values() for c, _ in pts}) < 2:
            continue
        name = f"mqtt-cpu-{n:02d}"
        blocks = []
        with open(plot_dir / f"{name}.dat", "w") as f:
            for impl, pts in impls.items():
                f.write(f"# {impl}: connections broker_cpu_us_per_delivery deliveries_per_s\n")
                for conns, row in sorted(pts, key=lambda p: p[0]):
                    cpu = row.s("server_cpu_us_per_msg").median
                    dps = row.s("deliveries_per_s").median or row.s("messages_per_s").median
                    f.write(f"{conns} {'?' if cpu is None else f'{cpu:.4f}'} "
                            f"{'?' if dps is None else f'{dps:.1f}'}\n")
                f.write("\n\n")
                blocks.append(impl)
        label = results.scenario_label(("mqtt", key[0], "N") + key[1:]).replace("N conn, ", "")
        plot = lambda col: ", ".join(
            f"{_q(name + '.dat')} index {i} using 1:{col} with linespoints lw 2 title {_q(b)}"
            for i, b in enumerate(blocks))
        script = [header[0].replace("960,540", "1280,540")] + header[1:] + [
            f"set output {_q(name + '.png')}", "set multiplot layout 1,2", "set logscale x",
            "set xlabel 'connections: publishers (fan-in) / subscribers (fan-out), log'",
            "set key inside top left font ',9'", "set yrange [0:*]",
            f"set title {_q('broker CPU per delivery: ' + label)}",
            "set ylabel 'broker CPU µs/delivery'", f"plot {plot(2)}",
            f"set title {_q('deliveries/s: ' + label)}", "set ylabel 'deliveries/s'",
            f"plot {plot(3)}", "unset multiplot"]
        jobs.append((f"MQTT broker CPU per delivery vs connections, {label}", name, script))
    # Reliable UDP: goodput against loss.
    curves = {}
    for scen, rows in _family(groups, FAMILIES[2][1]).items():
        if scen[3] != "bulk":
            continue
        params = dict(scen[6])
        loss = params.pop("loss_pct", None)
        if not isinstance(loss, (int, float)) or isinstance(loss, bool):
            continue
        key = (scen[0], scen[1], tuple(sorted(params.items())))
        for row in rows:
            curves.setdefault(key, {}).setdefault(row.implementation, []).append((loss, row))
    for n, (key, impls) in enumerate(curves.items()):
        if len({x for pts in impls.values() for x, _ in pts}) < 2:
            continue
        name = f"goodput-loss-{n:02d}"
        blocks = []
        with open(plot_dir / f"{name}.dat", "w") as f:
            for impl, pts in impls.items():
                f.write(f"# {impl}: loss_pct goodput_MB_per_s\n")
                for loss, row in sorted(pts, key=lambda p: p[0]):
                    g = row.s("goodput_bytes_per_s").median
                    f.write(f"{loss:g} {'?' if g is None else f'{g / 1e6:.3f}'}\n")
                f.write("\n\n")
                blocks.append(impl)
        label = f"{key[0].upper()} {key[1]} B chunks" + \
            (f", {results.params_label(key[2])}" if key[2] else "")
        plots = ", ".join(f"{_q(name + '.dat')} index {i} using 1:2 with linespoints lw 2 "
                          f"title {_q(b)}" for i, b in enumerate(blocks))
        script = header + [
            f"set output {_q(name + '.png')}", f"set title {_q('Goodput vs loss: ' + label)}",
            "set xlabel 'loss (%)'", "set ylabel 'goodput (MB/s)'", "set yrange [0:*]",
            "set key inside top right", f"plot {plots}"]
        jobs.append((f"Goodput vs loss, {label}", name, script))
    return jobs
