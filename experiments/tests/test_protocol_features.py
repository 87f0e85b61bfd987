"""Runner features the protocol modules need: a generic parameter axis,
per-program environment, generated config files, protocols beyond udp/tcp,
a peer server with our client ({binary:NAME}), ready rules for silent
servers, and server-side CPU per message."""

import os
import pathlib
import unittest
from unittest import mock

from tests.helpers import FAKE, tempdir, write_suite
from tests.test_runner import run_tiny
from ringlab_exp import results, runner, schema, suite as suite_mod
from ringlab_exp.suite import SuiteError, load_registry, load_suite

# Peer-like entries driven by the fake program: a broker-ish TCP server that
# reads a generated config file and prints nothing ("mqtt"), a DDS-ish UDP one
# found through its own socket, and one that needs a fixed delay. The client
# is "our" bench program (the fake again), named with {binary:ringlab_pingpong}.
EXTRA = f"""
[programs.fakebroker]
kind = "peer"
binary = "{FAKE}"
variants = ["default"]
protocols = ["mqtt"]
modes = ["pingpong"]
max_connections = 1
pin = "taskset"
port = "pick"
ready = "listen"
parser = "ringlab_json"
stop_signal = "SIGTERM"
rtt = "full"
params = {{ qos = [0, 1], tag = "any" }}
server = ["{{binary}}", "server", "--proto=tcp", "--config={{file:fake.conf}}"]
client = ["{{binary:ringlab_pingpong}}", "client", "--proto=tcp", "--server={{server_address}}",
          "--samples={{samples}}", "--warmup={{warmup}}", "--qos={{param:qos}}",
          "{{param_args:tag}}", "--json={{client_json}}"]

[programs.fakebroker.env]
FAKE_URI = "tcp://{{server_host}}:{{port}} conf={{file:fake.conf}} qos={{param:qos}}"

[programs.fakebroker.files]
"fake.conf" = \"\"\"listener {{port}} {{server_host}}
# literal braces: {{{{not a placeholder}}}}
set_tcp_nodelay true
\"\"\"

[programs.fakebroker.param_args.tag]
plain = []
marked = ["--tag=marked"]

[programs.fakedds]
kind = "peer"
binary = "{FAKE}"
variants = ["default"]
protocols = ["dds"]
modes = ["pingpong"]
pin = "none"
port = "pick"
ready = "socket"
parser = "ringlab_json"
rtt = "full"
files = {{ "dds.conf" = "listener {{port}} {{server_host}}\\n" }}
server = ["{{binary}}", "server", "--proto=udp", "--config={{file:dds.conf}}"]
client = ["{{binary:ringlab_pingpong}}", "client", "--proto=udp", "--server={{server_address}}",
          "--samples={{samples}}", "--warmup={{warmup}}", "--json={{client_json}}"]

[programs.fakedelay]
kind = "peer"
binary = "{FAKE}"
variants = ["default"]
protocols = ["rudp"]
modes = ["pingpong"]
pin = "none"
port = "pick"
ready = "delay:0.3"
parser = "ringlab_json"
rtt = "full"
files = {{ "d.conf" = "listener {{port}} {{server_host}}\\n" }}
server = ["{{binary}}", "server", "--proto=udp", "--config={{file:d.conf}}"]
client = ["{{binary:ringlab_pingpong}}", "client", "--proto=udp", "--server={{server_address}}",
          "--samples={{samples}}", "--warmup={{warmup}}", "--json={{client_json}}"]
"""


def extra_registry(testcase, extra=EXTRA):
    path = tempdir(testcase) / "registry.toml"
    path.write_text(suite_mod.REGISTRY_PATH.read_text() + extra)
    return path


class ParamAxis(unittest.TestCase):
    def setUp(self):
        self.dir = tempdir(self)
        self.registry = load_registry(extra_registry(self))

    def load(self, text):
        return load_suite(write_suite(self.dir, text), self.registry, cpu_count=2)

    def test_expansion_case_ids_and_restriction(self):
        s = self.load("""
[suite]
name = "t"
[defaults]
params = { tag = ["plain"] }
[[matrix]]
program = "fakebroker"
protocols = ["mqtt"]
params = { qos = [0, 1, 2] }
""")
        by_id = {c.case_id: c for c in s.cases}
        self.assertEqual(sorted(by_id), [
            "mqtt-64B-c1-pingpong-qos0-tag_plain-fakebroker-default",
            "mqtt-64B-c1-pingpong-qos1-tag_plain-fakebroker-default",
            "mqtt-64B-c1-pingpong-qos2-tag_plain-fakebroker-default"])
        c = by_id["mqtt-64B-c1-pingpong-qos1-tag_plain-fakebroker-default"]
        self.assertEqual(c.params, (("qos", 1), ("tag", "plain")))  # defaults merged in
        self.assertIsNone(c.skip_reason)
        self.assertIn("qos", c.scenario[-1][0])
        skipped = by_id["mqtt-64B-c1-pingpong-qos2-tag_plain-fakebroker-default"]
        self.assertIn("does not support qos=2 (supports 0, 1)", skipped.skip_reason)

    def test_string_values_and_undeclared_parameter(self):
        s = self.load("""
[suite]
name = "t"
[[matrix]]
programs = ["ringlab_pingpong", "fakebroker"]
variants = "all"
protocols = ["tcp", "mqtt"]
params = { reliability = ["best-effort", "reliable"], loss_pct = [0, 0.5] }
""")
        ids = [c.case_id for c in s.cases]
        self.assertIn("tcp-64B-c1-pingpong-loss_pct0-reliability_best-effort-"
                      "ringlab_pingpong-epoll", ids)
        self.assertIn("mqtt-64B-c1-pingpong-loss_pct0.5-reliability_reliable-"
                      "fakebroker-default", ids)
        self.assertEqual(len(ids), len(set(ids)))
        c = next(c for c in s.cases if c.program == "ringlab_pingpong" and c.protocol == "tcp")
        self.assertIn("does not take parameter 'loss_pct'", c.skip_reason)
        c = next(c for c in s.cases if c.program == "ringlab_pingpong" and c.protocol == "mqtt")
        self.assertIn("does not support protocol mqtt", c.skip_reason)

    def test_bad_param_values(self):
        for bad, want in (('params = { qos = 1 }', "non-empty list"),
                          ('params = { qos = [] }', "non-empty list"),
                          ('params = { Qos = [1] }', "lower case"),
                          ('params = { qos = [[1]] }', "string, number or boolean"),
                          ('params = { qos = [1, 1] }', "duplicate")):
            with self.subTest(bad=bad):
                with self.assertRaises(SuiteError) as cm:
                    self.load(f'[suite]\nname = "t"\n[[matrix]]\nprogram = "fakebroker"\n'
                              f'protocols = ["mqtt"]\n{bad}\n')
                self.assertIn(want, str(cm.exception))
                self.assertIn("matrix[1].params", str(cm.exception))

    def test_protocol_must_be_declared_by_some_program(self):
        with self.assertRaises(SuiteError) as cm:
            self.load('[suite]\nname = "t"\n[[matrix]]\nprogram = "fakebroker"\n'
                      'protocols = ["mqqt"]\n')
        self.assertIn("unknown protocol 'mqqt'", str(cm.exception))
        self.assertIn("mqtt", str(cm.exception))


class RegistryChecks(unittest.TestCase):
    def error(self, extra):
        with self.assertRaises(SuiteError) as cm:
            load_registry(extra_registry(self, extra))
        return str(cm.exception)

    ENTRY = """
[programs.x]
kind = "peer"
binary = "x"
variants = ["v"]
protocols = ["{proto}"]
modes = ["pingpong"]
pin = "none"
port = "pick"
ready = "{ready}"
parser = "ringlab_json"
server = [{server}]
client = ["{{binary}}"]
"""

    def entry(self, proto="mqtt", ready="listen", server='"{binary}"', more=""):
        return self.ENTRY.format(proto=proto, ready=ready, server=server) + more

    def test_valid_entry_loads(self):
        reg = load_registry(extra_registry(self, EXTRA + self.entry()))
        self.assertEqual(reg["x"].transport_of("mqtt"), "tcp")
        self.assertEqual(reg["fakebroker"].uses, ["ringlab_pingpong"])

    def test_unknown_protocol_needs_transport(self):
        msg = self.error(self.entry(proto="zenoh"))
        self.assertIn("transport_protocol", msg)
        reg = load_registry(extra_registry(self, self.entry(
            proto="zenoh", more='transport_protocol = { zenoh = "udp" }\n')))
        self.assertEqual(reg["x"].transport_of("zenoh"), "udp")

    def test_template_errors(self):
        self.assertIn("names no entry of", self.error(self.entry(server='"{file:a.conf}"')))
        self.assertIn("{binary:nosuch} names no program",
                      self.error(self.entry(server='"{binary:nosuch}"')))
        self.assertIn("not declared in params", self.error(self.entry(server='"{param:qos}"')))
        self.assertIn("unknown placeholder {env:HOME}",
                      self.error(self.entry(server='"{env:HOME}"')))
        self.assertIn("expected delay:SECONDS", self.error(self.entry(ready="delay:soon")))
        self.assertIn("plain file name", self.error(self.entry(
            more='files = { "../etc/x" = "y" }\n')))


class PeerServerOurClient(unittest.TestCase):
    SUITE = """
[suite]
name = "tiny"
repetitions = 1
pause_s = 0
ready_timeout_s = 5
[defaults]
samples = 100
warmup = 10
timeout_s = 20
[[matrix]]
program = "fakebroker"
protocols = ["mqtt"]
params = { qos = [1, 2], tag = ["marked"] }
"""

    def test_files_env_params_and_server_cpu(self):
        reg = extra_registry(self)
        with mock.patch.dict(os.environ, {"FAKE_ENV_NAME": "FAKE_URI"}):
            run_dir, run, records = run_tiny(self, self.SUITE, registry=reg)
        self.assertEqual(run["status"], "complete")
        by = {r["case_id"]: r for r in records}
        ok = by["mqtt-64B-c1-pingpong-qos1-tag_marked-fakebroker-default"]
        self.assertEqual(ok["status"], "ok", ok["reason"])
        self.assertEqual(schema.validate_record(ok), [])
        self.assertEqual(ok["params"], {"qos": 1, "tag": "marked"})
        self.assertEqual((ok["server_program"], ok["client_program"]),
                         ("fakebroker", "ringlab_pingpong"))
        self.assertEqual(ok["program_result"]["qos"], "1")
        self.assertEqual(ok["program_result"]["tag"], "marked")     # param_args
        self.assertIn(str(FAKE), ok["commands"]["client"][3])      # taskset -c 1 FAKE
        conf = pathlib.Path(ok["commands"]["files"]["fake.conf"])
        port = ok["server_address"].rsplit(":", 1)[1]
        self.assertEqual(conf.read_text(), f"listener {port} 127.0.0.1\n"
                         "# literal braces: {{not a placeholder}}\nset_tcp_nodelay true\n"
                         .replace("{{", "{").replace("}}", "}"))
        want_env = f"tcp://127.0.0.1:{port} conf={conf} qos=1"
        self.assertEqual(ok["commands"]["env"], {"FAKE_URI": want_env})
        self.assertEqual(ok["program_result"]["env"], want_env)     # reached the client
        server_out = (run_dir / "logs" / f"{ok['case_id']}.r1.server.out").read_text()
        self.assertIn(f"ENV FAKE_URI={want_env}", server_out)       # and the server
        self.assertIsNone(ok["server_stats"])                       # a silent peer
        self.assertGreater(ok["server_cpu_us_per_msg"], 0)
        self.assertTrue(ok["server_cpu_source"].startswith("runner wait4 rusage"))
        skipped = by["mqtt-64B-c1-pingpong-qos2-tag_marked-fakebroker-default"]
        self.assertEqual(skipped["status"], "skipped")
        self.assertIn("qos=2", skipped["reason"])
        report = (run_dir / "report.md").read_text()
        self.assertIn("### MQTT 64 B, 1 conn, pingpong, qos=1, tag=marked", report)

    def test_missing_client_binary_fails_the_peer_case(self):
        reg = extra_registry(self)
        _, _, records = run_tiny(self, self.SUITE, registry=reg,
                                 binaries={"ringlab_pingpong": "/nonexistent/bench"})
        r = next(r for r in records if r["params"]["qos"] == 1)
        self.assertEqual(r["status"], "failed")
        self.assertIn("ringlab_pingpong (used by fakebroker)", r["reason"])

    def test_ready_by_own_socket_and_by_delay(self):
        reg = extra_registry(self)
        text = self.SUITE.split("[[matrix]]")[0] + """
[[matrix]]
program = "fakedds"
protocols = ["dds"]
[[matrix]]
program = "fakedelay"
protocols = ["rudp"]
"""
        _, _, records = run_tiny(self, text, registry=reg)
        self.assertEqual([r["status"] for r in records], ["ok", "ok"],
                         [r["reason"] for r in records])
        self.assertEqual([r["protocol"] for r in records], ["dds", "rudp"])
        self.assertGreaterEqual(records[1]["wall_s"], 0.3)
        for r in records:
            self.assertEqual(schema.validate_record(r), [])

    def test_ours_take_server_cpu_from_server_stats(self):
        text = PeerServerOurClient.SUITE.split("[[matrix]]")[0] + """
[[matrix]]
program = "ringlab_pingpong"
variants = ["epoll"]
protocols = ["tcp"]
"""
        _, _, records = run_tiny(self, text)
        r = records[0]
        self.assertEqual(r["status"], "ok", r["reason"])
        self.assertTrue(r["server_cpu_source"].startswith("server SERVER_STATS"))
        self.assertAlmostEqual(r["server_cpu_us_per_msg"],
                               r["server_stats"]["cpu_us"] / r["server_stats"]["messages"])


class ServerCpu(unittest.TestCase):
    def test_rules(self):
        f = runner.server_cpu
        self.assertEqual(f({"cpu_us": 1000, "messages": 100}, 5.0, 10, 64)[0], 10.0)
        # TCP echo counts bytes: messages = bytes / payload.
        self.assertEqual(f({"cpu_us": 1000, "bytes_echoed": 6400}, None, 0, 64)[0], 10.0)
        self.assertEqual(f({"cpu_us": 900, "datagrams_echoed": 90}, None, 0, 64)[0], 10.0)
        v, src = f(None, 0.002, 100, 64)
        self.assertAlmostEqual(v, 20.0)
        self.assertIn("wait4", src)
        self.assertEqual(f({"unparsed": "x"}, None, 0, 64), (None, None))


class Expansion(unittest.TestCase):
    def test_placeholders(self):
        values = {"port": 5, "param:qos": "1", "file:a.conf": "/w/a.conf",
                  "binary:b": "/bin/b"}
        lists = {"param_args:tag": ["-t", "x{port}"], "mode_args": []}
        self.assertEqual(runner.expand_args(
            ["{binary:b}", "-p{port}", "{param_args:tag}", "{mode_args}", "{{x}}",
             "c={file:a.conf}", "q{param:qos}"], values, lists),
            ["/bin/b", "-p5", "-t", "x5", "{x}", "c=/w/a.conf", "q1"])
        with self.assertRaises(KeyError) as cm:
            runner.expand_one("{param:loss}", values)
        self.assertIn("give params.loss in the suite", cm.exception.args[0])
        self.assertEqual(runner.param_text(True), "true")
        self.assertEqual(runner.param_text(2.0), "2")
        self.assertEqual(runner.param_text(0.5), "0.5")


if __name__ == "__main__":
    unittest.main()
