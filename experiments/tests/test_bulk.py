"""Bulk transfers: modes declared by registry programs (`bulk`), the `bulk`
JSON of a client mapped into the record, the runner filling the server's
CPU per MB, and the ENet entry's bulk mode from a suite (real binary when
built, else the fake reliable-UDP bench in tests/fixtures)."""

import unittest

from tests.helpers import FIXTURES, tempdir, write_suite
from ringlab_exp import parsers, results, runner, schema, stats, suite as suite_mod
from ringlab_exp.suite import SuiteError, load_registry, load_suite

FAKE_RUDP = FIXTURES / "fake_rudp_bench.py"

# The fake reliable-UDP bench as "ours" (two presets) and as an ENet-like
# peer, with the same command-line shape as the enet entry.
RUDP_ENTRIES = f"""
[programs.fakerudp]
kind = "ours"
binary = "{FAKE_RUDP}"
variants = ["epoll", "uring-fixed"]
protocols = ["rudp"]
modes = ["pingpong", "bulk"]
max_connections = 1
pin = "flag"
pin_args = ["--cpu={{cpu}}"]
port = "auto"
ready = '^READY (?P<address>\\S+)\\s*$'
parser = "ringlab_json"
stop_signal = "SIGINT"
rtt = "full"
params = {{ loss_pct = "any", bytes = "any", direction = ["upload", "download"] }}
server = ["{{binary}}", "server", "--bind={{server_host}}:0", "{{server_pin}}",
          "--loss={{param:loss_pct}}", "--seed=1"]
client = ["{{binary}}", "client", "--server={{server_address}}", "--backend={{variant}}",
          "{{mode_args}}", "--loss={{param:loss_pct}}", "--seed=2", "{{client_pin}}",
          "--json={{client_json}}", "--timeout_s={{client_timeout_s}}"]

[programs.fakerudp.mode_args]
pingpong = ["--mode=pingpong", "--payload={{payload}}", "--samples={{samples}}",
            "--warmup={{warmup}}"]
bulk = ["--mode=bulk", "--chunk={{payload}}", "--bytes={{param:bytes}}",
        "--direction={{param:direction}}"]
"""


def rudp_registry(testcase, extra=""):
    path = tempdir(testcase) / "registry.toml"
    path.write_text(suite_mod.REGISTRY_PATH.read_text() + RUDP_ENTRIES + extra)
    return path


class BulkMode(unittest.TestCase):
    def setUp(self):
        self.dir = tempdir(self)
        self.registry = load_registry(rudp_registry(self))

    def load(self, text):
        return load_suite(write_suite(self.dir, text), self.registry, cpu_count=2)

    def test_a_mode_a_program_declares_is_valid(self):
        s = self.load("""
[suite]
name = "t"
[[matrix]]
programs = ["enet", "fakerudp", "ringlab_pingpong"]
variants = "all"
protocols = ["rudp"]
payloads = [65536]
mode = "bulk"
params = { loss_pct = [5], bytes = [1048576], direction = ["upload", "download"] }
""")
        by_id = {c.case_id: c for c in s.cases}
        c = by_id["rudp-65536B-c1-bulk-bytes1048576-direction_upload-loss_pct5-enet-default"]
        self.assertIsNone(c.skip_reason)
        self.assertEqual((c.mode, c.rate_per_s, c.inflight), ("bulk", None, 1))
        self.assertIsNone(by_id["rudp-65536B-c1-bulk-bytes1048576-direction_download-"
                                "loss_pct5-fakerudp-uring-fixed"].skip_reason)
        # ringlab_pingpong declares neither rudp nor bulk: skipped, not an error.
        pp = [c for c in s.cases if c.program == "ringlab_pingpong"]
        self.assertTrue(pp and all(c.skip_reason for c in pp))

    def test_unknown_mode_lists_the_declared_ones(self):
        with self.assertRaises(SuiteError) as cm:
            self.load('[suite]\nname = "t"\n[[matrix]]\nprogram = "enet"\n'
                      'protocols = ["rudp"]\nmode = "flood"\n')
        self.assertIn("unknown mode 'flood'", str(cm.exception))
        self.assertIn("bulk", str(cm.exception))

    def test_a_program_declaring_a_mode_the_other_lacks_is_skipped(self):
        s = self.load('[suite]\nname = "t"\n[[matrix]]\nprogram = "sockperf"\n'
                      'protocols = ["udp"]\nmode = "bulk"\n')
        self.assertIn("does not support mode bulk", s.cases[0].skip_reason)

    def test_registry_mode_names_are_checked(self):
        bad = RUDP_ENTRIES.replace('modes = ["pingpong", "bulk"]',
                                   'modes = ["pingpong", "Bulk Transfer"]')
        path = self.dir / "bad.toml"
        path.write_text(suite_mod.REGISTRY_PATH.read_text() + bad)
        with self.assertRaises(SuiteError) as cm:
            load_registry(path)
        self.assertIn("'Bulk Transfer' is not a mode name", str(cm.exception))


class BulkJson(unittest.TestCase):
    def parse(self, doc_text):
        path = tempdir(self) / "c.json"
        path.write_text(doc_text)
        return parsers.parse_ringlab_json("", "", path)

    def test_enet_bulk_section_is_mapped(self):
        m = self.parse((FIXTURES / "enet_bulk_download_loss5.json").read_text())
        b = m["bulk"]
        self.assertEqual(b["direction"], "download")
        self.assertEqual(b["bytes"], 4194304)
        self.assertEqual(b["chunk_bytes"], 65536)
        self.assertAlmostEqual(b["completion_s"], 0.536126651)
        # bytes / completion_s; ENet's goodput_mbit_s says the same in Mbit/s
        self.assertAlmostEqual(b["goodput_bytes_per_s"], 4194304 / 0.536126651)
        self.assertAlmostEqual(b["goodput_bytes_per_s"] * 8 / 1e6, 62.58676366, places=4)
        self.assertAlmostEqual(b["retransmission_ratio"], 0.1012369792)
        self.assertIsNone(b["spurious_retransmissions"])
        self.assertAlmostEqual(b["client_cpu_us_per_mb"], 3343.343735)
        # ENet's server CPU comes as server.cpu_us in the client's JSON.
        self.assertAlmostEqual(b["server_cpu_us_per_mb"], 30676 / 4.194304)
        self.assertIn("server.cpu_us", b["server_cpu_source"])
        self.assertIsNone(b["client_kernel_entries_per_mb"])
        self.assertEqual(set(b), set(parsers.BULK_FIELDS))

    def test_pingpong_json_has_no_bulk(self):
        self.assertIsNone(self.parse((FIXTURES / "enet_pingpong.json").read_text())["bulk"])

    def test_malformed_bulk_is_a_parse_error(self):
        base = '{"rtt_us": {}, %s}'
        rest = '"retransmission_ratio": null, "spurious_retransmissions": null, ' \
               '"client_cpu_us_per_mb": 1'
        for body, want in (('"mode": "bulk"', "no bulk object"),
                           ('"bulk": {"completion_s": 1}', "bulk.direction: missing"),
                           ('"bulk": {"direction": null, "bytes": 0, "completion_s": 1, %s}'
                            % rest, "bulk.bytes"),
                           ('"bulk": {"direction": null, "bytes": 10, "completion_s": 0, %s}'
                            % rest, "bulk.completion_s"),
                           ('"bulk": {"direction": "up", "bytes": 10, "completion_s": 1, %s}'
                            % rest, "bulk.direction"),
                           ('"bulk": [1]', "expected an object")):
            with self.subTest(body=body):
                with self.assertRaises(parsers.ParseError) as cm:
                    self.parse(base % body)
                self.assertIn(want, str(cm.exception))

    def test_runner_fills_server_cpu_and_direction(self):
        bulk = parsers.bulk_metrics({"bulk": {
            "direction": None, "bytes": 2_000_000, "completion_s": 0.5,
            "retransmission_ratio": None, "spurious_retransmissions": None,
            "client_cpu_us_per_mb": None}})
        self.assertEqual(bulk["goodput_bytes_per_s"], 4_000_000)
        measured = {"cpu_us": 1000.0, "kernel_entries": 40.0}
        out = runner.complete_bulk(bulk, {"direction": "upload"}, measured,
                                   {"cpu_us": 99999}, 5.0, 0.25)
        self.assertEqual(out["direction"], "upload")
        self.assertEqual(out["server_cpu_us_per_mb"], 500.0)        # timeline first
        self.assertIn("measured phase", out["server_cpu_source"])
        self.assertEqual(out["server_kernel_entries_per_mb"], 20.0)
        self.assertEqual(out["client_cpu_us_per_mb"], 125000.0)      # runner rusage
        self.assertIn("runner rusage", out["client_cpu_source"])
        out = runner.complete_bulk(bulk, {}, None, {"cpu_us": 3000}, 5.0, None)
        self.assertEqual(out["server_cpu_us_per_mb"], 1500.0)       # SERVER_STATS
        self.assertIn("SERVER_STATS", out["server_cpu_source"])
        out = runner.complete_bulk(bulk, {}, None, None, 0.5, None)
        self.assertEqual(out["server_cpu_us_per_mb"], 250000.0)     # wait4
        self.assertIn("wait4", out["server_cpu_source"])
        self.assertIsNone(out["direction"])
        self.assertIsNone(runner.bulk_mismatch(out, {"bytes": 2e6, "direction": "upload"}))
        self.assertIn("transferred 2000000 bytes",
                      runner.bulk_mismatch(out, {"bytes": 1000}))
        self.assertIn("asked for download", runner.bulk_mismatch(
            dict(out, direction="upload"), {"direction": "download"}))

    def test_bulk_metrics_are_metrics(self):
        rec = {"rtt_us": {"p50": 3.0}, "bulk": {"goodput_bytes_per_s": 7.0}}
        self.assertEqual(stats.metric_value(rec, "goodput_bytes_per_s"), 7.0)
        self.assertEqual(results.metric(rec, "p50"), 3.0)
        self.assertIsNone(stats.metric_value({"bulk": None}, "completion_s"))


BULK_SUITE = """
[suite]
name = "bulk-check"
repetitions = 1
pause_s = 0
calibrate = false
[[matrix]]
program = "{program}"
variants = {variants}
protocols = ["rudp"]
payloads = [{chunk}]
mode = "bulk"
timeout_s = 30
params = {{ loss_pct = [0, 5], bytes = [{nbytes}], direction = ["upload", "download"] }}
[[matrix]]
program = "{program}"
variants = {variants}
protocols = ["rudp"]
payloads = [64]
mode = "pingpong"
samples = 100
warmup = 10
params = {{ loss_pct = [5] }}
"""


def run_bulk(testcase, program, variants, chunk, nbytes, registry=None, binaries=None,
             env=None):
    d = tempdir(testcase)
    path = write_suite(d, BULK_SUITE.format(program=program, variants=variants, chunk=chunk,
                                            nbytes=nbytes))
    opts = runner.RunOptions(suite=str(path), results_root=d / "results", build=False,
                             registry_path=registry, binaries=binaries or {}, progress=None)
    if env:
        from unittest import mock
        import os
        with mock.patch.dict(os.environ, env):
            return results.load(runner.run_suite(opts))
    return results.load(runner.run_suite(opts))


class BulkThroughTheRunner(unittest.TestCase):
    def test_fake_reliable_udp_bench(self):
        run, records = run_bulk(self, "fakerudp", '["uring-fixed"]', 1024, 131072,
                                registry=rudp_registry(self))
        self.assertEqual(run["status"], "complete")
        self.assertEqual([r["status"] for r in records], ["ok"] * 5,
                         [(r["reason"], r["stderr_tail"]) for r in records])
        for r in records:
            self.assertEqual(schema.validate_record(r), [], r["case_id"])
        bulk = [r for r in records if r["mode"] == "bulk"]
        self.assertEqual(len(bulk), 4)
        for r in bulk:
            b = r["bulk"]
            self.assertEqual(b["direction"], r["params"]["direction"])
            self.assertEqual(b["bytes"], 131072)
            self.assertAlmostEqual(b["goodput_bytes_per_s"], b["bytes"] / b["completion_s"])
            self.assertGreater(b["server_cpu_us_per_mb"], 0)
            self.assertIsNotNone(b["client_kernel_entries_per_mb"])
            self.assertIn("--direction=" + b["direction"], r["commands"]["client"])
            self.assertIsNone(r["rtt_us"]["p50"])
            # The fake resends after a fixed timeout, so a slow host can make
            # it resend without loss (the receiver then counts a spurious one).
            if r["params"]["loss_pct"] == 5:
                self.assertGreater(b["retransmission_ratio"], 0, r["case_id"])
            self.assertLess(b["retransmission_ratio"], 1.0, r["case_id"])
            self.assertLessEqual(b["spurious_retransmissions"],
                                 b["retransmission_ratio"] * 128, r["case_id"])
        pingpong = next(r for r in records if r["mode"] == "pingpong")
        self.assertIsNone(pingpong["bulk"])
        self.assertGreater(pingpong["rtt_us"]["p50"], 0)

    def test_a_program_that_ignores_the_direction_fails_the_case(self):
        _, records = run_bulk(self, "fakerudp", '["epoll"]', 1024, 65536,
                              registry=rudp_registry(self),
                              env={"FAKE_RUDP_WRONG_DIRECTION": "1"})
        bulk = [r for r in records if r["mode"] == "bulk"]
        self.assertEqual({r["status"] for r in bulk}, {"failed"})
        self.assertIn("the case asked for", bulk[0]["reason"])


def bulk_record(variant, rep, goodput, program="fakerudp", loss=5, direction="upload"):
    from tests.helpers import make_record
    r = make_record(program=program, variant=variant, protocol="rudp", rep=rep,
                    kind="peer" if program == "enet" else "ours", mode="bulk",
                    params={"loss_pct": loss, "direction": direction, "bytes": 1048576},
                    payload_bytes=1024,
                    case_id=f"rudp-1024B-c1-bulk-loss_pct{loss}-direction_{direction}-"
                            f"{program}-{variant}")
    r["rtt_us"] = {k: None for k in r["rtt_us"]}
    r["bulk"] = {k: None for k in parsers.BULK_FIELDS}
    r["bulk"].update(direction=direction, bytes=1048576, chunk_bytes=1024,
                     completion_s=1048576 / goodput, goodput_bytes_per_s=goodput,
                     retransmission_ratio=loss / 100, spurious_retransmissions=0,
                     client_cpu_us_per_mb=1000.0, server_cpu_us_per_mb=800.0)
    return r


class BulkCompare(unittest.TestCase):
    def test_goodput_column_only_with_bulk_records(self):
        from ringlab_exp import compare
        from tests.helpers import make_record
        recs = [bulk_record(v, rep, g * host) for rep, host in ((1, 1.0), (2, 0.7), (3, 1.2))
                for v, g in (("epoll", 1e7), ("uring-fixed", 2e7))]
        self.assertEqual([schema.validate_record(r) for r in recs], [[]] * 6)
        rows = compare.compare(recs, recs, where_a={"variant": "epoll"},
                               where_b={"variant": "uring-fixed"})
        m = rows[0]["metrics"]["goodput_bytes_per_s"]
        self.assertAlmostEqual(m["ratio"], 2.0)      # paired: the host cancels
        self.assertEqual(m["verdict"], "better")
        text = compare.render(rows, "A", "B")
        self.assertIn("goodput B/s", text)
        plain = [make_record(rep=k) for k in (1, 2)]
        self.assertNotIn("goodput", compare.render(compare.compare(plain, plain), "A", "B"))


def _enet_binary():
    path = runner.default_build_dir(runner.REPO_DIR) / "bench" / "ringlab_enet_bench"
    return path if path.exists() else None


@unittest.skipUnless(_enet_binary(), "ringlab_enet_bench is not built")
class EnetBulkThroughTheRunner(unittest.TestCase):
    """The enet entry's bulk mode, from a suite, with the real program."""

    def test_upload_and_download_with_and_without_loss(self):
        run, records = run_bulk(self, "enet", '["default"]', 16384, 1048576,
                                binaries={"enet": str(_enet_binary())})
        self.assertEqual([r["status"] for r in records], ["ok"] * 5,
                         [(r["reason"], r["stderr_tail"]) for r in records])
        for r in records:
            self.assertEqual(schema.validate_record(r), [], r["case_id"])
            if r["mode"] != "bulk":
                continue
            b = r["bulk"]
            self.assertEqual(b["direction"], r["params"]["direction"])
            self.assertEqual(b["bytes"], 1048576)
            self.assertGreater(b["goodput_bytes_per_s"], 0)
            self.assertIn("server.cpu_us", b["server_cpu_source"])
            self.assertIsNone(b["spurious_retransmissions"])
            if r["params"]["loss_pct"] == 5:
                self.assertGreater(b["retransmission_ratio"], 0, r["case_id"])


if __name__ == "__main__":
    unittest.main()
