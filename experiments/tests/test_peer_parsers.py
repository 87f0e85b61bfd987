"""Parsers and registry entries of the protocol modules' peers (ddsperf,
ENet, mosquitto). Fixtures are real outputs captured on the project VM
(tests/fixtures/ddsperf_*.txt: `ddsperf ping` against `ddsperf pong`, both
pinned, on loopback)."""

import os
import shutil
import unittest

from tests.helpers import EXPERIMENTS, FIXTURES, tempdir, write_suite
from ringlab_exp import parsers, results, runner
from ringlab_exp.suite import load_registry


def fixture(name):
    return (FIXTURES / name).read_text()


class Ddsperf(unittest.TestCase):
    def test_six_seconds_drop_the_first_and_double_everything(self):
        m = parsers.parse_ddsperf(fixture("ddsperf_ping_reliable_64_6s.txt"), "", None)
        # Seconds 3..6 are kept; 2.000 (the first) is warm-up.
        self.assertEqual(m["samples"], 13426 + 13160 + 12962 + 12653)
        self.assertEqual(m["total_messages"], 12407 + 13426 + 13160 + 12962 + 12653)
        r = m["rtt_us"]
        self.assertAlmostEqual(r["min"], 2 * 11.888)
        self.assertAlmostEqual(r["max"], 2 * 1865.598)
        # cnt-weighted median of 36.350 (13426), 36.374 (12653), 36.411 (13160),
        # 37.722 (12962): the 26101st of 52201 falls in 36.411.
        self.assertAlmostEqual(r["p50"], 2 * 36.411)
        mean = (37.184 * 13426 + 37.928 * 13160 + 38.513 * 12962 + 39.458 * 12653) / 52201
        self.assertAlmostEqual(r["mean"], 2 * mean)
        self.assertIsNone(r["p999"])
        self.assertAlmostEqual(m["messages_per_s"], 52201 / 4.0)
        self.assertEqual(m["lost"], 0)
        self.assertIn("RTT/2; doubled", m["rtt_note"])
        self.assertIn("first second dropped", m["rtt_note"])
        self.assertEqual(m["program_result"]["peer"], "vm:1430")
        self.assertEqual(m["program_result"]["size_bytes"], 64)


class DdsperfSub(unittest.TestCase):
    """`ddsperf -D 5 sub` receiving 64 KiB samples from `ddsperf pub size
    65536` (unpinned, loopback): a bulk record, first second dropped."""

    def test_bulk_record_from_the_per_second_deltas(self):
        m = parsers.parse_ddsperf_sub(fixture("ddsperf_sub_reliable_64k_5s.txt"), "", None)
        kept = 27136 + 12138 + 19173 + 28139  # 2.000 .. 5.000; 1.000 is warm-up
        self.assertEqual(m["samples"], kept)
        self.assertEqual(m["total_messages"], 112112)
        self.assertEqual(m["lost"], 0)
        self.assertAlmostEqual(m["messages_per_s"], kept / 4.0)
        b = m["bulk"]
        self.assertEqual(b["direction"], "download")
        self.assertEqual(b["bytes"], kept * 65536)
        self.assertEqual(b["chunk_bytes"], 65536)
        self.assertAlmostEqual(b["completion_s"], 4.0)
        self.assertAlmostEqual(b["goodput_bytes_per_s"], kept * 65536 / 4.0)
        self.assertIsNone(b["retransmission_ratio"])
        self.assertIsNone(b["client_kernel_entries_per_mb"])

    def test_no_lines_is_an_error(self):
        with self.assertRaises(parsers.ParseError):
            parsers.parse_ddsperf_sub("[1] participant vm:1: new (self)\n", "", None)

    def test_registry_entries_run_bulk_only(self):
        reg = load_registry(EXPERIMENTS / "registry.toml")
        for name in ("ddsperf_pubsub", "ringlab_dds_throughput"):
            self.assertEqual(reg[name].get("modes"), ["bulk"], name)
        self.assertEqual(reg["ddsperf_pubsub"].get("parser"), "ddsperf_sub")

    def test_percentiles_are_weighted_medians_of_the_seconds(self):
        m = parsers.parse_ddsperf(fixture("ddsperf_ping_reliable_64_6s.txt"), "", None)
        # 99%: 55.440 (13426), 59.144 (12962), 67.588 (13160), 72.217 (12653)
        # -> the 26101st falls in 59.144.
        self.assertAlmostEqual(m["rtt_us"]["p99"], 2 * 59.144)
        r = m["rtt_us"]
        self.assertTrue(r["min"] <= r["p50"] <= r["p90"] <= r["p99"] <= r["max"])

    def test_two_seconds_keep_both(self):
        m = parsers.parse_ddsperf(fixture("ddsperf_ping_reliable_64.txt"), "", None)
        self.assertEqual(m["samples"], 12998 + 12545)
        self.assertAlmostEqual(m["rtt_us"]["min"], 2 * 12.462)
        self.assertAlmostEqual(m["messages_per_s"], (12998 + 12545) / 2.0)
        self.assertNotIn("dropped", m["rtt_note"])

    def test_best_effort_16k_and_rate_mode(self):
        for name, size in (("ddsperf_ping_besteffort_64.txt", 64),
                           ("ddsperf_ping_reliable_16k.txt", 16384),
                           ("ddsperf_ping_rate2000_waitset.txt", 64)):
            with self.subTest(name=name):
                m = parsers.parse_ddsperf(fixture(name), "", None)
                self.assertEqual(m["program_result"]["size_bytes"], size)
                self.assertGreater(m["samples"], 1000)
        rate = parsers.parse_ddsperf(fixture("ddsperf_ping_rate2000_waitset.txt"), "", None)
        self.assertEqual(rate["samples"], 1993 + 1944)   # 1.000 dropped of three

    def test_errors_name_ddsperfs_reason(self):
        with self.assertRaises(parsers.ParseError) as cm:
            parsers.parse_ddsperf(fixture("ddsperf_ping_no_pong.txt"), "", None)
        self.assertIn("too few matching participants", str(cm.exception))
        with self.assertRaises(parsers.ParseError):
            parsers.parse_ddsperf("", "", None)

    def test_sublat_lines_and_other_partners(self):
        base = fixture("ddsperf_ping_reliable_64.txt")
        sublat = ("[1037] 3.000  sublat vm:1026 size 64 mean 1.0us min 1.0us 50% 1.0us "
                  "90% 1.0us 99% 1.0us max 1.0us cnt 5\n")
        m = parsers.parse_ddsperf(base + sublat, "", None)
        self.assertEqual(m["samples"], 12998 + 12545)
        other = base.replace("vm:1026 size 64 mean 39.779", "vm:9999 size 64 mean 39.779")
        with self.assertRaises(parsers.ParseError) as cm:
            parsers.parse_ddsperf(other, "", None)
        self.assertIn("another ddsperf shares the domain", str(cm.exception))

    def test_ping_timeouts_count_as_lost(self):
        text = fixture("ddsperf_ping_reliable_64.txt") + \
            "[1037] ping timed out (total 3 times) ... sending new ping\n"
        self.assertEqual(parsers.parse_ddsperf(text, "", None)["lost"], 3)


class PeerRegistryEntries(unittest.TestCase):
    def test_entries_load_and_name_known_parsers(self):
        registry = load_registry()
        for name in ("ddsperf", "enet"):
            with self.subTest(name=name):
                prog = registry[name]
                self.assertEqual(prog.kind, "peer")
                self.assertIn(prog.parser, parsers.PARSERS)
                self.assertEqual(prog.rtt, "full")
        dds = registry["ddsperf"]
        self.assertIn("lo", dds.get("env")["CYCLONEDDS_URI"])
        self.assertEqual(dds.get("param_args")["reliability"]["best-effort"], ["-u"])
        enet = registry["enet"]
        self.assertEqual(enet.protocols, ["rudp"])
        self.assertIn("bulk", enet.modes)
        self.assertIn("--loss={param:loss_pct}", enet.server)
        self.assertIn("--loss={param:loss_pct}", enet.client)

    def test_enet_json_reads_with_the_ringlab_json_parser(self):
        path = tempdir(self) / "enet.json"
        path.write_text(fixture("enet_pingpong.json"))
        m = parsers.parse_ringlab_json("", "", path)
        self.assertEqual(m["backend_effective"], "enet")
        self.assertEqual(m["samples"], 2000)
        r = m["rtt_us"]
        self.assertTrue(0 < r["min"] <= r["p50"] <= r["p99"] <= r["p999"] <= r["max"])
        self.assertIsNone(m["kernel_entries_per_msg"])
        bulk_path = tempdir(self) / "bulk.json"
        bulk_path.write_text(fixture("enet_bulk_download_loss5.json"))
        b = parsers.parse_ringlab_json("", "", bulk_path)
        self.assertIsNone(b["rtt_us"]["p50"])
        self.assertGreater(b["program_result"]["bulk"]["goodput_mbit_s"], 0)
        self.assertGreater(b["program_result"]["server"]["reliable_resends"], 0)


@unittest.skipUnless(shutil.which("ddsperf"), "ddsperf not installed (cyclonedds-tools)")
class DdsperfThroughTheRunner(unittest.TestCase):
    """The registry entry, end to end: real ddsperf pong and ping, pinned,
    in a domain of the repetition's own, parsed into ok records."""

    def test_reliable_and_best_effort(self):
        d = tempdir(self)
        path = write_suite(d, """
[suite]
name = "ddsperf-check"
repetitions = 1
[[matrix]]
program = "ddsperf"
variants = ["listener"]
protocols = ["dds"]
payloads = [64]
mode = "pingpong"
duration_s = 2
params = { reliability = ["reliable", "best-effort"] }
""")
        opts = runner.RunOptions(suite=str(path), results_root=d / "results", build=False,
                                 progress=None)
        run, records = results.load(runner.run_suite(opts))
        self.assertEqual([r["status"] for r in records], ["ok", "ok"],
                         [r["reason"] for r in records])
        for r in records:
            self.assertGreater(r["samples"], 100)
            self.assertIn("doubled", r["rtt_note"])
            self.assertIn("CYCLONEDDS_URI", r["commands"]["env"])
        flags = {r["params"]["reliability"]: r["commands"]["client"] for r in records}
        self.assertIn("-u", flags["best-effort"])
        self.assertNotIn("-u", flags["reliable"])


def _enet_binary():
    build = os.environ.get("RINGLAB_BUILD_DIR")
    path = runner.pathlib.Path(build) / "bench" / "ringlab_enet_bench" if build else None
    return path if path and path.exists() else None


@unittest.skipUnless(_enet_binary(), "ringlab_enet_bench not built in $RINGLAB_BUILD_DIR")
class EnetThroughTheRunner(unittest.TestCase):
    """The enet entry, end to end: our ENet program as server and client,
    pinned with --cpu, loss as a parameter, parsed by ringlab_json."""

    def test_pingpong_with_and_without_loss(self):
        d = tempdir(self)
        path = write_suite(d, """
[suite]
name = "enet-check"
repetitions = 1
[[matrix]]
program = "enet"
variants = ["default"]
protocols = ["rudp"]
payloads = [64]
mode = "pingpong"
samples = 2000
warmup = 200
params = { loss_pct = [0, 5] }
""")
        opts = runner.RunOptions(suite=str(path), results_root=d / "results", build=False,
                                 binaries={"enet": str(_enet_binary())}, progress=None)
        run, records = results.load(runner.run_suite(opts))
        self.assertEqual([r["status"] for r in records], ["ok", "ok"],
                         [r["reason"] for r in records])
        by_loss = {r["params"]["loss_pct"]: r for r in records}
        self.assertEqual(by_loss[0]["samples"], 2000)
        self.assertIn("--loss=5", by_loss[5]["commands"]["client"])
        self.assertGreater(
            by_loss[5]["program_result"]["client"]["dropped_by_impairment"], 0)


def registry_text_without_mqtt():
    """registry.toml without its MQTT section (ringlab_mqtt, ringlab_mqtt_bench
    and mosquitto), for tests that put stand-ins in their place."""
    text = (EXPERIMENTS / "registry.toml").read_text()
    return text[:text.index("# ---- MQTT (mqtt/)")]


def mosquitto_block():
    """registry.toml's mosquitto entry (the last one in the file)."""
    text = (EXPERIMENTS / "registry.toml").read_text()
    return text[text.index("[programs.mosquitto]"):]


FAKE_MQTT = FIXTURES / "fake_mqtt_bench.py"
STAND_IN = f"""
[programs.ringlab_mqtt_bench]
kind = "ours"
binary = "{FAKE_MQTT}"
variants = ["default"]
protocols = ["mqtt"]
modes = ["pingpong"]
pin = "none"
port = "auto"
ready = "listen"
parser = "ringlab_json"
rtt = "full"
server = ["{{binary}}"]
client = ["{{binary}}"]
"""


class MosquittoEntry(unittest.TestCase):
    def test_the_registry_has_mosquitto_and_its_client(self):
        registry = load_registry()
        self.assertIn("mosquitto", registry)
        self.assertIn("ringlab_mqtt_bench", registry)
        self.assertEqual(registry["mosquitto"].uses, ["ringlab_mqtt_bench"])

    def test_block_loads_once_the_client_exists(self):
        path = tempdir(self) / "registry.toml"
        path.write_text(registry_text_without_mqtt() + STAND_IN +
                        mosquitto_block())
        prog = load_registry(path)["mosquitto"]
        self.assertEqual(prog.protocols, ["mqtt"])
        conf = prog.get("files")["mosquitto.conf"]
        for line in ("listener {port} {server_host}", "set_tcp_nodelay true",
                     "persistence false", "allow_anonymous true"):
            self.assertIn(line + "\n", conf)

    @unittest.skipUnless(shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto"),
                         "mosquitto not installed")
    def test_real_mosquitto_through_the_runner(self):
        d = tempdir(self)
        registry = d / "registry.toml"
        registry.write_text(registry_text_without_mqtt() + STAND_IN +
                            mosquitto_block())
        suite = write_suite(d, """
[suite]
name = "mosquitto-check"
repetitions = 1
[[matrix]]
program = "mosquitto"
variants = ["default"]
protocols = ["mqtt"]
payloads = [64]
mode = "pingpong"
samples = 300
warmup = 30
params = { qos = [0, 1] }
""")
        env_path = os.environ.get("PATH", "") + ":/usr/sbin"
        opts = runner.RunOptions(suite=str(suite), results_root=d / "results", build=False,
                                 registry_path=registry,
                                 binaries={"ringlab_mqtt_bench": str(FAKE_MQTT)},
                                 progress=None)
        from unittest import mock
        with mock.patch.dict(os.environ, {"PATH": env_path}):
            run, records = results.load(runner.run_suite(opts))
        self.assertEqual([r["status"] for r in records], ["ok", "ok"],
                         [(r["reason"], r["stderr_tail"]) for r in records])
        for r in records:
            self.assertEqual(r["samples"], 300)
            conf = runner.pathlib.Path(r["commands"]["files"]["mosquitto.conf"]).read_text()
            self.assertIn("set_tcp_nodelay true\n", conf)
            port = r["server_address"].rsplit(":", 1)[1]
            self.assertIn(f"listener {port} 127.0.0.1\n", conf)
            self.assertIn("--qos=%d" % r["params"]["qos"], r["commands"]["client"])


if __name__ == "__main__":
    unittest.main()
