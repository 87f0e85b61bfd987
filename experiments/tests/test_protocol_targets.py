"""The [[target]] mechanism on the protocol issues' targets (7, 8, 9), written
as a suite writes them: against a peer in the same run, across two
programs on the same preset (DDS over raw UDP), on a bulk metric at one
loss rate, and on fan-in throughput."""

import unittest

from tests.helpers import EXPERIMENTS, protocol_records, tempdir, write_suite
from ringlab_exp import report, targets
from ringlab_exp.suite import load_registry, load_suite


def readme_targets():
    """The [[target]] blocks experiments/README.md shows under "Targets for
    the protocol modules" (the protocol helpers copy them into their
    suites), so the documented examples are the tested ones."""
    text = (EXPERIMENTS / "README.md").read_text()
    part = text[text.index("## Targets for the protocol modules"):]
    return part[part.index("```toml\n") + 8:part.index("```\n", part.index("```toml"))]


TARGETS = readme_targets()

SUITE = """
[suite]
name = "t"
[[matrix]]
program = "ringlab_pingpong"
variants = ["epoll"]
protocols = ["udp"]
"""


def load_targets(testcase):
    s = load_suite(write_suite(tempdir(testcase), SUITE + TARGETS), load_registry(),
                   cpu_count=2)
    return s.targets


class ProtocolTargets(unittest.TestCase):
    def setUp(self):
        self.targets = load_targets(self)
        self.rows = targets.evaluate(self.targets, protocol_records())

    def rows_of(self, prefix):
        return [r for r in self.rows if r["target"]["name"].startswith(prefix)]

    def test_the_loader_flattens_dotted_parameters(self):
        t = self.targets[1]
        self.assertEqual(t["a"], {"program": "ringlab_dds_pingpong", "protocol": "dds",
                                  "params.reliability": "reliable"})
        self.assertEqual(self.targets[2]["where"], {"mode": "bulk", "params.loss_pct": 5})
        self.assertEqual(len(self.targets), 6)

    def test_dds_against_ddsperf(self):
        (row,) = self.rows_of("DDS uring-fixed")
        self.assertAlmostEqual(row["ratio"].median, 19 / 30)
        self.assertEqual(row["ratio"].n, 3)
        self.assertEqual(row["verdict"], "met")

    def test_dds_over_raw_udp_pairs_the_same_preset(self):
        rows = {r["label"]: r for r in self.rows_of("DDS p50")}
        self.assertEqual(sorted(rows), [
            "64 B, 1 conn, pingpong, variant `epoll`",
            "64 B, 1 conn, pingpong, variant `uring-busy`",
            "64 B, 1 conn, pingpong, variant `uring-fixed`"])
        self.assertAlmostEqual(rows["64 B, 1 conn, pingpong, variant `epoll`"]["ratio"].median,
                               21 / 20)
        self.assertEqual(rows["64 B, 1 conn, pingpong, variant `epoll`"]["verdict"], "met")
        busy = rows["64 B, 1 conn, pingpong, variant `uring-busy`"]
        self.assertAlmostEqual(busy["ratio"].median, 9.6 / 8)
        self.assertEqual(busy["verdict"], "not met")

    def test_a_parameter_on_one_side_only_splits_that_side(self):
        t = dict(self.targets[1])
        t["a"] = {"program": "ringlab_dds_pingpong", "protocol": "dds"}
        recs = protocol_records()
        for r in list(recs):
            if r["program"] == "ringlab_dds_pingpong":
                recs.append(dict(r, params={"reliability": "best-effort"},
                                 case_id=r["case_id"].replace("reliable", "best-effort")))
        rows = targets.evaluate([t], recs)
        self.assertEqual(len(rows), 6)         # 3 presets x 2 reliabilities
        self.assertIn("64 B, 1 conn, pingpong, variant `epoll` (a: reliability=best-effort)",
                      [r["label"] for r in rows])

    def test_goodput_at_five_percent_loss(self):
        rows = self.rows_of("goodput")
        labels = sorted(r["label"] for r in rows)
        self.assertEqual(len(rows), 4)         # 2 presets x 2 directions
        self.assertIn("RUDP, 65536 B, 1 conn, bulk, bytes=104857600, direction=download, "
                      "loss_pct=5 (a: variant=epoll)", labels)
        for r in rows:
            self.assertEqual(r["verdict"], "met", r["label"])
        up = next(r for r in rows if "upload" in r["label"] and "uring-fixed" in r["label"])
        self.assertAlmostEqual(up["ratio"].median, (1.1e8 / 1.5) / (6e7 / 3.5))

    def test_fan_in_and_fan_out_against_mosquitto(self):
        fanin = self.rows_of("fan-in")
        self.assertEqual(len(fanin), 2)
        by = {("uring-fixed" in r["label"]): r for r in fanin}
        self.assertAlmostEqual(by[True]["ratio"].median, 4e5 / 1.5e5)
        self.assertEqual(by[True]["verdict"], "met")
        self.assertAlmostEqual(by[False]["ratio"].median, 3e5 / 1.5e5)
        (fanout,) = self.rows_of("fan-out")
        self.assertAlmostEqual(fanout["ratio"].median, 4e5 / 1.5e5)

    def test_numbers_match_whatever_their_type(self):
        t = dict(self.targets[2], where={"mode": "bulk", "params.loss_pct": 5.0})
        self.assertEqual(len(targets.evaluate([t], protocol_records())), 4)

    def test_bulk_metric_and_peer_without_it(self):
        (t,) = [t for t in self.targets if t["name"].startswith("bulk kernel entries")]
        self.assertEqual(t["metric"], "client_kernel_entries_per_mb")
        rows = self.rows_of("bulk kernel entries")
        self.assertEqual(len(rows), 8)          # 4 loss rates x 2 directions
        self.assertTrue(all(r["verdict"] == "met" for r in rows))
        self.assertAlmostEqual(rows[0]["ratio"].median, 15 / 40)

    def test_report_renders_the_rows(self):
        text = "\n".join(targets.render(self.rows))
        self.assertIn("| DDS uring-fixed p50 <= 0.8x ddsperf (issue 7) | p50: "
                      "implementation=ringlab_dds_pingpong:uring-fixed / "
                      "implementation=ddsperf:listener |", text)
        self.assertIn("**not met**", text)
        self.assertIsInstance(report.render({}, protocol_records(), []), str)


if __name__ == "__main__":
    unittest.main()
