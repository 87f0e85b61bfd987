#!/usr/bin/env python3
"""kill -9 loop for the broker's durable store (standard library only).

Each round starts ringlab_mqtt_broker on one data directory with
--fsync=always (or the --fsync given here), publishes retained QoS 1 (or,
with --qos=2, QoS 2) messages as fast as the acknowledgements come back (a
window of them in flight), and kills the broker with SIGKILL at a random
point. A persistent session (Clean Session 0, subscribed to the same
topics at the same QoS, offline while they are published) gets every one
of them queued. The next round restarts the broker on the same directory
and checks that every retained message whose PUBACK (QoS 2: PUBCOMP)
arrived is there, with its payload, and that the persistent session is
still present and receives every acknowledged message: at least once for
QoS 1, exactly once for QoS 2 (the checker keeps its side of the QoS 2
state across its reconnections, as a client's session must, so a resend
with DUP of a message it has not released yet is not a duplicate; a
message delivered again after its PUBREL is). The store is written before
the acknowledgement is staged, and with fsync=batch it waits for the group
commit that covers the message, so under either policy an acknowledged
message must survive.

With --resend the publisher has a persistent session too and, after each
restart, does what a client must (MQTT-4.4.0-1): it sends again, with DUP
and the same packet id, every PUBLISH that had no PUBREC (or PUBACK) and
the PUBREL of every one that had no PUBCOMP, and counts what completes as
acknowledged. With QoS 2 that checks the broker's side of exactly once
across the crash: a resent PUBLISH whose first copy already reached a
subscriber must not be delivered again.

  store_crash_test.py --broker=build/ci/mqtt/ringlab_mqtt_broker --rounds=5
  store_crash_test.py --broker=... --fsync=batch --fsync_batch_ms=20
  store_crash_test.py --broker=... --qos=2 --fsync=batch
  store_crash_test.py --broker=... --qos=2 --online --resend --fsync=batch
  store_crash_test.py --broker=... --threads=2 --qos=2 --online --resend

With --threads=N the broker runs N Loops on one store (mqtt/README.md,
--threads): the checker's and the publisher's connections land on whichever
Loop the kernel picks, so their sessions move between the Loops (and their
store rows with them) and kills also land in the middle of those moves.

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
import threading
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


class Receiver:
    """The durable subscriber's side of its session, kept across its
    reconnections: every topic delivered so far, and the QoS 2 packet ids
    it answered with PUBREC and has not seen released (MQTT 4.3.3)."""

    def __init__(self):
        self.delivered = set()
        self.awaiting_release = {}  # packet id -> topic
        self.duplicates = []


def drain_session(port, client_id, receiver, until_closed=False):
    """Resumes a persistent session; returns (session present, topics of
    the messages it received this time, each acknowledged). It reads until
    1 s passes without a packet, or with `until_closed` until the broker
    goes away (the subscriber that stays online while the broker is
    killed)."""
    c = Conn(port, client_id, clean=False)
    present = c.session_present
    topics = set()
    while True:
        try:
            frame = c.read(60.0 if until_closed else 1.0)
        except (ConnectionError, OSError):
            if until_closed:
                c.close()
                return present, topics
            raise
        if frame is None:
            break
        first, body = frame
        kind = first >> 4
        if kind == 6:  # PUBREL: the message is ours for good
            pid = body[:2]
            receiver.awaiting_release.pop(struct.unpack("!H", pid)[0], None)
            c.sock.sendall(packet(0x70, pid))
            continue
        if kind != 3:
            continue
        qos = (first >> 1) & 3
        tlen = struct.unpack("!H", body[:2])[0]
        topic = body[2:2 + tlen].decode()
        topics.add(topic)
        if qos == 2:
            pid_bytes = body[2 + tlen:4 + tlen]
            pid = struct.unpack("!H", pid_bytes)[0]
            if receiver.awaiting_release.get(pid) != topic:
                # A new delivery, not the resend of one not yet released.
                if topic in receiver.delivered:
                    receiver.duplicates.append(topic)
                receiver.awaiting_release[pid] = topic
            c.sock.sendall(packet(0x50, pid_bytes))
        elif qos == 1:
            c.sock.sendall(packet(0x40, body[2 + tlen:4 + tlen]))
        receiver.delivered.add(topic)
    # DISCONNECT, so the acknowledgements above are read before the socket
    # closes.
    c.sock.sendall(bytes([0xE0, 0]))
    time.sleep(0.05)
    c.close()
    return present, topics


class Publisher:
    """The publisher's side of its session: the packet ids it has sent and
    not seen acknowledged (pending: no PUBACK / PUBREC yet; released: PUBREL
    sent, no PUBCOMP), kept across the broker's restarts with --resend."""

    def __init__(self, persistent):
        self.persistent = persistent
        self.pending, self.released = {}, {}
        self.next_id = 1


def resend_unacknowledged(port, publisher, qos, timeout_s=10.0):
    """Reconnects the persistent publisher and finishes its exchanges:
    PUBLISH again with DUP for every pending id, PUBREL for every released
    one (MQTT-4.4.0-1). Returns ({topic: payload} completed, number of
    exchanges that did not complete within timeout_s)."""
    c = Conn(port, "pub", clean=False)
    acked = {}
    for pid, (topic, payload) in sorted(publisher.pending.items()):
        c.sock.sendall(packet(0x39 | (qos << 1), mqtt_str(topic) +
                              struct.pack("!H", pid) + payload))
    for pid in sorted(publisher.released):
        c.sock.sendall(packet(0x62, struct.pack("!H", pid)))
    deadline = time.monotonic() + timeout_s
    while publisher.pending or publisher.released:
        frame = c.read(max(0.0, deadline - time.monotonic()))
        if frame is None:
            break
        handle_ack(c, publisher, acked, *frame)
    left = len(publisher.pending) + len(publisher.released)
    c.sock.sendall(bytes([0xE0, 0]))
    time.sleep(0.05)
    c.close()
    return acked, left


def handle_ack(c, publisher, acked, first, body):
    pending, released = publisher.pending, publisher.released
    pid_bytes = body[:2]
    pid = struct.unpack("!H", pid_bytes)[0]
    kind = first >> 4
    if kind == 4 and pid in pending:  # PUBACK
        topic, payload = pending.pop(pid)
        acked[topic] = payload
    elif kind == 5 and pid in pending:  # PUBREC: release it
        released[pid] = pending.pop(pid)
        c.sock.sendall(packet(0x62, pid_bytes))
    elif kind == 7 and pid in released:  # PUBCOMP
        topic, payload = released.pop(pid)
        acked[topic] = payload


def publish_until_killed(port, proc, round_no, kill_after_s, rng, qos,
                         publisher):
    """Publishes retained messages at `qos`; SIGKILLs the broker after
    kill_after_s. Returns {topic: payload} of the acknowledged ones (PUBACK,
    or for QoS 2 PUBCOMP); what was not acknowledged stays in
    `publisher`."""
    if publisher.persistent:
        c = Conn(port, "pub", clean=False)
    else:
        c = Conn(port, "pub-%d" % round_no)
        publisher.pending.clear()
        publisher.released.clear()
    acked, pending, released = {}, publisher.pending, publisher.released
    k = 0
    deadline = time.monotonic() + kill_after_s
    window = rng.choice([1, 8, 32])

    def handle(first, body):
        handle_ack(c, publisher, acked, first, body)

    try:
        while time.monotonic() < deadline:
            while len(pending) + len(released) < window:
                topic = "crash/%d/%d" % (round_no, k)
                payload = ("r%d-m%d-" % (round_no, k)).encode() * 4
                pid = publisher.next_id
                publisher.next_id = publisher.next_id % 65535 + 1
                c.sock.sendall(packet(0x31 | (qos << 1), mqtt_str(topic) +
                                      struct.pack("!H", pid) + payload))
                pending[pid] = (topic, payload)
                k += 1
            frame = c.read(max(0.0, deadline - time.monotonic()))
            if frame is None:
                break
            handle(*frame)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Acknowledgements already in our socket buffer count too: the
        # broker sent them before it died.
        try:
            while True:
                frame = c.read(0.2)
                if frame is None:
                    break
                handle(*frame)
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
    ap.add_argument("--threads", type=int, default=1,
                    help="the broker's --threads (Loops sharing the store)")
    ap.add_argument("--qos", type=int, choices=[1, 2], default=1)
    ap.add_argument("--online", action="store_true",
                    help="the durable subscriber stays connected while the "
                    "messages are published, so kills also land in the "
                    "middle of its deliveries")
    ap.add_argument("--resend", action="store_true",
                    help="the publisher has a persistent session and, after "
                    "each restart, resends what was not acknowledged")
    args = ap.parse_args()
    FSYNC_FLAGS[:] = ["--fsync=" + args.fsync,
                      "--fsync_batch_ms=%d" % args.fsync_batch_ms,
                      "--threads=%d" % args.threads]
    if not os.access(args.broker, os.X_OK):
        print("SKIP: no broker binary at %s" % args.broker)
        return 77
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print("seed %d, fsync=%s, qos %d%s%s, threads %d" %
          (seed, args.fsync, args.qos, ", online" if args.online else "",
           ", resend" if args.resend else "", args.threads))
    data_dir = tempfile.mkdtemp(prefix="ringlab_store_crash.")
    failures = 0
    expected = {}
    undelivered = set()  # acknowledged, not yet seen by the durable session
    receiver = Receiver()
    publisher = Publisher(persistent=args.resend)
    proc = None
    try:
        proc, port = start_broker(args.broker, data_dir)
        # A persistent session, made before any kill.
        s = Conn(port, "durable", clean=False)
        s.sock.sendall(packet(0x82, struct.pack("!H", 1) +
                              mqtt_str("crash/#") + bytes([args.qos])))
        if s.read(5) is None:
            raise RuntimeError("no SUBACK")
        s.close()
        for round_no in range(args.rounds):
            kill_after = rng.uniform(0.02, 0.4)
            online = {}
            listener = None
            if args.online:
                def listen():
                    online["topics"] = drain_session(port, "durable", receiver,
                                                     until_closed=True)[1]
                listener = threading.Thread(target=listen)
                listener.start()
                time.sleep(0.05)  # connected before the first publish
            acked = publish_until_killed(port, proc, round_no, kill_after, rng,
                                         args.qos, publisher)
            if listener is not None:
                listener.join(timeout=30)
                undelivered_online = online.get("topics", set())
            else:
                undelivered_online = set()
            expected.update(acked)
            undelivered.update(acked)
            undelivered -= undelivered_online
            proc, port = start_broker(args.broker, data_dir)
            resent, unfinished = 0, 0
            if args.resend:
                resent = len(publisher.pending) + len(publisher.released)
                completed, unfinished = resend_unacknowledged(
                    port, publisher, args.qos)
                expected.update(completed)
                undelivered.update(completed)
            got = read_retained(port, "crash/#", len(expected))
            missing = [t for t, p in expected.items() if got.get(t) != p]
            duplicates_before = len(receiver.duplicates)
            present, topics = drain_session(port, "durable", receiver)
            undelivered -= topics
            # A resend completed after the restart may have reached the
            # subscriber before the kill (exactly once: not again now).
            undelivered -= receiver.delivered
            print("round %d: killed after %.0f ms, %d acked (%d in total), "
                  "%d retained after restart, %d missing; session %s, "
                  "%d queued messages received, %d acknowledged never received" %
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
            if args.resend:
                print("  publisher resent %d unacknowledged, %d not completed"
                      % (resent, unfinished))
                if unfinished:
                    failures += 1
            if args.qos == 2 and len(receiver.duplicates) > duplicates_before:
                print("  QoS 2 delivered twice, e.g. %s" %
                      receiver.duplicates[duplicates_before:][:5])
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
