import unittest

from tests.helpers import make_record
from ringlab_exp import compare


def run(p50s, p99s=None, mps=None, variant="epoll", program="ringlab_pingpong"):
    p99s = p99s or [x * 2 for x in p50s]
    mps = mps or [1e6 / x for x in p50s]
    return [make_record(program=program, variant=variant, rep=i + 1, p50=a, p99=b, mps=c)
            for i, (a, b, c) in enumerate(zip(p50s, p99s, mps))]


class Significance(unittest.TestCase):
    def test_rule(self):
        # Disjoint ranges and 20% apart: significant.
        self.assertTrue(compare.significance([10, 11, 12], [14, 15, 16], 0.05)[1])
        # Overlapping ranges: never significant, however far the medians.
        r, sig, why = compare.significance([10, 11, 20], [12, 14, 15], 0.05)
        self.assertFalse(sig)
        self.assertEqual(why, "ranges overlap")
        # Disjoint but only 2% apart: below the threshold.
        r, sig, why = compare.significance([100, 100.5], [102, 102.5], 0.05)
        self.assertFalse(sig)
        self.assertAlmostEqual(r, 102.25 / 100.25)
        # One repetition has no spread: not significant.
        self.assertFalse(compare.significance([10], [20], 0.05)[1])
        self.assertTrue(compare.significance([10], [20], 0.05, min_reps=1)[1])
        self.assertEqual(compare.significance([], [1, 2], 0.05)[0], None)


class Compare(unittest.TestCase):
    def test_same_data_gives_ratio_one_and_nothing_significant(self):
        a = run([20, 21, 22]) + run([10, 10.5, 11], variant="uring")
        rows = compare.compare(a, [dict(r) for r in a])
        self.assertEqual(len(rows), 2)
        for row in rows:
            for name, m in row["metrics"].items():
                self.assertAlmostEqual(m["ratio"], 1.0)
                self.assertFalse(m["significant"])
        text = compare.render(rows, "A", "B")
        self.assertIn("0 significant difference(s)", text)

    def test_clearly_different_data_is_marked(self):
        a = run([20, 21, 22])
        b = run([10, 10.5, 11])   # half the latency, double the throughput
        rows = compare.compare(a, b)
        m = rows[0]["metrics"]
        self.assertAlmostEqual(m["p50"]["ratio"], 0.5)
        self.assertTrue(m["p50"]["significant"])
        self.assertEqual(m["p50"]["verdict"], "better")
        self.assertTrue(m["messages_per_s"]["significant"])
        self.assertEqual(m["messages_per_s"]["verdict"], "better")
        text = compare.render(rows, "A", "B")
        self.assertIn("**0.50 better**", text)
        self.assertIn("3 significant difference(s)", text)
        rows = compare.compare(b, a)
        self.assertEqual(rows[0]["metrics"]["p99"]["verdict"], "worse")

    def test_tail_uses_its_own_threshold(self):
        # p50 and p99 both 7% apart with disjoint ranges: p50 is marked, p99
        # (default tail threshold 10%) is not, unless the threshold is lowered.
        a = run([100, 100.5, 101], p99s=[200, 201, 202])
        b = run([107, 107.5, 108], p99s=[214, 215, 216])
        m = compare.compare(a, b)[0]["metrics"]
        self.assertTrue(m["p50"]["significant"])
        self.assertFalse(m["p99"]["significant"])
        m = compare.compare(a, b, tail_threshold=0.05)[0]["metrics"]
        self.assertTrue(m["p99"]["significant"])

    def test_noisy_data_is_not_marked(self):
        rows = compare.compare(run([10, 20, 30]), run([12, 25, 28]))
        self.assertFalse(any(m["significant"] for m in rows[0]["metrics"].values()))

    def test_failed_reps_are_ignored(self):
        a = run([20, 21, 22]) + [make_record(rep=4, status="failed")]
        rows = compare.compare(a, run([20, 21, 22]))
        self.assertEqual(rows[0]["a_ok"], 3)
        self.assertAlmostEqual(rows[0]["metrics"]["p50"]["ratio"], 1.0)

    def test_cross_variant_within_one_run(self):
        recs = run([20, 21, 22], variant="epoll") + run([10, 10.5, 11], variant="uring-fixed")
        rows = compare.compare(recs, recs, where_a={"variant": "epoll"},
                               where_b={"variant": "uring-fixed"})
        self.assertEqual(len(rows), 1)
        self.assertAlmostEqual(rows[0]["metrics"]["p50"]["ratio"], 0.5)

    def test_unmatched_cases_are_listed(self):
        rows = compare.compare(run([10, 11]), run([10, 11], variant="uring"))
        text = compare.render(rows, "A", "B")
        self.assertIn("Only on one side", text)


if __name__ == "__main__":
    unittest.main()
