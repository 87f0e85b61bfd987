#!/usr/bin/env python3
"""The durability-cost table of a mqtt-durable run (standard library only).

Reads <run>/records.jsonl of `bin/ringlab run mqtt-durable` and prints, per
implementation, the median msg/s over the repetitions, and the paired
ratios batch / memory, always / memory and mosquitto / memory: each ratio
is taken within one repetition (the cases of a repetition ran back to back,
interleaved), then the median and the min..max of those are shown.

  python3 mqtt/programs/durability_ratios.py results/mqtt-durable/<run>

Exit codes: 0 printed, 1 no usable records.
"""

import json
import os
import statistics
import sys

MEMORY = "ringlab_mqtt_durable:memory"
MEMORY2 = "ringlab_mqtt_durable:memory-threads2"
# (label, implementation, the in-memory row its ratio is taken against)
ROWS = [
    ("ours, in memory", MEMORY, MEMORY),
    ("ours, --fsync=batch", "ringlab_mqtt_durable:batch", MEMORY),
    ("ours, --fsync=always", "ringlab_mqtt_durable:always", MEMORY),
    ("mosquitto, persistence true", "mosquitto_durable:default", MEMORY),
    ("ours, 2 Loops, in memory", MEMORY2, MEMORY),
    ("ours, 2 Loops, --fsync=batch", "ringlab_mqtt_durable:batch-threads2",
     MEMORY2),
]


def load(run_dir):
    by_rep = {}  # repetition -> implementation -> msg/s
    path = os.path.join(run_dir, "records.jsonl")
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if r.get("status") != "ok" or not r.get("messages_per_s"):
                continue
            by_rep.setdefault(r.get("repetition"), {})[
                r.get("implementation")] = float(r["messages_per_s"])
    return by_rep


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip())
        return 1
    by_rep = load(sys.argv[1])
    if not by_rep:
        print("no ok records in %s" % sys.argv[1])
        return 1
    print("| implementation | msg/s (median) | against | ratio (median, min..max) |")
    print("|---|---|---|---|")
    for label, impl, base in ROWS:
        rates = [reps[impl] for reps in by_rep.values() if impl in reps]
        if not rates:
            continue  # not in this run (e.g. an older one)
        ratios = [reps[impl] / reps[base] for reps in by_rep.values()
                  if impl in reps and base in reps]
        rate = "%.0f" % statistics.median(rates)
        if ratios and impl != base:
            ratio = "%.3gx (%.3g..%.3g, n=%d)" % (
                statistics.median(ratios), min(ratios), max(ratios),
                len(ratios))
        else:
            ratio = "1" if impl == base else "-"
        print("| %s | %s | %s | %s |" % (label, rate, base.split(":")[1], ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
