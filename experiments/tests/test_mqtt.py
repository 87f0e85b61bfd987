"""MQTT throughput through the runner: fan-in and fan-out as `rate` / `burst`
modes with `params.pattern`, the bench client's JSON (deliveries/s,
connections open, total deliveries), and broker CPU per delivery from the
broker's own timeline (a stand-in for ringlab_mqtt_broker) or from the
runner's wait4 of mosquitto."""

import os
import shutil
import unittest
from unittest import mock

from tests.helpers import FIXTURES, tempdir, write_suite
from tests.test_peer_parsers import mosquitto_block, registry_text_without_mqtt
from ringlab_exp import results, runner, schema, suite as suite_mod
from ringlab_exp.suite import load_registry, load_suite

FAKE_BENCH = FIXTURES / "fake_mqtt_bench.py"
FAKE_BROKER = FIXTURES / "fake_mqtt_broker.py"

# Our side as the MQTT helper registers it (names from the brief): the
# broker program whose client is ringlab_mqtt_bench, both stand-ins here.
ENTRIES = f"""
[programs.ringlab_mqtt_bench]
kind = "ours"
binary = "{FAKE_BENCH}"
variants = ["default"]
protocols = ["mqtt"]
modes = ["pingpong", "rate", "burst"]
pin = "none"
port = "auto"
ready = "listen"
parser = "ringlab_json"
rtt = "full"
server = ["{{binary}}"]
client = ["{{binary}}"]

[programs.ringlab_mqtt_broker]
kind = "ours"
binary = "{FAKE_BROKER}"
variants = ["epoll", "uring-fixed"]
protocols = ["mqtt"]
modes = ["pingpong", "rate", "burst"]
max_connections = 10000
pin = "flag"
pin_args = ["--cpu={{cpu}}"]
port = "auto"
ready = '^READY (?P<address>\\S+)\\s*$'
parser = "ringlab_json"
stop_signal = "SIGINT"
rtt = "full"
params = {{ qos = [0, 1, 2], pattern = ["fanin", "fanout"] }}
server = ["{{binary}}", "server", "--bind={{server_host}}:0", "--backend={{variant}}",
          "{{server_pin}}"]
client = ["{{binary:ringlab_mqtt_bench}}", "client", "--server={{server_address}}",
          "--backend={{variant}}", "--qos={{param:qos}}", "--payload={{payload}}",
          "--samples={{samples}}", "--warmup={{warmup}}", "--connections={{connections}}",
          "{{mode_args}}", "{{client_pin}}", "--json={{client_json}}",
          "--timeout_s={{client_timeout_s}}", "{{max_duration_args}}"]
max_duration_args = ["--max_duration_s={{max_duration_s}}"]

[programs.ringlab_mqtt_broker.mode_args]
pingpong = ["--mode=pingpong"]
rate = ["--mode=rate", "--pattern={{param:pattern}}", "--rate={{rate}}"]
burst = ["--mode=burst", "--pattern={{param:pattern}}", "--inflight={{inflight}}"]
"""


def mqtt_registry(testcase):
    path = tempdir(testcase) / "registry.toml"
    path.write_text(registry_text_without_mqtt() + ENTRIES + mosquitto_block())
    return path


SUITE = """
[suite]
name = "mqtt-check"
repetitions = 1
pause_s = 0
calibrate = false
[defaults]
protocols = ["mqtt"]
payloads = [64]
warmup = 20
timeout_s = 30
[[matrix]]
program = "{program}"
variants = {variants}
mode = "burst"
connections = [3]
inflight = [4]
samples = 300
params = {{ qos = [0], pattern = ["fanin", "fanout"] }}
[[matrix]]
program = "{program}"
variants = {variants}
mode = "rate"
connections = [2]
rates = [2000]
duration_s = 0.2
params = {{ qos = [1], pattern = ["fanin"] }}
"""


def run(testcase, program, variants, extra=""):
    d = tempdir(testcase)
    path = write_suite(d, SUITE.format(program=program, variants=variants) + extra)
    opts = runner.RunOptions(suite=str(path), results_root=d / "results", build=False,
                             registry_path=mqtt_registry(testcase), progress=None)
    with mock.patch.dict(os.environ, {"PATH": os.environ.get("PATH", "") + ":/usr/sbin"}):
        return results.load(runner.run_suite(opts))


class Expansion(unittest.TestCase):
    def test_fan_in_and_out_are_rate_and_burst_with_a_pattern(self):
        s = load_suite(write_suite(tempdir(self), SUITE.format(
            program="ringlab_mqtt_broker", variants='["epoll"]')),
            load_registry(mqtt_registry(self)), cpu_count=2)
        self.assertEqual([c.case_id for c in s.cases], [
            "mqtt-64B-c3-burst-i4-pattern_fanin-qos0-ringlab_mqtt_broker-epoll",
            "mqtt-64B-c3-burst-i4-pattern_fanout-qos0-ringlab_mqtt_broker-epoll",
            "mqtt-64B-c2-rate-r2000-pattern_fanin-qos1-ringlab_mqtt_broker-epoll"])
        self.assertEqual(s.cases[2].samples, 400)        # rate x duration_s


class FakeBrokerThroughTheRunner(unittest.TestCase):
    def test_fan_in_fan_out_and_broker_cpu_from_its_timeline(self):
        run_meta, records = run(self, "ringlab_mqtt_broker", '["uring-fixed"]', extra="""
[[matrix]]
program = "ringlab_mqtt_broker"
variants = ["uring-fixed"]
mode = "rate"
connections = [2]
rates = [2000]
params = { qos = [0] }
""")
        self.assertEqual([r["status"] for r in records[:3]], ["ok"] * 3,
                         [(r["reason"], r["stderr_tail"]) for r in records])
        by = {(r["mode"], r["params"].get("pattern")): r for r in records}
        for r in records[:3]:
            self.assertEqual(schema.validate_record(r), [], r["case_id"])
            self.assertEqual(r["server_program"], "ringlab_mqtt_broker")
            self.assertEqual(r["client_program"], "ringlab_mqtt_bench")
            self.assertIn("measured phase", r["server_cpu_source"])
            self.assertGreater(r["server_cpu_us_per_msg"], 0)
            self.assertGreater(r["server_kernel_entries_per_msg"], 0)
        fanin, fanout = by[("burst", "fanin")], by[("burst", "fanout")]
        self.assertEqual(fanin["connections_open"], 4)       # 3 publishers + 1 subscriber
        self.assertEqual(fanout["connections_open"], 4)      # 1 publisher + 3 subscribers
        self.assertEqual(fanin["samples"], 300)
        self.assertEqual(fanout["samples"], 900)             # every delivery is a sample
        self.assertAlmostEqual(fanin["deliveries_per_s"], fanin["messages_per_s"])
        self.assertAlmostEqual(fanout["deliveries_per_s"], 3 * fanout["messages_per_s"])
        # The broker counts deliveries (warm-up included): 3 x (300 + 20).
        self.assertEqual(fanout["server_stats"]["messages"], 960)
        self.assertEqual(fanout["program_result"]["total_messages"], 960)
        self.assertGreater(fanout["server_measured"]["messages"], 0)
        self.assertIn("--pattern=fanout", fanout["commands"]["client"])
        self.assertIn("--inflight=4", fanout["commands"]["client"])
        rate = by[("rate", "fanin")]
        self.assertIn("--rate=2000", rate["commands"]["client"])
        self.assertEqual(rate["params"]["qos"], 1)
        # A rate case without a pattern cannot build its command.
        bad = by[("rate", None)]
        self.assertEqual(bad["status"], "failed")
        self.assertIn("give params.pattern in the suite", bad["reason"])


@unittest.skipUnless(shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto"),
                     "mosquitto not installed")
class MosquittoThroughTheRunner(unittest.TestCase):
    def test_fan_in_and_fan_out_with_broker_cpu_from_wait4(self):
        _, records = run(self, "mosquitto", '["default"]')
        self.assertEqual([r["status"] for r in records], ["ok"] * 3,
                         [(r["reason"], r["stderr_tail"]) for r in records])
        for r in records:
            self.assertEqual(schema.validate_record(r), [], r["case_id"])
            self.assertIn("wait4", r["server_cpu_source"])
            self.assertGreater(r["server_cpu_us_per_msg"], 0)
            self.assertIsNone(r["server_kernel_entries_per_msg"])
            conf = runner.pathlib.Path(r["commands"]["files"]["mosquitto.conf"]).read_text()
            self.assertIn("set_tcp_nodelay true\n", conf)
        fanout = next(r for r in records if r["params"].get("pattern") == "fanout")
        self.assertAlmostEqual(fanout["deliveries_per_s"], 3 * fanout["messages_per_s"])
        self.assertEqual(fanout["program_result"]["total_messages"], 3 * 320)


if __name__ == "__main__":
    unittest.main()
