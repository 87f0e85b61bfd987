"""The report's protocol sections (DDS, MQTT, reliable UDP), the bulk summary
table, and their plots, on a synthetic run with every family
(tests/helpers.protocol_records: known ratios, a host that changes speed
between repetitions)."""

import json
import re
import shutil
import unittest

from tests.helpers import FAKE, make_record, proto_record, protocol_records, tempdir
from ringlab_exp import protocols, report


def section(text, title):
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 4)
    return text[start:end if end > 0 else None]


def table_row(text, *needles):
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and all(n in ln for n in needles)]
    if len(rows) != 1:
        raise AssertionError(f"{len(rows)} rows with {needles}")
    return [c.strip() for c in rows[0].strip("|").split("|")]


def header(text, first):
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def cell(text, column, *needles):
    head = header(text, "scenario")
    return table_row(text, *needles)[head.index(column)]


class ProtocolSections(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = report.render({"suite": "t"}, protocol_records(), [])

    def test_sections_appear_before_the_summary_in_family_order(self):
        t = self.text
        self.assertLess(t.index("\n## DDS\n"), t.index("\n## MQTT\n"))
        self.assertLess(t.index("\n## MQTT\n"), t.index("\n## Reliable UDP\n"))
        self.assertLess(t.index("\n## Reliable UDP\n"), t.index("\n## Summary\n"))

    def test_no_section_without_its_records(self):
        text = report.render({}, [make_record(rep=k) for k in (1, 2)], [])
        for title in ("## DDS", "## MQTT", "## Reliable UDP"):
            self.assertNotIn(title, text)

    def test_dds_table(self):
        dds = section(self.text, "DDS")
        self.assertEqual(header(dds, "scenario")[3:], [
            "p50 µs", "p99 µs", "p50 vs `ddsperf:listener`", "p50 vs our epoll",
            "DDS / raw UDP p50", "CPU µs/sample", "kernel entries/sample"])
        fixed = ("`ringlab_dds_pingpong:uring-fixed`",)
        self.assertEqual(cell(dds, "p50 µs", *fixed), "19.0 (17.1..24.7)")
        # Paired: the host's 1.3x repetition cancels in every ratio.
        self.assertEqual(cell(dds, "p50 vs `ddsperf:listener`", *fixed), "**0.63**")
        self.assertEqual(cell(dds, "p50 vs our epoll", *fixed), "**0.90**")
        self.assertEqual(cell(dds, "DDS / raw UDP p50", *fixed), "**1.06**")
        self.assertEqual(cell(dds, "DDS / raw UDP p50", "`ringlab_dds_pingpong:uring-busy`"),
                         "**1.20**")
        self.assertEqual(cell(dds, "kernel entries/sample", *fixed), "4.00")
        peer = ("| `ddsperf:listener` |",)
        self.assertEqual(cell(dds, "DDS / raw UDP p50", *peer), "–")
        self.assertEqual(cell(dds, "kernel entries/sample", *peer), "–")

    def test_dds_without_raw_udp_rows_says_so(self):
        recs = [r for r in protocol_records() if r["protocol"] != "udp"]
        dds = section(report.render({}, recs, []), "DDS")
        self.assertIn("no `ringlab_pingpong` UDP row", dds)

    def test_mqtt_round_trip_and_fans(self):
        mqtt = section(self.text, "MQTT")
        self.assertIn("### Round trip", mqtt)
        trip = mqtt[:mqtt.index("### Fan-in")]
        self.assertEqual(cell(trip, "p50 vs `mosquitto:default`", "qos=1",
                              "`ringlab_mqtt_broker:uring-fixed`"), "**0.57**")
        fan = mqtt[mqtt.index("### Fan-in"):]
        row = ("pattern=fanout", "100 conn", "`ringlab_mqtt_broker:uring-fixed`")
        self.assertEqual(cell(fan, "msg/s vs `mosquitto:default`", *row), "**2.67**")
        self.assertEqual(cell(fan, "broker CPU vs `mosquitto:default`", *row), "**0.33**")
        self.assertEqual(cell(fan, "connections open", *row), "101")
        msgs = float(cell(fan, "msg/s", *row).split()[0].replace(",", ""))
        dels = float(cell(fan, "deliveries/s", *row).split()[0].replace(",", ""))
        self.assertAlmostEqual(dels / msgs, 100, delta=0.1)
        # fan-in rows come before fan-out, each sorted by connections
        self.assertLess(fan.index("pattern=fanin"), fan.index("pattern=fanout"))
        self.assertLess(fan.index("100 conn, burst, 8 in flight, pattern=fanin"),
                        fan.index("1000 conn, burst, 8 in flight, pattern=fanin"))

    def test_mqtt_ack_columns_only_where_the_bench_timed_acks(self):
        fan = section(self.text, "MQTT")
        fan = fan[fan.index("### Fan-in"):]
        self.assertNotIn("ack p50 µs", header(fan, "scenario"))
        recs = []
        for rep in (1, 2, 3):
            for variant, ack in (("memory", 120.0), ("batch", 6700.0)):
                r = proto_record("ringlab_mqtt_durable", variant, "mqtt", rep, mode="rate",
                                 rate=20000, connections=100, p50=100.0,
                                 params={"qos": 1, "pattern": "fanin"})
                r["program_result"] = {"ack_us": {"p50": ack * rep, "p99": 2 * ack * rep}}
                recs.append(r)
        text = section(report.render({"suite": "t"}, recs, []), "MQTT")
        self.assertIn("ack p50/p99", text)
        self.assertEqual(cell(text, "ack p50 µs", "`ringlab_mqtt_durable:batch`"),
                         "13,400 (6,700..20,100)")
        self.assertEqual(cell(text, "ack p99 µs", "`ringlab_mqtt_durable:memory`"),
                         "480.0 (240.0..720.0)")

    def test_reliable_udp_round_trip_and_goodput(self):
        rudp = section(self.text, "Reliable UDP")
        trip = rudp[:rudp.index("### Bulk")]
        self.assertEqual(cell(trip, "p50 vs `enet:default`", "`ringlab_rudp_bench:uring-fixed`"),
                         "**0.63**")
        bulk = rudp[rudp.index("### Bulk"):]
        row = ("direction=upload, loss_pct=5", "`ringlab_rudp_bench:uring-fixed`")
        self.assertEqual(cell(bulk, "goodput vs `enet:default`", *row), "**4.28**")
        self.assertEqual(cell(bulk, "goodput vs our epoll", *row), "**1.10**")
        self.assertEqual(cell(bulk, "goodput MB/s", *row), "73.33 (56.41..81.48)")
        self.assertEqual(cell(bulk, "retransmission ratio", *row), "0.055")
        self.assertEqual(cell(bulk, "client entries/MB", *row), "15.0")
        self.assertEqual(cell(bulk, "client entries/MB", "direction=upload, loss_pct=5",
                              "`enet:default`"), "–")
        # loss rates in numeric order within a direction
        up = [ln for ln in bulk.splitlines() if "direction=upload" in ln and "enet" in ln]
        self.assertEqual([ln.split("loss_pct=")[1].split(" ")[0] for ln in up],
                         ["0", "1", "5", "20"])
        self.assertIn("CPU per MB sources: client: program (client, transfer)", bulk)

    def test_summary_of_a_bulk_scenario_has_bulk_columns(self):
        summary = section(self.text, "Summary")
        start = summary.index("### RUDP 65536 B, 1 conn, bulk, bytes=104857600, "
                              "direction=upload, loss_pct=5")
        part = summary[start:summary.index("\n### ", start + 4)]
        self.assertIn("| implementation | ok/reps | goodput MB/s |", part)
        self.assertNotIn("p50 µs", part)


# A DDS program of ours as the RTPS helper registers it, played by the fake
# ping-pong over UDP (it speaks the same client contract).
DDS_ENTRY = f"""
[programs.ringlab_dds_pingpong]
kind = "ours"
binary = "{FAKE}"
variants = ["epoll", "uring-fixed"]
protocols = ["dds"]
modes = ["pingpong"]
pin = "flag"
pin_args = ["--cpu={{cpu}}"]
port = "auto"
ready = '^READY (?P<address>\\S+)\\s*$'
parser = "ringlab_json"
stop_signal = "SIGINT"
rtt = "full"
params = {{ reliability = ["reliable", "best-effort"] }}
server = ["{{binary}}", "server", "--proto=udp", "--backend={{variant}}",
          "--bind={{server_host}}:0", "{{server_pin}}"]
client = ["{{binary}}", "client", "--proto=udp", "--backend={{variant}}",
          "--server={{server_address}}", "--samples={{samples}}", "--warmup={{warmup}}",
          "{{client_pin}}", "--json={{client_json}}"]
"""

DDS_SUITE = """
[suite]
name = "dds-check"
repetitions = 2
pause_s = 0
calibrate = false
[defaults]
samples = 200
warmup = 20
[[matrix]]
program = "ringlab_pingpong"
variants = ["epoll", "uring-fixed"]
protocols = ["udp"]
[[matrix]]
program = "ringlab_dds_pingpong"
variants = ["epoll", "uring-fixed"]
protocols = ["dds"]
params = { reliability = ["reliable"] }
[[target]]
name = "DDS over raw UDP"
metric = "p50"
a = { program = "ringlab_dds_pingpong" }
b = { program = "ringlab_pingpong", protocol = "udp" }
max = 100
"""


class DdsSectionFromARun(unittest.TestCase):
    def test_runner_records_fill_the_dds_table_and_the_target(self):
        from ringlab_exp import results, runner, suite as suite_mod
        from tests.helpers import write_suite
        d = tempdir(self)
        reg = d / "registry.toml"
        # The real registry has the real ringlab_dds_pingpong: replace it by
        # the fake one (TOML forbids declaring a table twice).
        real = re.sub(r"(?ms)^\[programs\.ringlab_dds_pingpong(\.[^\]]+)?\]\n.*?(?=^\[(?!programs\.ringlab_dds_pingpong)|\Z)",
                      "", suite_mod.REGISTRY_PATH.read_text())
        reg.write_text(real + DDS_ENTRY)
        opts = runner.RunOptions(suite=str(write_suite(d, DDS_SUITE)), results_root=d / "r",
                                 build=False, registry_path=reg, progress=None,
                                 binaries={"ringlab_pingpong": str(FAKE)})
        run_dir = runner.run_suite(opts)
        _, records = results.load(run_dir)
        self.assertEqual({r["status"] for r in records}, {"ok"},
                         [r["reason"] for r in records])
        text = (run_dir / "report.md").read_text()
        dds = section(text, "DDS")
        for variant in ("epoll", "uring-fixed"):
            ratio = cell(dds, "DDS / raw UDP p50", f"`ringlab_dds_pingpong:{variant}`")
            self.assertRegex(ratio, r"^\**\d+\.\d\d")
        targets = section(text, "Targets")
        self.assertEqual(targets.count("| DDS over raw UDP |"), 2)   # one row per preset
        self.assertIn("variant `uring-fixed`", targets)


@unittest.skipUnless(shutil.which("gnuplot"), "gnuplot not installed")
class ProtocolPlots(unittest.TestCase):
    def test_mqtt_cpu_and_goodput_plots(self):
        d = tempdir(self)
        (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                 for r in protocol_records()))
        text = report.write_report(d).read_text()
        self.assertIn("MQTT broker CPU per delivery vs connections, MQTT 64 B, burst, 8 in "
                      "flight, pattern=fanin, qos=0", text)
        self.assertIn("Goodput vs loss, RUDP 65536 B chunks, bytes=104857600, "
                      "direction=upload", text)
        self.assertNotIn("Some plots failed", text)
        plots = d / "plots"
        self.assertTrue((plots / "mqtt-cpu-00.png").stat().st_size > 1000)
        self.assertIn("set logscale x", (plots / "mqtt-cpu-00.gp").read_text())
        dat = (plots / "goodput-loss-00.dat").read_text()
        self.assertIn("# enet:default: loss_pct goodput_MB_per_s\n0 ", dat)
        self.assertEqual(len([ln for ln in dat.splitlines() if ln and ln[0].isdigit()]),
                         3 * 4)          # 3 implementations x 4 loss rates
        # no latency plot for transfers, no generic scale plot for MQTT
        self.assertFalse(list(plots.glob("latency-*bulk*")))
        self.assertFalse(list(plots.glob("scale-*mqtt*")))

    def test_a_single_connection_count_or_loss_rate_makes_no_plot(self):
        recs = [r for r in protocol_records()
                if r["connections"] in (1, 100) and (r.get("params") or {}).get("loss_pct")
                in (None, 5)]
        groups = report.scenarios(recs)
        d = tempdir(self)
        jobs = protocols.plot_jobs(groups, d, ["set terminal png", "x"])
        self.assertEqual(jobs, [])


if __name__ == "__main__":
    unittest.main()
