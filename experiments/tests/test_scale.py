"""The many-connection pieces: server metrics over the client's measured
phase (from the server's timeline), the measured-phase cap, targets, the
scale suite and its report columns and plots."""

import shutil
import unittest

from tests.helpers import make_record, tempdir, write_suite
from ringlab_exp import report, results, runner, targets
from ringlab_exp.suite import SuiteError, load_registry, load_suite

S = 1_000_000_000   # ns


def timeline(points):
    """points: (t_s, cpu_us, messages, entries, rss_kib, connections)"""
    cols = list(zip(*points))
    return {"interval_ms": 50, "t_ns": [int(t * S) for t in cols[0]], "cpu_us": list(cols[1]),
            "messages": list(cols[2]), "kernel_entries": list(cols[3]),
            "rss_kib": list(cols[4]), "connections": list(cols[5])}


class ServerMeasured(unittest.TestCase):
    STATS = {"rss_kib_ready": 10000, "cpu_us": 9e9, "messages": 1, "timeline": timeline([
        (0.0, 0, 0, 0, 10000, 0),         # READY
        (1.0, 50_000, 0, 10, 10000, 0),   # connections being opened
        (2.0, 150_000, 100_000, 110, 10800, 1000),
        (3.0, 250_000, 200_000, 210, 10800, 1000),
        (4.0, 350_000, 300_000, 310, 10800, 1000),
        (4.5, 360_000, 300_000, 312, 10800, 0)])}

    def test_window_is_cut_out_of_the_timeline(self):
        client = {"measured_start_ns": int(2.5 * S), "measured_end_ns": int(3.5 * S)}
        m = runner.server_measured(self.STATS, client)
        self.assertAlmostEqual(m["cpu_us"], 100_000)        # 1 s of 100 ms/s
        self.assertAlmostEqual(m["messages"], 100_000)
        self.assertAlmostEqual(m["cpu_us_per_msg"], 1.0)
        self.assertAlmostEqual(m["kernel_entries_per_msg"], 0.001)
        self.assertEqual(m["connections"], 1000)
        self.assertAlmostEqual(m["rss_kib_per_connection"], 0.8)
        self.assertAlmostEqual(m["window_s"], 1.0)
        v, src = runner.server_cpu(self.STATS, 99.0, 10, 64, m)
        self.assertAlmostEqual(v, 1.0)
        self.assertIn("measured phase", src)

    def test_missing_or_foreign_data_gives_none(self):
        ok = {"measured_start_ns": int(2.5 * S), "measured_end_ns": int(3.5 * S)}
        self.assertIsNone(runner.server_measured(None, ok))
        self.assertIsNone(runner.server_measured({"cpu_us": 1}, ok))
        self.assertIsNone(runner.server_measured(self.STATS, {}))
        # A window outside the timeline (another clock): not trusted.
        self.assertIsNone(runner.server_measured(self.STATS, {
            "measured_start_ns": 100 * S, "measured_end_ns": 101 * S}))
        # Then the whole-run figure from SERVER_STATS is used.
        v, src = runner.server_cpu(self.STATS, None, 10, 64, None)
        self.assertEqual(v, 9e9)
        self.assertIn("whole server run", src)


def scale_records():
    """Two implementations x 3 repetitions x connections 100 / 10000: uring
    needs 0.5x epoll's server CPU and 0.1x its kernel entries; its CPU per
    message grows 1.2x from 100 to 10,000 connections, epoll's 1.5x."""
    recs = []
    for rep, host in enumerate((1.0, 1.2, 0.9), 1):
        for conns in (100, 10000):
            for variant, cpu, entries, growth in (("epoll", 2.0, 2.0, 1.5),
                                                  ("uring-fixed", 1.0, 0.2, 1.2)):
                g = growth if conns == 10000 else 1.0
                recs.append(make_record(
                    variant=variant, protocol="tcp", rep=rep, mode="burst", inflight=8,
                    connections=conns, mps=5e5 / (cpu * g * host),
                    server_cpu_us_per_msg=cpu * g * host,
                    server_kernel_entries_per_msg=entries * g,
                    server_rss_kib_per_connection=4.0 if variant == "epoll" else 2.0,
                    inflight_achieved=(2000.0 if variant == "epoll" else 8000.0)
                    * conns / 1000,
                    server_measured={"window_s": 2.0},
                    case_id=f"tcp-64B-c{conns}-burst-i8-ringlab_pingpong-{variant}"))
    return recs


SCALE_TARGETS = [
    {"name": "cpu", "metric": "server_cpu_us_per_msg", "a": {"variant": "epoll"},
     "b": {"variant": "uring-fixed"}, "where": {"connections": 100}, "min": 1.3},
    {"name": "entries", "metric": "server_kernel_entries_per_msg",
     "a": {"variant": "uring-fixed"}, "b": {"variant": "epoll"}, "max": 0.2},
    {"name": "growth", "metric": "server_cpu_us_per_msg", "a": {"connections": 10000},
     "b": {"connections": 100}, "max": 1.3},
    {"name": "nothing", "metric": "p50", "a": {"variant": "uring-busy"},
     "b": {"variant": "epoll"}, "max": 1.0},
]


class Targets(unittest.TestCase):
    def test_evaluation(self):
        rows = targets.evaluate(SCALE_TARGETS, scale_records())
        got = [(r["target"]["name"], r["label"], r["verdict"]) for r in rows]
        self.assertIn(("cpu", "TCP, 64 B, 100 conn, burst, 8 in flight, program "
                       "`ringlab_pingpong`", "met"), got)
        # one row per connection count; 0.2/2.0 and 0.24/3.0 are both <= 0.2
        self.assertEqual([g[2] for g in got if g[0] == "entries"], ["met", "met"])
        growth = {g[1]: g[2] for g in got if g[0] == "growth"}
        self.assertEqual(growth, {
            "TCP, 64 B, burst, 8 in flight, `ringlab_pingpong:epoll`": "not met",
            "TCP, 64 B, burst, 8 in flight, `ringlab_pingpong:uring-fixed`": "met"})
        self.assertIn(("nothing", "–", "no data"), got)
        r = next(r for r in rows if r["target"]["name"] == "cpu")
        self.assertAlmostEqual(r["ratio"].median, 2.0)     # paired: the host cancels

    def test_verdict_by_spread_and_median(self):
        from ringlab_exp import stats
        self.assertEqual(targets.verdict(stats.Ratio([0.9, 0.95, 1.01], True), hi=1.0),
                         "met by the median")
        self.assertEqual(targets.verdict(stats.Ratio([0.9, 1.05, 1.1], True), hi=1.0),
                         "not met")
        self.assertEqual(targets.verdict(stats.Ratio([1.4, 1.5], True), lo=1.3), "met")

    def test_suite_validation(self):
        d = tempdir(self)
        base = '[suite]\nname = "t"\n[[matrix]]\nprogram = "ringlab_pingpong"\n' \
               'variants = ["epoll"]\nprotocols = ["udp"]\n[[target]]\nname = "x"\n'
        reg = load_registry()
        for extra, want in (('metric = "speed"\na = {}\nb = {}\nmax = 1', "valid: p50"),
                            ('metric = "p50"\na = {}\nb = {}\n', "needs max"),
                            ('metric = "p50"\na = { colour = 1 }\nb = {}\nmax = 1',
                             "not a record field")):
            with self.subTest(extra=extra):
                with self.assertRaises(SuiteError) as cm:
                    load_suite(write_suite(d, base + extra), reg, cpu_count=2)
                self.assertIn(want, str(cm.exception))
        s = load_suite(write_suite(d, base + 'metric = "p50"\na = { variant = "epoll" }\n'
                                   'b = { params.qos = 1 }\nmax = 1'), reg, cpu_count=2)
        self.assertEqual(s.targets[0]["max"], 1)


class ScaleSuite(unittest.TestCase):
    def test_loads_with_the_issue_sizes_and_targets(self):
        s = load_suite("scale", load_registry(), cpu_count=2)
        tcp = {c.connections for c in s.cases if c.protocol == "tcp"}
        self.assertEqual(tcp, {1, 10, 100, 1000, 10000})
        self.assertEqual({c.variant for c in s.cases}, {"epoll", "uring-fixed", "uring-busy"})
        self.assertEqual({c.mode for c in s.cases}, {"burst", "rate"})
        udp = [c for c in s.cases if c.protocol == "udp"]
        self.assertEqual({c.connections for c in udp}, {1000})
        burst = [c for c in s.cases if c.mode == "burst"]
        self.assertTrue(all(c.max_duration_s == 2 for c in burst))
        self.assertTrue(all(c.max_duration_s is None for c in s.cases if c.mode == "rate"))
        self.assertEqual(len(s.targets), 3)
        self.assertEqual(len(load_suite("quick", load_registry(), cpu_count=2).targets), 5)

    def test_max_duration_flag_only_when_set(self):
        s = load_suite("scale", load_registry(), cpu_count=2)
        reg = load_registry()
        prog = reg["ringlab_pingpong"]
        cr = runner.CaseRunner(s, reg, {"ringlab_pingpong": ("/b", None)}, None,
                               tempdir(self), "r", {}, None)
        pin = {"method": "flag", "server_cpu": 0, "client_cpu": 1}
        burst = next(c for c in s.cases if c.mode == "burst")
        rate = next(c for c in s.cases if c.mode == "rate")
        self.assertEqual(cr._lists(burst, prog, pin)["max_duration_args"],
                         ["--max_duration_s={max_duration_s}"])
        self.assertEqual(cr._lists(rate, prog, pin)["max_duration_args"], [])
        paths = {k: "/x" for k in ("server.json", "client.json")}
        values = cr._values(burst, prog, paths, "127.0.0.1", 0, tempdir(self))
        values["server_address"] = "127.0.0.1:9"
        argv = runner.expand_args(prog.client, values, cr._lists(burst, prog, pin))
        self.assertIn("--max_duration_s=2.0", argv)
        self.assertIn("--connections=" + str(burst.connections),
                      runner.expand_args(prog.server, values, cr._lists(burst, prog, pin)))


class ScaleReport(unittest.TestCase):
    def write(self):
        d = tempdir(self)
        results.write_json(d / "results.json", {"run": {"status": "complete",
                                                        "targets": SCALE_TARGETS},
                                                "records": scale_records()})
        return d

    def test_columns_and_targets(self):
        d = self.write()
        text = report.write_report(d, gnuplot="").read_text()
        self.assertIn("| server entries/msg | server RSS KiB/conn |", text)
        self.assertIn("server CPU vs best", text)
        self.assertIn("## Targets", text)
        self.assertIn("**not met**", text)
        section = text.split("### TCP 64 B, 100 conn, burst, 8 in flight")[1].split("###")[0]
        epoll = next(l for l in section.splitlines() if "`ringlab_pingpong:epoll`" in l)
        self.assertIn("**2.00**", epoll)              # server CPU vs best, paired
        # What each client kept in flight, of 100 x 8 asked for.
        self.assertIn("| in flight (of 800) |", section)
        self.assertIn("| 200 (200..200) |", epoll)

    @unittest.skipUnless(shutil.which("gnuplot"), "gnuplot not installed")
    def test_scale_plot(self):
        d = self.write()
        text = report.write_report(d).read_text()
        self.assertIn("msg/s and server CPU/msg vs connections", text)
        pngs = [p.name for p in (d / "plots").glob("scale-*.png")]
        self.assertEqual(len(pngs), 1, pngs)
        dat = (d / "plots" / pngs[0].replace(".png", ".dat")).read_text()
        self.assertIn("100 ", dat)
        self.assertIn("10000 ", dat)


if __name__ == "__main__":
    unittest.main()
