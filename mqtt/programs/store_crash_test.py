#!/usr/bin/env python3
"""kill -9 loop for the broker's durable store (standard library only).

Each round starts ringlab_mqtt_broker on one data directory with
--fsync=always (or the --fsync given here), publishes retained QoS 1 messages as fast as PUBACKs come
back (a window of them in flight), and kills the broker with SIGKILL at a
random point. A persistent session (Clean Session 0, subscribed to the
same topics, offline while they are published) gets every one of them
queued. The next round restarts the broker on the same directory and
checks that every retained message whose PUBACK arrived is there, with its
payload, and that the persistent session is still present and receives
every PUBACKed message (at least once). The store is written before the
PUBACK is staged, and with fsync=batch the PUBACK waits for the group
commit that covers the message, so under either policy a PUBACKed message
must survive.

  store_crash_test.py --broker=build/ci/mqtt/ringlab_mqtt_broker --rounds=5
  store_crash_test.py --broker=... --fsync=batch --fsync_batch_ms=20

Exit codes: 0 pass, 1 failure, 77 skipped (no broker binary).
"""

import argparse
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(client_id, clean):
    flags = 0x02 if clean else 0x00
    body = mqtt_str("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    return packet(0x10, body + mqtt_str(client_id))


class Conn:
    """A blocking MQTT 3.1.1 connection with a frame reader."""

    def __init__(self, port, client_id, clean=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.sock.sendall(connect(client_id, clean))
        kind, body = self.read(5)
        if kind != 0x20 or body[1] != 0:
            raise RuntimeError("CONNACK refused: %r" % body)
        self.session_present = bool(body[0] & 1)

    def read(self, timeout):
        """One frame as (first byte, body), or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return None
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.buf += data

    def _parse(self):
        if len(self.buf) < 2:
            return None
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(self.buf) < i + n:
            return None
        first, body = self.buf[0], self.buf[i:i + n]
        self.buf = self.buf[i + n:]
        return first, body

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


FSYNC_FLAGS = ["--fsync=always"]


def start_broker(binary, data_dir):
    proc = subprocess.Popen(
        [binary, "--listen=127.0.0.1:0", "--data-dir=" + data_dir] +
        FSYNC_FLAGS +
        ["--max_connections=64",
         # The checker gets every retained message on one subscription.
         "--max_queued_messages=1000000", "--max_queued_bytes=1000000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError("broker did not start: %r %s" %
                           (line, proc.stderr.read()))
    return proc, int(line.split(":")[-1])


def stop_broker(proc, sig):
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.stderr.read()


def read_retained(port, filter_, expected):
    """Topic -> payload of the retained messages matching filter_."""
    c = Conn(port, "checker", clean=True)
    c.sock.sendall(packet(0x82, struct.pack("!H", 1) + mqtt_str(filter_) +
                          bytes([1])))
    got = {}
    while True:
        frame = c.read(2.0 if len(got) < expected else 0.3)
        if frame is None:
            break
        first, body = frame
        if first >> 4 != 3:
            continue
        qos = (first >> 1) & 3
        tlen = struct.unpack("!H", body[:2])[0]
        topic = body[2:2 + tlen].decode()
        rest = body[2 + tlen:]
        if qos:
            c.sock.sendall(packet(0x40, rest[:2]))
            rest = rest[2:]
        got[topic] = rest
    c.close()
    return got


def drain_session(port, client_id):
    """Resumes a persistent session; returns (session present, topics of
    the QoS 1 messages it received, each acknowledged)."""
    c = Conn(port, client_id, clean=False)
    present = c.session_present
    topics = set()
    while True:
        frame = c.read(1.0)
        if frame is None:
            break
        first, body = frame
        if first >> 4 != 3:
            continue
        tlen = struct.unpack("!H", body[:2])[0]
        topics.add(body[2:2 + tlen].decode())
        if (first >> 1) & 3:
            c.sock.sendall(packet(0x40, body[2 + tlen:4 + tlen]))
    # DISCONNECT, so the PUBACKs above are read before the socket closes.
    c.sock.sendall(bytes([0xE0, 0]))
    time.sleep(0.05)
    c.close()
    return present, topics


def publish_until_killed(port, proc, round_no, kill_after_s, rng):
    """Publishes retained QoS 1 messages; SIGKILLs the broker after
    kill_after_s. Returns {topic: payload} of the PUBACKed ones."""
    c = Conn(port, "pub-%d" % round_no)
    acked, pending = {}, {}
    next_id, k = 1, 0
    deadline = time.monotonic() + kill_after_s
    window = rng.choice([1, 8, 32])
    try:
        while time.monotonic() < deadline:
            while len(pending) < window:
                topic = "crash/%d/%d" % (round_no, k)
                payload = ("r%d-m%d-" % (round_no, k)).encode() * 4
                pid = next_id
                next_id = next_id % 65535 + 1
                c.sock.sendall(packet(0x33, mqtt_str(topic) +
                                      struct.pack("!H", pid) + payload))
                pending[pid] = (topic, payload)
                k += 1
            frame = c.read(max(0.0, deadline - time.monotonic()))
            if frame is None:
                break
            first, body = frame
            if first >> 4 == 4:  # PUBACK
                pid = struct.unpack("!H", body[:2])[0]
                if pid in pending:
                    topic, payload = pending.pop(pid)
                    acked[topic] = payload
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # PUBACKs already in our socket buffer count too: the broker sent
        # them before it died.
        try:
            while True:
                frame = c.read(0.2)
                if frame is None:
                    break
                first, body = frame
                if first >> 4 == 4:
                    pid = struct.unpack("!H", body[:2])[0]
                    if pid in pending:
                        topic, payload = pending.pop(pid)
                        acked[topic] = payload
        except (ConnectionError, OSError):
            pass
        c.close()
    return acked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--fsync", choices=["always", "batch"], default="always")
    ap.add_argument("--fsync_batch_ms", type=int, default=10)
    args = ap.parse_args()
    FSYNC_FLAGS[:] = ["--fsync=" + args.fsync,
                      "--fsync_batch_ms=%d" % args.fsync_batch_ms]
    if not os.access(args.broker, os.X_OK):
        print("SKIP: no broker binary at %s" % args.broker)
        return 77
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print("seed %d, fsync=%s" % (seed, args.fsync))
    data_dir = tempfile.mkdtemp(prefix="ringlab_store_crash.")
    failures = 0
    expected = {}
    undelivered = set()  # PUBACKed, not yet seen by the durable session
    proc = None
    try:
        proc, port = start_broker(args.broker, data_dir)
        # A persistent session, made before any kill.
        s = Conn(port, "durable", clean=False)
        s.sock.sendall(packet(0x82, struct.pack("!H", 1) +
                              mqtt_str("crash/#") + bytes([1])))
        if s.read(5) is None:
            raise RuntimeError("no SUBACK")
        s.close()
        for round_no in range(args.rounds):
            kill_after = rng.uniform(0.02, 0.4)
            acked = publish_until_killed(port, proc, round_no, kill_after, rng)
            expected.update(acked)
            undelivered.update(acked)
            proc, port = start_broker(args.broker, data_dir)
            got = read_retained(port, "crash/#", len(expected))
            missing = [t for t, p in expected.items() if got.get(t) != p]
            present, topics = drain_session(port, "durable")
            undelivered -= topics
            print("round %d: killed after %.0f ms, %d acked (%d in total), "
                  "%d retained after restart, %d missing; session %s, "
                  "%d queued messages received, %d PUBACKed never received" %
                  (round_no, kill_after * 1000, len(acked), len(expected),
                   len(got), len(missing),
                   "present" if present else "LOST", len(topics),
                   len(undelivered)))
            if missing:
                print("  retained missing, e.g. %s" % missing[:5])
                failures += 1
            if undelivered:
                print("  never delivered, e.g. %s" % sorted(undelivered)[:5])
                failures += 1
            if not present:
                failures += 1
            if not expected:
                print("  nothing was acknowledged this round")
        err = stop_broker(proc, signal.SIGTERM)
        proc = None
        for line in err.splitlines():
            if line.startswith("STORE"):
                print("last start: " + line)
        if not expected:
            print("FAIL: no message was ever acknowledged")
            failures += 1
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    print("PASS" if failures == 0 else "FAIL (seed %d)" % seed)
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
