"""Child processes for benchmark runs: own process group, logs to files,
waits with timeouts, rusage, and cleanup that survives Ctrl-C and crashes.

    with Supervisor() as sup:                # installs SIGTERM/SIGHUP handlers
        srv = sup.start(argv, out_path, err_path)
        ...
        status = cli.wait(timeout_s=30)      # None on timeout (caller kills)
    # every child still alive is killed here, and at interpreter exit (atexit)

Each child runs in a new session (start_new_session=True) so a terminal's
Ctrl-C reaches only the runner, which then kills each child's whole group:
`ip netns exec` and `taskset` exec the real program, so the group is exactly
the benchmark process and any threads or helpers it started.
"""

import atexit
import os
import pathlib
import re
import signal
import subprocess
import threading
import time

_LIVE = {}          # pid -> Child, every child not yet reaped
_LIVE_LOCK = threading.Lock()


class Terminated(Exception):
    """Raised in the main thread when SIGTERM/SIGHUP arrives."""


class Child:
    def __init__(self, argv, stdout_path, stderr_path, env=None, cwd=None):
        self.argv = list(argv)
        self.stdout_path = pathlib.Path(stdout_path)
        self.stderr_path = pathlib.Path(stderr_path)
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        try:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                          stdout=self._out, stderr=self._err, env=env,
                                          cwd=cwd, start_new_session=True)
        except OSError:
            self._out.close()
            self._err.close()
            raise
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.returncode = None
        self.rusage = None
        self._done = threading.Event()
        with _LIVE_LOCK:
            _LIVE[self.pid] = self
        # A blocking wait4 in a thread: the runner sleeps (no polling) while
        # a benchmark runs on the same two cores, and still gets rusage.
        self._waiter = threading.Thread(target=self._wait4, daemon=True)
        self._waiter.start()

    def _wait4(self):
        while True:
            try:
                _, status, usage = os.wait4(self.pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                status, usage = 0, None
                break
        self.rusage = usage
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode  # keep Popen from waiting again
        with _LIVE_LOCK:
            _LIVE.pop(self.pid, None)
        self._out.close()
        self._err.close()
        self._done.set()

    def alive(self):
        return not self._done.is_set()

    def wait(self, timeout_s=None):
        """Exit code (negative = signal), or None if still running."""
        self._done.wait(timeout_s)
        return self.returncode if self._done.is_set() else None

    def cpu_s(self):
        return (self.rusage.ru_utime + self.rusage.ru_stime) if self.rusage else None

    def signal_group(self, sig):
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, sig=signal.SIGTERM, grace_s=5.0):
        """Sends `sig` to the group, then SIGKILL after `grace_s`."""
        if self.alive():
            self.signal_group(sig)
            if self.wait(grace_s) is None:
                self.signal_group(signal.SIGKILL)
                self.wait(5.0)
        else:
            # The leader is gone; make sure nothing it left in its group lives.
            self.signal_group(signal.SIGKILL)
        return self.returncode

    def stdout_text(self):
        return _read(self.stdout_path)

    def stderr_text(self):
        return _read(self.stderr_path)


def _read(path):
    try:
        return pathlib.Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def tail(text, lines=20, chars=2000):
    out = "\n".join(text.rstrip().splitlines()[-lines:])
    return out[-chars:] if out else None


def kill_all(grace_s=1.0):
    with _LIVE_LOCK:
        children = list(_LIVE.values())
    for c in children:
        c.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for c in children:
        c.wait(max(0.0, deadline - time.monotonic()))
    for c in children:
        if c.alive():
            c.signal_group(signal.SIGKILL)
            c.wait(2.0)


def live_count():
    with _LIVE_LOCK:
        return len(_LIVE)


atexit.register(kill_all)


class Supervisor:
    """Installs SIGINT/SIGTERM/SIGHUP handlers and kills every child on exit.

    SIGINT raises KeyboardInterrupt and SIGTERM/SIGHUP raise Terminated, but
    never while a child is being started: an exception inside Popen after the
    fork would leave a running child that nobody tracks. Such a signal is held
    and raised as soon as the child is registered."""

    def __enter__(self):
        self._old = {}
        self._starting = False
        self._pending = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum, frame):
        if self._starting:
            self._pending = signum
            return
        self._raise(signum)

    @staticmethod
    def _raise(signum):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signal.Signals(signum).name)

    def start(self, argv, stdout_path, stderr_path, env=None, cwd=None):
        self._starting = True
        try:
            return Child(argv, stdout_path, stderr_path, env=env, cwd=cwd)
        finally:
            self._starting = False
            pending, self._pending = self._pending, None
            if pending is not None:
                self._raise(pending)

    def __exit__(self, *exc):
        kill_all()
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def listening(pid, port, protocol):
    """True when process `pid`'s network namespace has a socket bound to
    `port` (TCP in LISTEN, or any UDP). Reads /proc/PID/net so it also works
    for a server inside another network namespace."""
    names = ("tcp", "tcp6") if protocol == "tcp" else ("udp", "udp6")
    want = f":{port:04X}"
    for name in names:
        try:
            lines = pathlib.Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[1].endswith(want):
                if protocol == "udp" or fields[3] == "0A":
                    return True
    return False


def owns_socket(pid, protocol):
    """True when process `pid` itself holds a bound UDP socket (any port) or
    a listening TCP socket: its /proc/PID/fd links name socket inodes that
    appear in /proc/PID/net/{udp,tcp}[6]. For servers whose port the runner
    does not choose (a DDS participant derives its ports from the domain)."""
    try:
        inodes = set()
        for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return False
    if not inodes:
        return False
    names = ("tcp", "tcp6") if protocol == "tcp" else ("udp", "udp6")
    for name in names:
        try:
            lines = pathlib.Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                if protocol == "udp" or fields[3] == "0A":
                    return True
    return False


def thread_placement(pid):
    """Where process `pid`'s threads may run and last ran: a list of
    {"name", "cpus" (affinity, e.g. "0" or "0-1"), "last_cpu"} from
    /proc/PID/task/*/{comm,status,stat}; [] when the process is gone. Kernel
    threads the process owns (io_uring's SQPOLL thread "iou-sqp-PID") are
    listed with it. Names are normalised ("iou-sqp-1234" -> "iou-sqp") so
    records compare across runs."""
    out = []
    try:
        tasks = sorted(pathlib.Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name))
    except (OSError, ValueError):
        return out
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            cpus = None
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    cpus = line.split(":", 1)[1].strip()
            stat = (task / "stat").read_text()
            # Field 39 (processor) counted after the parenthesised comm.
            fields = stat[stat.rindex(")") + 2:].split()
            last_cpu = int(fields[36]) if len(fields) > 36 else None
        except (OSError, ValueError, IndexError):
            continue
        name = re.sub(r"^(iou-(?:sqp|wrk))-\d+$", r"\1", name)
        out.append({"name": name, "cpus": cpus, "last_cpu": last_cpu})
    return out
