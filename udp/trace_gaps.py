#!/usr/bin/env python3
"""Where a bulk transfer's time went: reads the --trace CSVs of
ringlab_rudp_bench (the sender's and, optionally, the receiver's) and
sorts the sender's idle gaps by what ended them.

  udp/trace_gaps.py SENDER.csv [RECEIVER.csv] [--min_gap_us=300]

Prints the distribution of the latest RTT sample and of the smoothed RTT,
the time spent in gaps between two sender loop iterations longer than
--min_gap_us, by cause:
  PTO           the probe timer fired (no ACK in time: a lost tail or ACK)
  sender-timer  another sender timer (pacing, ACK delay, heartbeat)
  ack           an ACK arrived
  datagram-no-ack  a datagram that brought no new ACK (with --loss, most
                are ACKs the receive-side loss dropped on arrival)
  other         anything else (a loop timeout, a send completion)
and, with the receiver's trace, whether the receiver ran at all during the
gap ("receiver-stalled": its own loop was idle or descheduled for at least
70% of the sender's gap, so the ACK could not have come sooner).
Standard library only.
"""
import argparse
import bisect
import csv
import statistics
import sys


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def quantiles(values, points):
    if len(values) < 2:
        return [values[0] if values else 0.0 for _ in points]
    q = statistics.quantiles(values, n=100)
    return [q[p - 1] for p in points]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sender")
    ap.add_argument("receiver", nargs="?")
    ap.add_argument("--min_gap_us", type=float, default=300.0)
    args = ap.parse_args()
    s = load(args.sender)
    if len(s) < 2:
        sys.exit(f"{args.sender}: fewer than two rows")
    r = load(args.receiver) if args.receiver else []
    rt = [float(x["monotonic_us"]) for x in r]

    def f(row, key):
        return float(row[key])

    duration = f(s[-1], "t_us") - f(s[0], "t_us")
    latest = [f(x, "latest_rtt_us") for x in s]
    srtt = [f(x, "srtt_us") for x in s]
    print(f"sender rows {len(s)}, receiver rows {len(r)}, "
          f"duration {duration / 1e3:.1f} ms")
    print("latest RTT us p10/p50/p90/p99: " +
          " / ".join(f"{v:.0f}" for v in quantiles(latest, [10, 50, 90, 99])))
    print("smoothed RTT us p10/p50/p90: " +
          " / ".join(f"{v:.0f}" for v in quantiles(srtt, [10, 50, 90])))
    cats = {}
    for a, b in zip(s, s[1:]):
        gap = f(b, "t_us") - f(a, "t_us")
        if gap < args.min_gap_us:
            continue
        if f(b, "probe_timeouts") > f(a, "probe_timeouts"):
            cause = "PTO"
        elif f(b, "timer_wakeups") > f(a, "timer_wakeups"):
            cause = "sender-timer"
        elif f(b, "acks_received") > f(a, "acks_received"):
            cause = "ack"
        elif f(b, "datagrams_received") > f(a, "datagrams_received"):
            cause = "datagram-no-ack"  # e.g. dropped by --loss on arrival
        else:
            cause = "other"
        if rt:
            t0, t1 = f(a, "monotonic_us"), f(b, "monotonic_us")
            i0 = max(bisect.bisect_left(rt, t0) - 1, 0)
            i1 = min(bisect.bisect_right(rt, t1), len(rt) - 1)
            longest = max((rt[i + 1] - rt[i] for i in range(i0, i1)),
                          default=0.0)
            if longest >= 0.7 * gap:
                cause += ", receiver-stalled"
        n, total = cats.get(cause, (0, 0.0))
        cats[cause] = (n + 1, total + gap)
    print(f"sender gaps >= {args.min_gap_us:.0f} us, by what ended them:")
    for cause, (n, total) in sorted(cats.items(), key=lambda kv: -kv[1][1]):
        print(f"  {cause:28s} {n:6d} gaps {total / 1e3:9.1f} ms "
              f"({100 * total / duration:4.1f}% of the run)")


if __name__ == "__main__":
    main()
