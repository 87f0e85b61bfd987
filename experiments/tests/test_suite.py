import unittest

from tests.helpers import tempdir, write_suite
from ringlab_exp import suite as suite_mod
from ringlab_exp.suite import SuiteError, load_registry, load_suite

PRESETS = ["epoll", "epoll-busy", "uring", "uring-fixed", "uring-sqpoll", "uring-busy"]

BASE = """
[suite]
name = "t"
repetitions = 2

[[matrix]]
program = "ringlab_pingpong"
variants = ["epoll", "uring"]
protocols = ["udp", "tcp"]
payloads = [16, 64, 1024]
"""


class ShippedSuites(unittest.TestCase):
    def setUp(self):
        self.registry = load_registry()

    def test_bare_name_ignores_a_directory_of_that_name(self):
        # Regression: `ringlab run mqtt` from the repository root resolved to
        # the mqtt/ module directory instead of experiments/suites/mqtt.toml.
        import os
        d = tempdir(self)
        (d / "mqtt").mkdir()
        old = os.getcwd()
        os.chdir(d)
        self.addCleanup(os.chdir, old)
        self.assertEqual(suite_mod.resolve_suite_path("mqtt"),
                         suite_mod.SUITES_DIR / "mqtt.toml")

    def test_every_shipped_suite_loads(self):
        for path in sorted(suite_mod.SUITES_DIR.glob("*.toml")):
            with self.subTest(suite=path.stem):
                s = load_suite(path.stem, self.registry, cpu_count=2)
                self.assertEqual(s.name, path.stem)
                self.assertGreater(len(s.cases), 0)

    def test_quick_covers_every_preset_and_sockperf_both_ways(self):
        s = load_suite("quick", self.registry, cpu_count=2)
        impls = {(c.protocol, c.implementation) for c in s.cases}
        for proto in ("udp", "tcp"):
            for p in PRESETS:
                self.assertIn((proto, f"ringlab_pingpong:{p}"), impls)
            for v in ("blocking", "nonblocked"):
                self.assertIn((proto, f"sockperf:{v}"), impls)
        self.assertTrue(all(c.payload_bytes == 64 for c in s.cases))
        self.assertEqual((s.server_cpu, s.client_cpu), (0, 1))
        self.assertTrue(all(c.skip_reason is None for c in s.cases))

    def test_multihost_uses_veth(self):
        self.assertEqual(load_suite("multihost", self.registry, 2).topology, "netns-veth")

    def test_single_cpu_disables_pinning(self):
        s = load_suite("quick", self.registry, cpu_count=1)
        self.assertFalse(s.pin)
        self.assertIsNone(s.server_cpu)


class Expansion(unittest.TestCase):
    def setUp(self):
        self.registry = load_registry()
        self.dir = tempdir(self)

    def load(self, text):
        return load_suite(write_suite(self.dir, text), self.registry, cpu_count=2)

    def test_cross_product(self):
        s = self.load(BASE)
        self.assertEqual(len(s.cases), 2 * 2 * 3)
        self.assertEqual(len({c.case_id for c in s.cases}), 12)
        self.assertIn("tcp-1024B-c1-pingpong-ringlab_pingpong-uring",
                      [c.case_id for c in s.cases])
        self.assertEqual(s.repetitions, 2)

    def test_rate_and_burst_axes(self):
        s = self.load(BASE.replace('payloads = [16, 64, 1024]',
                                   'modes = ["rate", "burst"]\nrates = [1000, 2000.5]\n'
                                   'inflight = [4, 8, 16]\nduration_s = 2'))
        rate = [c for c in s.cases if c.mode == "rate"]
        burst = [c for c in s.cases if c.mode == "burst"]
        self.assertEqual(len(rate), 2 * 2 * 2)
        self.assertEqual(len(burst), 2 * 2 * 3)
        self.assertEqual({c.rate_per_s for c in rate}, {1000.0, 2000.5})
        # Rate mode: samples follow rate x duration.
        self.assertEqual({c.samples for c in rate}, {2000, 4001})
        self.assertIn("udp-64B-c1-rate-r2000.5-ringlab_pingpong-epoll", [c.case_id for c in rate])

    def test_variants_all_excludes_auto(self):
        s = self.load(BASE.replace('variants = ["epoll", "uring"]', 'variants = "all"'))
        self.assertEqual(sorted({c.variant for c in s.cases}), sorted(PRESETS))

    def test_unsupported_combination_is_kept_with_skip_reason(self):
        s = self.load("""
[suite]
name = "t"
[[matrix]]
program = "sockperf"
protocols = ["udp"]
connections = [1, 10]
modes = ["pingpong", "rate"]
rates = [1000]
""")
        by_id = {c.case_id: c for c in s.cases}
        self.assertIsNone(by_id["udp-64B-c1-pingpong-sockperf-blocking"].skip_reason)
        self.assertIn("at most 1", by_id["udp-64B-c10-pingpong-sockperf-blocking"].skip_reason)
        self.assertIn("mode rate", by_id["udp-64B-c1-rate-r1000-sockperf-nonblocked"].skip_reason)

    def test_defaults_apply_and_blocks_override(self):
        s = self.load("""
[suite]
name = "t"
[defaults]
samples = 123
payloads = [32]
[[matrix]]
program = "ringlab_pingpong"
variants = ["epoll"]
protocols = ["udp"]
[[matrix]]
program = "ringlab_pingpong"
variants = ["uring"]
protocols = ["udp"]
samples = 7
""")
        self.assertEqual([(c.variant, c.samples, c.payload_bytes) for c in s.cases],
                         [("epoll", 123, 32), ("uring", 7, 32)])


class Errors(unittest.TestCase):
    def setUp(self):
        self.registry = load_registry()
        self.dir = tempdir(self)

    def error(self, text):
        path = write_suite(self.dir, text)
        with self.assertRaises(SuiteError) as cm:
            load_suite(path, self.registry, cpu_count=2)
        return str(cm.exception), str(path)

    def test_toml_syntax_error_names_file_and_line(self):
        msg, path = self.error('[suite]\nname = "t"\nrepetitions = = 3\n')
        self.assertIn(f"{path}:3:", msg)
        self.assertIn("TOML syntax error", msg)
        self.assertIn("repetitions = = 3", msg)

    def test_unknown_key_names_line_and_key_path(self):
        text = BASE + """
[[matrix]]
program = "ringlab_pingpong"
protocols = ["udp"]
payloadz = [64]
"""
        msg, path = self.error(text)
        line = text.splitlines().index("payloadz = [64]") + 1
        self.assertIn(f"{path}:{line}:", msg)
        self.assertIn("matrix[2].payloadz: unknown key", msg)
        self.assertIn("payloads", msg)  # the valid keys are listed

    def test_wrong_type_names_key_path(self):
        msg, _ = self.error(BASE.replace("payloads = [16, 64, 1024]", 'payloads = [16, "x"]'))
        self.assertIn("matrix[1].payloads[1]", msg)

    def test_payload_below_minimum(self):
        msg, _ = self.error(BASE.replace("[16, 64, 1024]", "[8]"))
        self.assertIn("minimum payload of 16", msg)

    def test_unknown_preset_lists_valid_ones(self):
        msg, path = self.error(BASE.replace('"uring"]', '"uring-turbo"]'))
        self.assertIn("unknown preset 'uring-turbo'", msg)
        for p in PRESETS:
            self.assertIn(p, msg)
        line = BASE.splitlines().index('variants = ["epoll", "uring"]') + 1
        self.assertIn(f"{path}:{line}:", msg)

    def test_unknown_program_lists_valid_ones(self):
        msg, _ = self.error(BASE.replace('"ringlab_pingpong"', '"netperf"'))
        self.assertIn("unknown program 'netperf'", msg)
        self.assertIn("ringlab_pingpong", msg)
        self.assertIn("sockperf", msg)

    def test_unknown_mode_and_protocol(self):
        msg, _ = self.error(BASE + 'mode = "flood"\n')
        self.assertIn("unknown mode 'flood'", msg)
        msg, _ = self.error(BASE.replace('["udp", "tcp"]', '["sctp"]'))
        self.assertIn("unknown protocol 'sctp'", msg)

    def test_rate_mode_needs_rates(self):
        msg, _ = self.error(BASE + 'mode = "rate"\n')
        self.assertIn("needs 'rates'", msg)

    def test_missing_suite_table_and_matrix(self):
        msg, _ = self.error('[defaults]\nsamples = 1\n')
        self.assertIn("missing [suite] table", msg)
        msg, _ = self.error('[suite]\nname = "t"\n')
        self.assertIn("[[matrix]]", msg)

    def test_duplicate_cases_across_blocks(self):
        msg, _ = self.error(BASE + BASE.split("\n", 5)[-1].replace("[suite]", ""))
        self.assertIn("also produced by", msg)

    def test_nonexistent_cpu(self):
        msg, _ = self.error(BASE.replace("repetitions = 2", "repetitions = 2\nclient_cpu = 7"))
        self.assertIn("cpu 7 does not exist", msg)

    def test_unknown_suite_name_lists_suites(self):
        with self.assertRaises(SuiteError) as cm:
            load_suite("nope", self.registry)
        self.assertIn("quick", str(cm.exception))


class Registry(unittest.TestCase):
    def test_bad_parser_name(self):
        d = tempdir(self)
        path = d / "reg.toml"
        text = (suite_mod.REGISTRY_PATH.read_text()
                .replace('parser = "sockperf"', 'parser = "nosuch"'))
        path.write_text(text)
        with self.assertRaises(SuiteError) as cm:
            load_registry(path)
        self.assertIn("unknown parser 'nosuch'", str(cm.exception))
        self.assertIn("ringlab_json", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
