"""The steadiness check: a calibration before each repetition, stored in the
record; the report's host-state section and its unsteady-repetition rule."""

import unittest

from tests.helpers import FAKE, make_record, tempdir
from tests.test_runner import TINY, run_tiny
from ringlab_exp import report, results, schema


def cal(p50, status="ok"):
    return {"status": status, "reason": None if status == "ok" else "x",
            "program": "ringlab_floor_pingpong", "variant": "uring", "samples": 1000,
            "p50_us": p50 if status == "ok" else None, "rtt_us": None, "wall_s": 0.1,
            "server_cpu": 0, "client_cpu": 1}


def run_with_checks(checks, end):
    """Records of two implementations x len(checks)//2 repetitions,
    interleaved, the i-th record taken after a check of checks[i]."""
    recs = []
    for i, p50 in enumerate(checks):
        rep = i // 2 + 1
        variant = ("epoll", "uring-fixed")[i % 2]
        r = make_record(variant=variant, rep=rep, p50=20.0 if variant == "epoll" else 18.0,
                        sequence=i + 1, calibration=cal(p50) if p50 else cal(0, "failed"))
        recs.append(r)
    run = {"status": "complete", "calibration": {"enabled": True, "samples": 1000,
                                                 "program": "ringlab_floor_pingpong",
                                                 "variant": "uring"},
           "calibration_end": cal(end)}
    return run, recs


class HostStateRule(unittest.TestCase):
    def test_steady_run_flags_nothing(self):
        run, recs = run_with_checks([17.2, 17.5, 17.0, 17.9, 17.4, 17.3], end=17.6)
        host = report.HostState(run, recs)
        self.assertEqual(host.unsteady, {})
        self.assertEqual(len(host.states), 1)
        for r in recs:
            self.assertEqual(schema.validate_record(r), [])

    def test_state_change_flags_the_repetition_it_happened_in(self):
        # The host slows from ~17 to ~24 us after record 3 (rep 2, epoll).
        run, recs = run_with_checks([17.2, 17.5, 17.1, 24.3, 24.6, 24.1], end=24.4)
        host = report.HostState(run, recs)
        flagged = [(r["variant"], r["repetition"]) for r in recs if host.is_unsteady(r)]
        self.assertEqual(flagged, [("epoll", 2)])
        self.assertEqual([len(g) for g in host.states], [3, 4])
        self.assertEqual(host.state_of(17.5), "S1")
        self.assertEqual(host.state_of(24.4), "S2")

    def test_last_repetition_is_judged_by_the_end_check(self):
        run, recs = run_with_checks([17.2, 17.5, 17.1, 17.3], end=24.0)
        host = report.HostState(run, recs)
        self.assertEqual([r["sequence"] for r in recs if host.is_unsteady(r)], [4])

    def test_failed_check_judges_nothing(self):
        run, recs = run_with_checks([17.2, None, 24.0, 24.1], end=24.2)
        host = report.HostState(run, recs)
        self.assertEqual(host.unsteady, {})      # 17.2 -> (failed): unknown

    def test_report_section(self):
        d = tempdir(self)
        run, recs = run_with_checks([17.2, 17.5, 17.1, 24.3, 24.6, 24.1], end=24.4)
        results.write_json(d / "results.json", {"run": run, "records": recs})
        text = report.write_report(d, gnuplot="").read_text()
        self.assertIn("## Host state (steadiness check)", text)
        self.assertIn("1 repetition(s) were taken while the host changed speed state", text)
        self.assertIn("| 2 | 2/2 | ", text)
        self.assertIn("S1 -> S2", text)
        self.assertIn("rep 2: 17.10 -> 24.30 (+42%, S1 -> S2)", text)
        self.assertIn("3/3 (1 unsteady)", text)
        self.assertIn("more than 15%", text)

    def test_check_off(self):
        d = tempdir(self)
        recs = [make_record(rep=1)]
        results.write_json(d / "results.json", {"run": {"calibration": {"enabled": False}},
                                                "records": recs})
        text = report.write_report(d, gnuplot="").read_text()
        self.assertIn("was off for this run", text)


class RunnerCalibrates(unittest.TestCase):
    def test_each_repetition_gets_a_check_and_the_run_an_end_check(self):
        text = TINY.replace(', "uring-sqpoll"', "").replace('["udp", "tcp"]', '["udp"]')
        run_dir, run, records = run_tiny(self, text, binaries={
            "ringlab_pingpong": str(FAKE), "ringlab_floor_pingpong": str(FAKE)})
        self.assertEqual(len(records), 2)
        for r in records:
            c = r["calibration"]
            self.assertEqual(c["status"], "ok", c)
            self.assertGreater(c["p50_us"], 0)
            self.assertEqual((c["server_cpu"], c["client_cpu"]), (0, 1))
            self.assertLess(c["wall_s"], 5)
            self.assertEqual(schema.validate_record(r), [])
        self.assertEqual([r["sequence"] for r in records], [1, 2])
        self.assertEqual(run["calibration_end"]["status"], "ok")
        self.assertTrue(run["calibration"]["enabled"])
        self.assertTrue((run_dir / "logs" / "calibration.client.out").exists())
        self.assertIn("## Host state", (run_dir / "report.md").read_text())

    def test_calibrate_false_and_missing_binary(self):
        text = TINY.replace(', "uring-sqpoll"', "").replace('["udp", "tcp"]', '["udp"]') \
            .replace("repetitions = 2", "repetitions = 1")
        _, run, records = run_tiny(self, text.replace("[suite]", "[suite]\ncalibrate = false"),
                                   binaries={"ringlab_pingpong": str(FAKE),
                                             "ringlab_floor_pingpong": str(FAKE)})
        self.assertIsNone(records[0]["calibration"])
        self.assertIsNone(run["calibration_end"])
        _, run, records = run_tiny(self, text, binaries={
            "ringlab_pingpong": str(FAKE), "ringlab_floor_pingpong": "/nonexistent/floor"})
        self.assertEqual(records[0]["status"], "ok")          # the case still runs
        self.assertEqual(records[0]["calibration"]["status"], "unavailable")
        self.assertIn("no such file", records[0]["calibration"]["reason"])


if __name__ == "__main__":
    unittest.main()
