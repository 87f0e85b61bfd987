import json
import shutil
import unittest

from tests.helpers import make_record, tempdir
from ringlab_exp import report, results


def fixture_run(d):
    recs = []
    for rep, jitter in enumerate((1.0, 1.1, 0.9), 1):
        recs.append(make_record(variant="epoll", rep=rep, p50=20 * jitter, p99=60 * jitter))
        recs.append(make_record(variant="uring-fixed", rep=rep, p50=10 * jitter, p99=30 * jitter))
        recs.append(make_record(program="sockperf", variant="blocking", rep=rep, p50=25 * jitter,
                                p99=70 * jitter))
        recs.append(make_record(variant="uring-sqpoll", rep=rep, status="skipped",
                                reason="unsupported here (exit 3): no SQPOLL"))
        for rate, mps in ((1000, 1000), (5000, 4990), (20000, 12000)):
            recs.append(make_record(variant="epoll", rep=rep, mode="rate", rate_per_s=rate,
                                    mps=mps, case_id=f"udp-64B-c1-rate-r{rate}-epoll"))
    run = {"run_id": "t/1", "suite": "t", "status": "complete", "case_count": 8,
           "repetitions": 3, "order": "interleaved", "topology": "loopback",
           "pinning": {"server_cpu": 0, "client_cpu": 1, "enabled": True}}
    results.write_json(d / "results.json", {"schema": "ringlab.results/1", "run": run,
                                            "records": recs})
    return recs


class Report(unittest.TestCase):
    def test_table_ratios_and_metadata_without_gnuplot(self):
        d = tempdir(self)
        fixture_run(d)
        path = report.write_report(d, gnuplot="")
        text = path.read_text()
        self.assertIn("Plots were skipped: gnuplot is not installed", text)
        self.assertIn("### UDP 64 B, 1 conn, pingpong", text)
        self.assertIn("| p50 vs sockperf:blocking |", text)
        summary = text.split("### UDP 64 B, 1 conn, pingpong\n")[1].split("###")[0]
        rows = {l.split("|")[1].strip(): l for l in summary.splitlines()
                if l.startswith("| `")}
        # uring-fixed is best: ratio 1.00 vs best. The host's speed moved all
        # implementations together in each repetition (jitter 1.0, 1.1, 0.9),
        # so the paired ratio vs sockperf is exactly 10/25 = 0.40 in every
        # repetition: no spread, significant (bold). The unpaired range would
        # have been [9/27.5, 11/22.5] = 0.33..0.49.
        uf = rows["`ringlab_pingpong:uring-fixed`"]
        self.assertIn("10.0 (9.0..11.0)", uf)
        self.assertIn("| **0.40** |", uf)
        ep = rows["`ringlab_pingpong:epoll`"]
        self.assertIn("| **2.00** |", ep)   # p50 vs best
        self.assertIn("paired ratio", text)
        self.assertIn("Best p50: `ringlab_pingpong:uring-fixed`", text)
        self.assertIn("unsupported here (exit 3): no SQPOLL", text)
        self.assertIn("| 1,2,3 |", text)
        self.assertIn("| liburing | 2.3-3 |", text)
        self.assertIn("edge_triggered", text)
        self.assertIn("@ 20000/s", text)

    @unittest.skipUnless(shutil.which("gnuplot"), "gnuplot not installed")
    def test_plots_with_gnuplot(self):
        d = tempdir(self)
        fixture_run(d)
        text = report.write_report(d).read_text()
        self.assertNotIn("Some plots failed", text)
        pngs = sorted(p.name for p in (d / "plots").glob("*.png"))
        self.assertTrue(any(p.startswith("latency-") for p in pngs), pngs)
        self.assertTrue(any(p.startswith("rate-") for p in pngs), pngs)
        self.assertIn("kernel-entries.png", pngs)
        for p in pngs:
            self.assertIn(f"plots/{p}", text)
            self.assertEqual((d / "plots" / p).read_bytes()[:4], b"\x89PNG")

    def test_paired_spread_and_significance(self):
        d = tempdir(self)
        recs = []
        # b is 3% slower in reps 1-2 and 8% faster in rep 3: spread includes 1.
        # c is 20% slower in every repetition although the host's speed moves
        # 30% between repetitions: significant by pairing.
        for rep, (host, b_rel) in enumerate(((1.0, 1.03), (1.3, 1.03), (0.9, 0.92)), 1):
            recs.append(make_record(variant="epoll", rep=rep, p50=20 * host, p99=40 * host))
            recs.append(make_record(variant="uring", rep=rep, p50=20 * host * b_rel,
                                    p99=40 * host * b_rel))
            recs.append(make_record(variant="uring-busy", rep=rep, p50=24 * host,
                                    p99=48 * host))
        results.write_json(d / "results.json", {"run": {"status": "complete"}, "records": recs})
        text = report.write_report(d, gnuplot="").read_text()
        summary = text.split("## Summary")[1].split("## Plots")[0]
        rows = {l.split("|")[1].strip(): l.split("|") for l in summary.splitlines()
                if l.startswith("| `")}
        head = next(l.split("|") for l in summary.splitlines() if l.startswith("| implementation"))
        col = [c.strip() for c in head].index("p50 vs best")
        self.assertEqual(rows["`ringlab_pingpong:uring`"][col].strip(), "1.03 (0.92..1.03)")
        self.assertEqual(rows["`ringlab_pingpong:uring-busy`"][col].strip(), "**1.20**")
        self.assertEqual(rows["`ringlab_pingpong:epoll`"][col].strip(), "1.00")

    def test_empty_run(self):
        d = tempdir(self)
        results.write_json(d / "results.json", {"run": {"status": "interrupted"}, "records": []})
        text = report.write_report(d, gnuplot="").read_text()
        self.assertIn("interrupted", text)


class ResultFolders(unittest.TestCase):
    def test_never_overwrites(self):
        root = tempdir(self)
        first = results.create_run_dir(root, "quick", "20250101T000000Z", "h")
        (first / "records.jsonl").write_text("keep\n")
        second = results.create_run_dir(root, "quick", "20250101T000000Z", "h")
        third = results.create_run_dir(root, "quick", "20250101T000000Z", "h")
        self.assertEqual(len({first, second, third}), 3)
        self.assertEqual(second.name, "20250101T000000Z-h-2")
        self.assertEqual((first / "records.jsonl").read_text(), "keep\n")

    def test_load_folder_jsonl_and_torn_last_line(self):
        d = tempdir(self)
        w = results.RecordWriter(d)
        w.write(make_record(rep=1))
        w.write(make_record(rep=2))
        w.close()
        with open(d / "records.jsonl", "a") as f:
            f.write('{"case_id": "torn')    # a run killed mid-write
        run, recs = results.load(d)
        self.assertEqual([r["repetition"] for r in recs], [1, 2])
        run, recs = results.load(d / "records.jsonl")
        self.assertEqual(len(recs), 2)
        (d / "list.json").write_text(json.dumps(recs))
        self.assertEqual(len(results.load(d / "list.json")[1]), 2)


if __name__ == "__main__":
    unittest.main()
