"""The runner end to end against the fake program (tests/fixtures/
fake_pingpong.py, which speaks the ringlab_pingpong contract over real
sockets) and, where installed, sockperf."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import unittest
from unittest import mock

from tests.helpers import EXPERIMENTS, FAKE, tempdir, write_suite
from ringlab_exp import results, runner, schema, suite as suite_mod

TINY = """
[suite]
name = "tiny"
repetitions = 2
pause_s = 0
ready_timeout_s = 5
[defaults]
samples = 200
warmup = 20
timeout_s = 20
[[matrix]]
program = "ringlab_pingpong"
variants = ["epoll", "uring-sqpoll"]
protocols = ["udp", "tcp"]
"""


def run_tiny(testcase, text=TINY, env=None, registry=None, binaries=None, **options):
    d = tempdir(testcase)
    path = write_suite(d, text)
    opts = runner.RunOptions(suite=str(path), results_root=d / "results", build=False,
                             binaries=binaries if binaries is not None
                             else {"ringlab_pingpong": str(FAKE)},
                             registry_path=registry, progress=None, **options)
    with mock.patch.dict(os.environ, env or {}):
        run_dir = runner.run_suite(opts)
    run, records = results.load(run_dir)
    return run_dir, run, records


def live_children_mentioning(marker):
    found = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and str(os.getpid()) != p.name:
                found.append(cmd)
    return found


class RunnerWithFakeProgram(unittest.TestCase):
    def test_records_statuses_and_layout(self):
        run_dir, run, records = run_tiny(self, env={"FAKE_UNSUPPORTED": "uring-sqpoll"})
        self.assertEqual(run["status"], "complete")
        self.assertEqual(len(records), 4 * 2)        # every repetition is kept
        by = {}
        for r in records:
            by.setdefault((r["case_id"], r["status"]), []).append(r["repetition"])
            self.assertEqual(schema.validate_record(r), [], r["case_id"])
        self.assertEqual(by[("udp-64B-c1-pingpong-ringlab_pingpong-epoll", "ok")], [1, 2])
        self.assertEqual(by[("tcp-64B-c1-pingpong-ringlab_pingpong-epoll", "ok")], [1, 2])
        skipped = [r for r in records if r["variant"] == "uring-sqpoll"]
        self.assertEqual({r["status"] for r in skipped}, {"skipped"})
        self.assertIn("fake says no SQPOLL", skipped[0]["reason"])
        ok = next(r for r in records if r["status"] == "ok")
        self.assertEqual(ok["samples"], 200)
        self.assertEqual(ok["pinning"], {"server_cpu": 0, "client_cpu": 1, "method": "flag"})
        self.assertIn("--cpu=0", ok["commands"]["server"])
        self.assertIn("--cpu=1", ok["commands"]["client"])
        self.assertEqual(ok["server_stats"]["messages"], 220)
        # Threads: the fake is one thread, pinned by --cpu; uring-sqpoll also
        # pins its SQPOLL thread to each side's cpu.
        self.assertEqual(ok["threads"]["server"][0]["cpus"], "0")
        self.assertEqual(ok["threads"]["server"][0]["last_cpu"], 0)
        self.assertIn("--sqpoll_cpu=0", skipped[0]["commands"]["server"])
        self.assertNotIn("--sqpoll_cpu=0", ok["commands"]["server"])
        self.assertEqual(ok["flags"], "fake,epoll")
        self.assertEqual(ok["cpu_source"], "program (client, measured phase)")
        # interleaved: rep 1 of every case first.
        self.assertEqual([r["repetition"] for r in records], [1] * 4 + [2] * 4)
        for name in ("run.json", "records.jsonl", "results.json", "report.md", "suite.toml"):
            self.assertTrue((run_dir / name).exists(), name)
        self.assertIn("tiny", str(run_dir.parent))
        self.assertEqual(live_children_mentioning(str(FAKE)), [])

    def test_server_failure_and_silence_are_failed_records(self):
        _, _, records = run_tiny(self, TINY.replace(', "uring-sqpoll"', "")
                                 .replace('["udp", "tcp"]', '["udp"]'),
                                 env={"FAKE_SERVER_FAIL": "1"})
        self.assertEqual({r["status"] for r in records}, {"failed"})
        self.assertIn("server exited with code 1 before it was ready", records[0]["reason"])
        self.assertIn("bind failed: fake failure", records[0]["stderr_tail"])

        text = TINY.replace(', "uring-sqpoll"', "").replace('["udp", "tcp"]', '["udp"]') \
            .replace("ready_timeout_s = 5", "ready_timeout_s = 0.5").replace("repetitions = 2",
                                                                             "repetitions = 1")
        _, _, records = run_tiny(self, text, env={"FAKE_SERVER_SILENT": "1"})
        self.assertEqual(records[0]["status"], "failed")
        self.assertIn("not ready within 0.5 s", records[0]["reason"])
        self.assertEqual(live_children_mentioning(str(FAKE)), [])

    def test_hanging_client_is_killed_and_run_goes_on(self):
        # timeout_s 0.5 + a grace of 0.5 s (5 s outside tests).
        self.assertEqual(runner.RunOptions(suite="x").client_grace_s, 5.0)
        text = TINY.replace("timeout_s = 20", "timeout_s = 0.5").replace(
            'variants = ["epoll", "uring-sqpoll"]', 'variants = ["epoll"]').replace(
            "repetitions = 2", "repetitions = 1\ncalibrate = false")
        t0 = time.monotonic()
        _, run, records = run_tiny(self, text, env={"FAKE_CLIENT_HANG": "1"},
                                   client_grace_s=0.5)
        self.assertLess(time.monotonic() - t0, 60)
        self.assertEqual(run["status"], "complete")
        self.assertEqual(len(records), 2)            # both protocols attempted
        for r in records:
            self.assertEqual(r["status"], "failed")
            self.assertIn("did not finish within 1 s; killed", r["reason"])
            # It waited the whole timeout + grace before killing, no less.
            self.assertGreaterEqual(r["wall_s"], 1.0)
            self.assertIn("--timeout_s=1", r["commands"]["client"])
        self.assertEqual(live_children_mentioning(str(FAKE)), [])

    def test_missing_peer_is_skipped_and_missing_binary_fails(self):
        d = tempdir(self)
        reg = d / "reg.toml"
        reg.write_text(suite_mod.REGISTRY_PATH.read_text().replace(
            'binary = "sockperf"', 'binary = "sockperf-not-installed-xyz"'))
        text = TINY + '\n[[matrix]]\nprogram = "sockperf"\nvariants = ["blocking"]\n' \
                      'protocols = ["udp"]\n'
        _, _, records = run_tiny(self, text.replace("repetitions = 2", "repetitions = 1"),
                                 registry=reg, binaries={"ringlab_pingpong": str(d / "nope")})
        peer = [r for r in records if r["program"] == "sockperf"]
        self.assertEqual(peer[0]["status"], "skipped")
        self.assertIn("sockperf-not-installed-xyz is not installed", peer[0]["reason"])
        ours = [r for r in records if r["program"] == "ringlab_pingpong"]
        self.assertTrue(all(r["status"] == "failed" for r in ours))
        self.assertIn("no such file", ours[0]["reason"])

    def test_multihost_without_root_is_skipped_with_reason(self):
        text = TINY.replace("[suite]", '[suite]\ntopology = "netns-veth"')
        with mock.patch("os.geteuid", return_value=1000):
            _, run, records = run_tiny(self, text)
        self.assertEqual(run["status"], "complete")
        self.assertEqual(len(records), 8)
        for r in records:
            self.assertEqual(r["status"], "skipped")
            self.assertIn("needs root", r["reason"])
            self.assertEqual(r["topology"], "netns-veth")

    @unittest.skipUnless(shutil.which("sockperf") and shutil.which("taskset"),
                         "sockperf or taskset not installed")
    def test_sockperf_peer_is_pinned_with_taskset(self):
        text = """
[suite]
name = "tiny"
repetitions = 1
[[matrix]]
program = "sockperf"
variants = ["blocking"]
protocols = ["udp", "tcp"]
duration_s = 1
"""
        _, _, records = run_tiny(self, text)
        for r in records:
            self.assertEqual(r["status"], "ok", r["reason"])
            self.assertEqual(r["commands"]["server"][:3], ["taskset", "-c", "0"])
            self.assertEqual(r["commands"]["client"][:3], ["taskset", "-c", "1"])
            self.assertIn("--full-rtt", r["commands"]["client"])
            self.assertGreater(r["samples"], 100)
            self.assertIsNone(r["kernel_entries_per_msg"])
            self.assertIn("rusage", r["cpu_source"])
            self.assertEqual(schema.validate_record(r), [])
        self.assertIn("--tcp", records[1]["commands"]["client"])


class Interrupt(unittest.TestCase):
    def test_sigint_keeps_partial_results_and_kills_children(self):
        d = tempdir(self)
        text = TINY.replace("samples = 200", "samples = 3000").replace(
            "repetitions = 2", "repetitions = 20").replace(', "uring-sqpoll"', "")
        path = write_suite(d, text)
        proc = subprocess.Popen(
            [sys.executable, str(EXPERIMENTS / "run.py"), "run", str(path), "--no-build",
             "--results", str(d / "res"), "--binary", f"ringlab_pingpong={FAKE}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        deadline = time.monotonic() + 60
        jsonl = None
        while time.monotonic() < deadline:
            found = list((d / "res").glob("tiny/*/records.jsonl"))
            if found and found[0].read_text().count("\n") >= 2:
                jsonl = found[0]
                break
            time.sleep(0.05)
        self.assertIsNotNone(jsonl, "no records appeared")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        run_dir = jsonl.parent
        run = json.loads((run_dir / "run.json").read_text())
        self.assertEqual(run["status"], "interrupted")
        _, records = results.load(run_dir)
        self.assertGreaterEqual(len(records), 2)
        self.assertLess(len(records), 40)
        self.assertEqual(out.strip().splitlines()[-1], str(run_dir / "report.md"))
        self.assertTrue((run_dir / "report.md").exists())
        self.assertEqual(live_children_mentioning(str(FAKE)), [])


if __name__ == "__main__":
    unittest.main()
