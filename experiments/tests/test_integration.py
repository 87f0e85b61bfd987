"""End to end against the real bench/ringlab_pingpong (and sockperf when
installed). Skips when no build has the binary: set RINGLAB_BUILD_DIR to a
build tree (ctest does), or build <repo>/build/release."""

import os
import pathlib
import unittest

from tests.helpers import tempdir
from ringlab_exp import results, runner, schema

BUILD = runner.default_build_dir(runner.REPO_DIR)
BINARY = BUILD / "bench" / "ringlab_pingpong"


@unittest.skipUnless(BINARY.exists(), f"no {BINARY} (set RINGLAB_BUILD_DIR to a build "
                     "with target ringlab_pingpong)")
class RealBinaries(unittest.TestCase):
    def test_smoke_suite(self):
        d = tempdir(self)
        opts = runner.RunOptions(suite="smoke", build_dir=BUILD, results_root=d, build=False,
                                 repetitions=1, progress=None)
        run_dir = runner.run_suite(opts)
        run, records = results.load(run_dir)
        self.assertEqual(run["status"], "complete")
        self.assertEqual(len(records), len(run["binaries"]) and run["case_count"])
        for r in records:
            self.assertEqual(schema.validate_record(r), [], r["case_id"])
            self.assertNotEqual(r["status"], "failed", f"{r['case_id']}: {r['reason']}\n"
                                f"{r['stderr_tail']}")
        ours = [r for r in records if r["program"] == "ringlab_pingpong" and r["status"] == "ok"]
        self.assertTrue(any(r["variant"] == "epoll" for r in ours))
        for r in ours:
            rtt = r["rtt_us"]
            self.assertGreater(rtt["p50"], 0)
            self.assertLessEqual(rtt["p50"], rtt["p99"])
            self.assertLessEqual(rtt["p99"], rtt["max"])
            self.assertEqual(r["samples"], 2000)
            self.assertIsNotNone(r["kernel_entries_per_msg"])
            self.assertEqual(r["backend_effective"], r["variant"])
            self.assertTrue(r["flags"])
        self.assertTrue((run_dir / "report.md").exists())


if __name__ == "__main__":
    unittest.main()
