import contextlib
import io
import json
import random
import unittest

from tests.helpers import make_record, tempdir
from ringlab_exp import cli, compare


def run(p50s, p99s=None, mps=None, variant="epoll", program="ringlab_pingpong"):
    p99s = p99s or [x * 2 for x in p50s]
    mps = mps or [1e6 / x for x in p50s]
    return [make_record(program=program, variant=variant, rep=i + 1, p50=a, p99=b, mps=c)
            for i, (a, b, c) in enumerate(zip(p50s, p99s, mps))]


class Significance(unittest.TestCase):
    def test_rule(self):
        # Disjoint ranges and 20% apart: significant.
        self.assertTrue(compare.significance([10, 11, 12], [14, 15, 16], 0.05)[1])
        # Overlapping ranges: never significant, however far the medians.
        r, sig, why = compare.significance([10, 11, 20], [12, 14, 15], 0.05)
        self.assertFalse(sig)
        self.assertEqual(why, "spread includes 1.0")
        # Disjoint but only 2% apart: below the threshold.
        r, sig, why = compare.significance([100, 100.5], [102, 102.5], 0.05)
        self.assertFalse(sig)
        self.assertAlmostEqual(r, 1.0199, places=3)   # median of the cross-pair ratios
        # One repetition has no spread: not significant.
        self.assertFalse(compare.significance([10], [20], 0.05)[1])
        self.assertTrue(compare.significance([10], [20], 0.05, min_reps=1)[1])
        self.assertEqual(compare.significance([], [1, 2], 0.05)[0], None)


class Compare(unittest.TestCase):
    def test_same_data_gives_ratio_one_and_nothing_significant(self):
        a = run([20, 21, 22]) + run([10, 10.5, 11], variant="uring")
        rows = compare.compare(a, [dict(r) for r in a])
        self.assertEqual(len(rows), 2)
        for row in rows:
            for name, m in row["metrics"].items():
                self.assertAlmostEqual(m["ratio"], 1.0)
                self.assertFalse(m["significant"])
        text = compare.render(rows, "A", "B")
        self.assertIn("0 significant difference(s)", text)

    def test_clearly_different_data_is_marked(self):
        a = run([20, 21, 22])
        b = run([10, 10.5, 11])   # half the latency, double the throughput
        rows = compare.compare(a, b)
        m = rows[0]["metrics"]
        self.assertAlmostEqual(m["p50"]["ratio"], 0.5)
        self.assertTrue(m["p50"]["significant"])
        self.assertEqual(m["p50"]["verdict"], "better")
        self.assertTrue(m["messages_per_s"]["significant"])
        self.assertEqual(m["messages_per_s"]["verdict"], "better")
        text = compare.render(rows, "A", "B")
        self.assertIn("**0.50 better**", text)
        self.assertIn("3 significant difference(s)", text)
        rows = compare.compare(b, a)
        self.assertEqual(rows[0]["metrics"]["p99"]["verdict"], "worse")

    def test_tail_uses_its_own_threshold(self):
        # p50 and p99 both 7% apart with disjoint ranges: p50 is marked, p99
        # (default tail threshold 10%) is not, unless the threshold is lowered.
        a = run([100, 100.5, 101], p99s=[200, 201, 202])
        b = run([107, 107.5, 108], p99s=[214, 215, 216])
        m = compare.compare(a, b)[0]["metrics"]
        self.assertTrue(m["p50"]["significant"])
        self.assertFalse(m["p99"]["significant"])
        m = compare.compare(a, b, tail_threshold=0.05)[0]["metrics"]
        self.assertTrue(m["p99"]["significant"])

    def test_noisy_data_is_not_marked(self):
        rows = compare.compare(run([10, 20, 30]), run([12, 25, 28]))
        self.assertFalse(any(m["significant"] for m in rows[0]["metrics"].values()))

    def test_failed_reps_are_ignored(self):
        a = run([20, 21, 22]) + [make_record(rep=4, status="failed")]
        rows = compare.compare(a, run([20, 21, 22]))
        self.assertEqual(rows[0]["a_ok"], 3)
        self.assertAlmostEqual(rows[0]["metrics"]["p50"]["ratio"], 1.0)

    def test_cross_variant_within_one_run(self):
        recs = run([20, 21, 22], variant="epoll") + run([10, 10.5, 11], variant="uring-fixed")
        rows = compare.compare(recs, recs, where_a={"variant": "epoll"},
                               where_b={"variant": "uring-fixed"})
        self.assertEqual(len(rows), 1)
        self.assertAlmostEqual(rows[0]["metrics"]["p50"]["ratio"], 0.5)

    def test_unmatched_cases_are_listed(self):
        rows = compare.compare(run([10, 11]), run([10, 11], variant="uring"))
        text = compare.render(rows, "A", "B")
        self.assertIn("Only on one side", text)


QUICK_LIKE = {   # implementation -> (p50 µs, p99 µs, msg/s) in the slow host state
    ("ringlab_pingpong", "epoll"): (26.0, 40.0, 37000),
    ("ringlab_pingpong", "uring-fixed"): (24.0, 38.0, 40000),
    ("ringlab_pingpong", "uring-busy"): (9.0, 16.0, 105000),
    ("ringlab_pingpong", "epoll-busy"): (12.0, 20.0, 80000),
    ("ringlab_floor_pingpong", "uring"): (23.5, 37.0, 41000),
    ("sockperf", "blocking"): (24.5, 39.0, 39000),
}


def synthetic_run(run_id, host=(1.0, 1.0, 1.0), seed=1, noise=0.02, impls=QUICK_LIKE,
                  changed=None, protocols=("udp", "tcp")):
    """A run of interleaved repetitions: in repetition k every implementation
    is scaled by the host's speed factor host[k] (latency up, msg/s down),
    times its own noise of +-`noise`. `changed` = {(program, variant): factor}
    makes real changes on top."""
    rnd = random.Random(seed)
    recs = []
    for rep, h in enumerate(host, 1):
        for proto in protocols:
            for (program, variant), (p50, p99, mps) in impls.items():
                f = (changed or {}).get((program, variant), 1.0)
                j = lambda: 1 + rnd.uniform(-noise, noise)
                recs.append(make_record(
                    program=program, variant=variant, protocol=proto, rep=rep,
                    p50=p50 * h * f * j(), p99=p99 * h * f * j(), mps=mps / (h * f) * j(),
                    run_id=run_id, case_id=f"{proto}-64B-c1-pingpong-{program}-{variant}"))
    return recs


def n_significant(rows):
    return sum(m["significant"] for row in rows for m in row["metrics"].values())


class PairedAndNormalised(unittest.TestCase):
    def test_back_to_back_runs_mark_nothing(self):
        a = synthetic_run("quick/A", seed=1)
        b = synthetic_run("quick/B", seed=2)
        rows = compare.compare(a, b)
        self.assertFalse(any(r["paired"] for r in rows))    # two runs: unpaired
        self.assertEqual(n_significant(rows), 0)
        self.assertIn("0 significant", compare.render(rows, "A", "B"))
        rows = compare.compare(a, b, normalize="sockperf:blocking")
        self.assertEqual(n_significant(rows), 0)

    def test_epoll_vs_uring_busy_in_one_run_is_marked(self):
        # The host moves 30% between repetitions; pairing cancels it.
        run = synthetic_run("quick/A", host=(1.0, 1.3, 0.95), seed=3)
        rows = compare.compare(run, run, where_a={"variant": "epoll"},
                               where_b={"variant": "uring-busy"})
        self.assertEqual(len(rows), 2)                        # udp and tcp
        for row in rows:
            self.assertTrue(row["paired"])
            m = row["metrics"]
            self.assertTrue(m["p50"]["significant"], m["p50"])
            self.assertEqual(m["p50"]["verdict"], "better")
            self.assertAlmostEqual(m["p50"]["ratio"], 9.0 / 26.0, delta=0.03)
            self.assertTrue(m["p99"]["significant"])
            self.assertTrue(m["messages_per_s"]["significant"])

    def test_pairing_finds_what_ranges_hide(self):
        # 8% apart in every repetition, but the host moves 30%: the unpaired
        # ranges overlap, the paired ratios do not include 1.
        impls = {("ringlab_pingpong", "epoll"): (26.0, 40.0, 37000),
                 ("ringlab_pingpong", "uring-fixed"): (26.0 * 0.92, 40.0 * 0.92, 37000 / 0.92)}
        run = synthetic_run("quick/A", host=(1.0, 1.3, 0.95), seed=4, noise=0.005, impls=impls,
                            protocols=("udp",))
        a = [r for r in run if r["variant"] == "epoll"]
        b = [r for r in run if r["variant"] == "uring-fixed"]
        self.assertFalse(compare.significance(
            [r["rtt_us"]["p50"] for r in a], [r["rtt_us"]["p50"] for r in b], 0.05)[1])
        row = compare.compare(run, run, where_a={"variant": "epoll"},
                              where_b={"variant": "uring-fixed"})[0]
        self.assertTrue(row["metrics"]["p50"]["significant"])
        self.assertLess(row["metrics"]["p50"]["hi"], 1.0)

    def test_host_changed_speed_nothing_after_normalising(self):
        a = synthetic_run("quick/ref", seed=5)
        b = synthetic_run("quick/today", host=(0.69, 0.69, 0.69), seed=6)
        raw = compare.compare(a, b)
        self.assertGreater(n_significant(raw), 20)            # the host, not ringlab
        for anchor in ("sockperf:blocking", "ringlab_floor_pingpong:uring"):
            with self.subTest(anchor=anchor):
                rows = compare.compare(a, b, normalize=anchor)
                self.assertEqual(n_significant(rows), 0)
                anchor_row = next(r for r in rows if r["a_case"].endswith(
                    anchor.replace(":", "-")) and r["key"]["protocol"] == "udp")
                self.assertAlmostEqual(anchor_row["metrics"]["p50"]["ratio"], 1.0)
                text = compare.render(rows, "A", "B", normalize=anchor)
                self.assertIn(f"Normalised by `{anchor}`", text)
                self.assertIn("0 significant", text)

    def test_real_change_survives_normalising(self):
        a = synthetic_run("quick/ref", seed=7)
        b = synthetic_run("quick/today", host=(0.69, 0.7, 0.68), seed=8,
                          changed={("ringlab_pingpong", "epoll"): 0.8})
        rows = compare.compare(a, b, normalize="sockperf:blocking")
        marked = {(r["key"]["protocol"], r["key"]["variant"], name)
                  for r in rows for name, m in r["metrics"].items() if m["significant"]}
        self.assertEqual({v for _, v, _ in marked}, {"epoll"})
        self.assertIn(("udp", "epoll", "p50"), marked)
        row = next(r for r in rows if r["key"]["variant"] == "epoll")
        self.assertEqual(row["metrics"]["p50"]["verdict"], "better")
        self.assertEqual(row["anchor"], ("same scenario", "same scenario"))

    def test_normalise_by_each_records_check(self):
        a = synthetic_run("quick/ref", seed=13)
        b = synthetic_run("quick/today", host=(0.69, 0.7, 0.69), seed=14)
        for recs, speed in ((a, 1.0), (b, 0.69)):
            for r in recs:
                r["calibration"] = {"status": "ok", "p50_us": 23.5 * speed, "program": "f",
                                    "variant": "uring", "samples": 1000}
        self.assertGreater(n_significant(compare.compare(a, b)), 20)
        rows = compare.compare(a, b, normalize="calibration")
        self.assertEqual(n_significant(rows), 0)
        self.assertEqual(rows[0]["anchor"], ("own check", "own check"))
        self.assertIn("steadiness check", compare.render(rows, "A", "B",
                                                         normalize="calibration"))
        with self.assertRaises(compare.CompareError):
            compare.compare(a, synthetic_run("x/y"), normalize="calibration")

    def test_spinning_rows_get_their_own_anchor(self):
        # The host's wake-ups got 2x slower, spinning loops 0.5x: one anchor
        # cannot serve both, a second one for the spinning rows can.
        impls = dict(QUICK_LIKE)
        impls[("sockperf", "nonblocked")] = (8.0, 14.0, 120000)
        a = synthetic_run("q/a", seed=15, impls=impls)
        b = synthetic_run("q/b", seed=16, impls=impls, changed={
            k: (0.5 if compare.SPINNING_RE.search(k[1]) else 2.0) for k in impls})
        one = compare.compare(a, b, normalize="sockperf:blocking")
        self.assertGreater(n_significant(one), 10)
        two = compare.compare(a, b, normalize="sockperf:blocking",
                              normalize_spinning="sockperf:nonblocked")
        self.assertEqual(n_significant(two), 0)
        busy = next(r for r in two if r["key"]["variant"] == "uring-busy")
        self.assertTrue(busy["anchor"][0].startswith("sockperf:nonblocked"))
        with self.assertRaises(compare.CompareError):
            compare.compare(a, b, normalize_spinning="sockperf:nonblocked")

    def test_anchor_falls_back_and_missing_anchor_is_an_error(self):
        a = synthetic_run("r/a", seed=9)
        b = synthetic_run("r/b", seed=10)
        extra = [make_record(program="ringlab_mqtt", variant="epoll", protocol="mqtt", rep=k,
                             run_id=rid, p50=50.0)
                 for rid, recs in (("r/a", a), ("r/b", b)) for k in (1, 2, 3)]
        rows = compare.compare(a + extra[:3], b + extra[3:], normalize="sockperf:blocking")
        mqtt = next(r for r in rows if r["key"]["protocol"] == "mqtt")
        self.assertEqual(mqtt["anchor"][0], "UDP 64 B, 1 conn, pingpong")
        with self.assertRaises(compare.CompareError) as cm:
            compare.compare(a, b, normalize="nosuch:thing")
        self.assertIn("sockperf:blocking", str(cm.exception))

    def test_cli_normalize(self):
        d = tempdir(self)
        for name, recs in (("a.json", synthetic_run("q/a", seed=11)),
                           ("b.json", synthetic_run("q/b", host=(0.69,) * 3, seed=12))):
            (d / name).write_text(json.dumps(recs))
        out = d / "c.md"
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli.main(["compare", str(d / "a.json"), str(d / "b.json"), "--normalize",
                           "sockperf:blocking", "--out", str(out)])
        self.assertEqual(rc, 0)
        self.assertIn("0 significant", out.read_text())
        with contextlib.redirect_stderr(io.StringIO()) as err:
            rc = cli.main(["compare", str(d / "a.json"), str(d / "b.json"), "--normalize",
                           "x:y", "--out", str(out)])
        self.assertEqual(rc, 2)
        self.assertIn("no ok record of it", err.getvalue())


if __name__ == "__main__":
    unittest.main()
