"""LATENCY_BUDGET batching (suites/rtps-batching.toml): the registry's
param_defaults, the commands ringlab_dds_throughput gets in both suites
that run it, dotted metrics read from the program's JSON, and the report's
DDS throughput table with its paired "vs budget 0" columns."""

import unittest

from tests.helpers import HOST, proto_record, tempdir
from tests import test_protocol_features as features
from tests.test_protocol_report import cell, header
from ringlab_exp import report, runner, stats
from ringlab_exp.suite import SuiteError, load_registry, load_suite


def commands(testcase, suite_name, pick):
    """(server argv, client argv) of the first ringlab_dds_throughput case
    of the suite that `pick` accepts."""
    s = load_suite(suite_name, load_registry(), cpu_count=2)
    reg = load_registry()
    prog = reg["ringlab_dds_throughput"]
    case = next(c for c in s.cases if pick(c))
    cr = runner.CaseRunner(s, reg, {"ringlab_dds_throughput": ("/b", None)}, None,
                           tempdir(testcase), "r", {}, None)
    pin = {"method": "flag", "server_cpu": 0, "client_cpu": 1}
    paths = {k: "/x" for k in ("server.json", "client.json")}
    values = cr._values(case, prog, paths, "127.0.0.1", 0, tempdir(testcase))
    lists = cr._lists(case, prog, pin)
    return (runner.expand_args(prog.server, values, lists),
            runner.expand_args(prog.client, values, lists))


class ParamDefaults(unittest.TestCase):
    def error(self, more):
        entry = features.RegistryChecks.ENTRY.format(proto="mqtt", ready="listen",
                                            server='"{binary}"') + more
        with self.assertRaises(SuiteError) as cm:
            load_registry(features.extra_registry(self, entry))
        return str(cm.exception)

    def test_default_must_name_a_declared_parameter(self):
        msg = self.error('param_defaults = { window = 32 }\n')
        self.assertIn("param_defaults.window: not declared in params", msg)
        msg = self.error('params = { window = "any" }\nparam_defaults = { window = [1] }\n')
        self.assertIn("expected a number", msg)

    def test_rtps_suite_gets_the_defaults(self):
        server, client = commands(self, "rtps", lambda c: c.program == "ringlab_dds_throughput")
        self.assertIn("--latency_budget_us=0", server)
        self.assertIn("--window=32", server)
        self.assertIn("--rate=0", server)
        self.assertIn("--latency_budget_us=0", client)

    def test_batching_suite_sets_both_sides(self):
        server, client = commands(self, "rtps-batching", lambda c: dict(c.params).get(
            "latency_budget_us") == 100 and dict(c.params)["window"] == 1024)
        self.assertIn("--latency_budget_us=100", server)
        self.assertIn("--latency_budget_us=100", client)   # request-offered: reader >= writer
        self.assertIn("--window=1024", server)

    def test_batching_suite_shape(self):
        s = load_suite("rtps-batching", load_registry(), cpu_count=2)
        self.assertEqual({c.variant for c in s.cases}, {"epoll", "uring-fixed"})
        self.assertEqual({c.payload_bytes for c in s.cases}, {64, 256})
        self.assertEqual({dict(c.params)["latency_budget_us"] for c in s.cases}, {0, 100, 1000})
        # Every budgeted case has its budget-0 twin (the report's baseline).
        keys = {(c.payload_bytes, c.variant, tuple(sorted(
            (k, v) for k, v in c.params if k != "latency_budget_us"))) for c in s.cases
            if dict(c.params)["latency_budget_us"] == 0}
        for c in s.cases:
            self.assertIn((c.payload_bytes, c.variant, tuple(sorted(
                (k, v) for k, v in c.params if k != "latency_budget_us"))), keys)
        self.assertEqual(s.repetitions, 3)
        self.assertEqual(len(s.targets), 3)


class DottedMetrics(unittest.TestCase):
    def test_walks_nested_objects(self):
        r = {"program_result": {"latency_us": {"p50": 12.5}, "datagrams_per_sample": 0.1}}
        self.assertEqual(stats.metric_value(r, "program_result.latency_us.p50"), 12.5)
        self.assertEqual(stats.metric_value(r, "program_result.datagrams_per_sample"), 0.1)
        self.assertIsNone(stats.metric_value(r, "program_result.nope.p50"))
        self.assertIsNone(stats.metric_value({"program_result": None},
                                             "program_result.latency_us.p50"))


def bulk_record(variant, rep, budget, mps, dgs, lat):
    params = {"reliability": "reliable", "direction": "download", "latency_budget_us": budget,
              "window": 1024, "rate": 0}
    h = HOST[rep]
    return proto_record(
        "ringlab_dds_throughput", variant, "dds", rep, mode="bulk", params=params, mps=mps,
        server_cpu_us_per_msg=1e6 / mps,
        program_result={"datagrams_per_sample": dgs, "latency_us": {"p50": lat * h,
                                                                    "p99": lat * 4 * h}})


class BatchingReport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        recs = []
        for rep in (1, 2, 3):
            for variant, base in (("epoll", 4e5), ("uring-fixed", 3e5)):
                recs.append(bulk_record(variant, rep, 0, base, 0.9, 50.0))
                recs.append(bulk_record(variant, rep, 100, base * 2.5, 0.01, 150.0))
        text = report.render({"suite": "t"}, recs, [])
        start = text.index("### DDS throughput and LATENCY_BUDGET batching")
        cls.table = text[start:text.index("\n## ", start)]

    def test_columns(self):
        head = header(self.table, "scenario")
        for col in ("samples/s", "MB/s", "datagrams/sample", "writer CPU µs/sample",
                    "reader CPU µs/sample", "latency p50 µs", "latency p99 µs",
                    "samples/s vs budget 0", "writer CPU vs budget 0",
                    "datagrams vs budget 0", "latency p50 vs budget 0"):
            self.assertIn(col, head)

    def test_paired_against_budget_zero(self):
        fixed = ("latency_budget_us=100", "`ringlab_dds_throughput:uring-fixed`")
        # The host's speed cancels: exactly 2.5x the samples/s, 1/2.5 the CPU.
        self.assertEqual(cell(self.table, "samples/s vs budget 0", *fixed), "**2.50**")
        self.assertEqual(cell(self.table, "writer CPU vs budget 0", *fixed), "**0.40**")
        self.assertEqual(cell(self.table, "datagrams vs budget 0", *fixed), "**0.01**")
        self.assertEqual(cell(self.table, "latency p50 vs budget 0", *fixed), "**3.00**")
        self.assertEqual(cell(self.table, "datagrams/sample", *fixed), "0.010")
        base = ("latency_budget_us=0", "`ringlab_dds_throughput:epoll`")
        self.assertEqual(cell(self.table, "samples/s vs budget 0", *base), "1.00")


if __name__ == "__main__":
    unittest.main()
