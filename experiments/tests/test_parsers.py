import json
import unittest

from tests.helpers import FIXTURES, tempdir
from ringlab_exp import parsers


def fixture(name):
    return (FIXTURES / name).read_text()


class Sockperf(unittest.TestCase):
    """Fixtures are real `sockperf pp` outputs captured on the project VM."""

    def test_full_rtt_udp(self):
        m = parsers.parse_sockperf(fixture("sockperf_pp_udp.txt"), "", None)
        self.assertEqual(m["samples"], 57262)
        self.assertEqual(m["lost"], 0)
        self.assertEqual(m["rtt_us"], {"min": 11.571, "mean": 27.053, "p50": 24.626,
                                       "p90": 28.353, "p99": 73.528, "p999": 111.21,
                                       "max": 3580.662})
        self.assertAlmostEqual(m["messages_per_s"], 57262 / 1.550, places=3)
        self.assertEqual(m["total_messages"], 74094)
        self.assertEqual(m["rtt_note"], "sockperf --full-rtt")
        self.assertIsNone(m["kernel_entries_per_msg"])

    def test_half_rtt_is_doubled(self):
        m = parsers.parse_sockperf(fixture("sockperf_pp_udp_half.txt"), "", None)
        self.assertAlmostEqual(m["rtt_us"]["p50"], 2 * 14.151)
        self.assertAlmostEqual(m["rtt_us"]["max"], 2 * 873.595)
        self.assertAlmostEqual(m["rtt_us"]["p999"], 2 * 60.248)
        self.assertIn("doubled", m["rtt_note"])

    def test_tcp_and_nonblocked(self):
        for name in ("sockperf_pp_tcp.txt", "sockperf_pp_tcp_nb.txt", "sockperf_pp_udp_nb.txt"):
            with self.subTest(name=name):
                m = parsers.parse_sockperf(fixture(name), "", None)
                r = m["rtt_us"]
                self.assertTrue(r["min"] <= r["p50"] <= r["p90"] <= r["p99"] <= r["p999"]
                                <= r["max"])
                self.assertGreater(m["samples"], 1000)
        m = parsers.parse_sockperf(fixture("sockperf_pp_tcp.txt"), "", None)
        self.assertEqual(m["samples"], 19203)
        self.assertEqual(m["rtt_us"]["p50"], 26.630)

    def test_output_split_over_stdout_and_stderr(self):
        lines = fixture("sockperf_pp_udp.txt").splitlines(keepends=True)
        m = parsers.parse_sockperf("".join(lines[:12]), "".join(lines[12:]), None)
        self.assertEqual(m["rtt_us"]["p99"], 73.528)

    def test_no_result_raises(self):
        with self.assertRaises(parsers.ParseError) as cm:
            parsers.parse_sockperf("sockperf: ERROR: connect failed\n", "", None)
        self.assertIn("connect failed", str(cm.exception))
        truncated = fixture("sockperf_pp_udp.txt").split("Total")[0]
        with self.assertRaises(parsers.ParseError):
            parsers.parse_sockperf(truncated, "", None)


class RinglabJson(unittest.TestCase):
    DOC = {"schema": "ringlab.pingpong/1", "backend": "uring-fixed",
           "backend_flags": "registered_buffers,provided_buffers", "backend_note": "",
           "samples": 1000, "lost": 2, "messages_per_s": 5e4, "cpu_us_per_msg": 3.5,
           "kernel_entries_per_msg": 1.25,
           "rtt_us": {"min": 5, "mean": 7, "p50": 6, "p90": 8, "p99": 9, "p999": 12, "max": 30}}

    def test_json_file(self):
        path = tempdir(self) / "c.json"
        path.write_text(json.dumps(self.DOC))
        m = parsers.parse_ringlab_json("summary\n", "", path)
        self.assertEqual(m["rtt_us"]["p999"], 12.0)
        self.assertEqual(m["kernel_entries_per_msg"], 1.25)
        self.assertEqual(m["flags"], "registered_buffers,provided_buffers")
        self.assertEqual(m["backend_effective"], "uring-fixed")
        self.assertEqual(m["lost"], 2)
        self.assertIsNone(m["inflight_achieved"])
        path.write_text(json.dumps(dict(self.DOC, inflight_achieved=7990.5)))
        m = parsers.parse_ringlab_json("", "", path)
        self.assertEqual(m["inflight_achieved"], 7990.5)

    def test_result_line_when_no_file(self):
        out = "human summary\nRESULT " + json.dumps(self.DOC) + "\n"
        m = parsers.parse_ringlab_json(out, "", tempdir(self) / "missing.json")
        self.assertEqual(m["samples"], 1000)

    def test_missing_and_broken(self):
        with self.assertRaises(parsers.ParseError):
            parsers.parse_ringlab_json("no result here", "", None)
        with self.assertRaises(parsers.ParseError):
            parsers.parse_ringlab_json("RESULT {not json", "", None)


if __name__ == "__main__":
    unittest.main()
