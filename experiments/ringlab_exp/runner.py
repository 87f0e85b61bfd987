"""Runs a suite: build, start server and client per case repetition, record.

    opts = RunOptions(suite="quick")
    run_dir = run_suite(opts)         # results/quick/<UTC stamp>-<host>/

For each case repetition the runner starts the server (pinned to
suite.server_cpu), waits for its ready line or listening socket, runs the
client (pinned to suite.client_cpu) with a timeout, stops the server, parses
the client output and appends one record to records.jsonl at once. A server
that never gets ready or a client that hangs is killed and recorded as
failed with the tail of its stderr; the run goes on. On Ctrl-C or SIGTERM
every child is killed, the records so far stay, and the report is written
for what was measured.
"""

import dataclasses
import datetime
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from . import machine, netns, parsers, procs, report, results, schema
from .suite import (CALIBRATION_PROGRAM, EXPERIMENTS_DIR, PLACEHOLDER_RE, READY_DELAY_RE,
                    SuiteError, load_registry, load_suite, params_id)

REPO_DIR = EXPERIMENTS_DIR.parent
RESULT_SCHEMA = schema.RECORD_SCHEMA_ID
# The client's threads are sampled this long after it started (if it still runs).
THREAD_SAMPLE_AFTER_S = 0.15
# Extra time a client gets beyond its case's timeout_s before it is killed
# (RunOptions.client_grace_s; tests shorten it).
CLIENT_GRACE_S = 5.0


@dataclasses.dataclass
class RunOptions:
    suite: str
    repo_dir: pathlib.Path = REPO_DIR
    build_dir: pathlib.Path | None = None      # default: $RINGLAB_BUILD_DIR or build/release
    results_root: pathlib.Path | None = None   # default: <repo>/results
    registry_path: pathlib.Path | None = None
    binaries: dict = dataclasses.field(default_factory=dict)  # program -> path override
    build: bool = True
    repetitions: int | None = None
    only: str | None = None                    # regex on case ids
    progress: object = sys.stderr
    # A client still running timeout_s + client_grace_s after it started is
    # killed (the case's timeout_s is what the client itself is told).
    client_grace_s: float = CLIENT_GRACE_S


def default_build_dir(repo_dir):
    env = os.environ.get("RINGLAB_BUILD_DIR")
    return pathlib.Path(env) if env else pathlib.Path(repo_dir) / "build" / "release"


class Progress:
    def __init__(self, stream, total):
        self.stream, self.total, self.done = stream, total, 0
        self.run_wall, self.runs_timed = 0.0, 0
        self.t0 = time.monotonic()

    def line(self, text):
        if self.stream:
            print(text, file=self.stream, flush=True)

    def eta(self, remaining_runs, default_run_s):
        per = self.run_wall / self.runs_timed if self.runs_timed else default_run_s
        s = int(per * remaining_runs)
        return f"{s // 60}m{s % 60:02d}s"


# ---------------------------------------------------------------- binaries

def resolve_binaries(suite, registry, opts, build_dir, log_dir, say):
    """program -> (path or None, reason if None, built_now)."""
    out = {}
    wanted = {c.program for c in suite.cases}
    if suite.calibrate and CALIBRATION_PROGRAM in registry:
        wanted.add(CALIBRATION_PROGRAM)
    used = programs_needed(wanted, registry)
    for name in used:
        prog = registry[name]
        if name in opts.binaries:
            path = pathlib.Path(opts.binaries[name]).resolve()
            out[name] = (str(path), None) if path.exists() else \
                (None, f"--binary {name}={path}: no such file")
            continue
        template = prog.binary.replace("{build_dir}", str(build_dir))
        if "/" not in template:
            found = shutil.which(template)
            hint = prog.get("install_hint")
            out[name] = (found, None) if found else \
                (None, f"{template} is not installed" + (f" ({hint})" if hint else ""))
            continue
        path = pathlib.Path(template)
        if not path.exists() and prog.get("build_target") and opts.build:
            say(f"{name}: {path} is missing; building target {prog.build_target} "
                f"in {build_dir} (log: {log_dir / 'build.log'})")
            ok, why = build_target(opts.repo_dir, build_dir, prog.build_target,
                                   log_dir / "build.log")
            if not ok:
                out[name] = (None, f"build of {prog.build_target} failed: {why}")
                continue
        out[name] = (str(path), None) if path.exists() else \
            (None, f"{path} not found (build target {prog.get('build_target')} "
                   f"with cmake, or pass --binary {name}=PATH)")
    return out


def programs_needed(names, registry):
    """`names` plus every program their templates run via {binary:NAME}."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += registry[name].get("uses", [])
    return sorted(seen)


def build_target(repo_dir, build_dir, target, log_path):
    repo_dir, build_dir = pathlib.Path(repo_dir), pathlib.Path(build_dir)
    if build_dir.resolve() == (repo_dir / "build" / "release").resolve():
        steps = []
        if not (build_dir / "CMakeCache.txt").exists():
            steps.append(["cmake", "--preset", "release"])
        steps.append(["cmake", "--build", "--preset", "release", "-j2", "--target", target])
    else:
        steps = []
        if not (build_dir / "CMakeCache.txt").exists():
            steps.append(["cmake", "-S", str(repo_dir), "-B", str(build_dir),
                          "-DCMAKE_BUILD_TYPE=Release"])
        steps.append(["cmake", "--build", str(build_dir), "-j2", "--target", target])
    with open(log_path, "a", encoding="utf-8") as log:
        for argv in steps:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            try:
                r = subprocess.run(argv, cwd=repo_dir, stdout=log, stderr=subprocess.STDOUT,
                                   timeout=1800)
            except (OSError, subprocess.SubprocessError) as e:
                return False, str(e)
            if r.returncode != 0:
                log.flush()
                text = pathlib.Path(log_path).read_text(errors="replace")
                return False, f"`{' '.join(argv)}` exited {r.returncode}: " + \
                    (procs.tail(text, 5) or "")
    return True, None


# ---------------------------------------------------------------- commands

def expand_args(template, values, lists):
    """Fills placeholders; a token that is exactly "{name}" or "{kind:arg}"
    with a list value in `lists` becomes those tokens (possibly none)."""
    out = []
    for token in template:
        m = PLACEHOLDER_RE.fullmatch(token)
        key = None if not m or m.group(1) is None else \
            (m.group(1) if m.group(2) is None else f"{m.group(1)}:{m.group(2)}")
        if key is not None and key in lists:
            out += [expand_one(t, values) for t in lists[key]]
        elif key is not None and key.startswith("param_args:"):
            raise KeyError(f"{{{key}}}: no arguments for this parameter value "
                           "(add it to param_args)")
        else:
            out.append(expand_one(token, values))
    return out


def expand_one(token, values):
    """Replaces {name} and {kind:arg} in one string; {{ and }} are braces."""
    def sub(m):
        if m.group(1) is None:
            return m.group(0)[0]
        key = m.group(1) if m.group(2) is None else f"{m.group(1)}:{m.group(2)}"
        if key not in values or values[key] is None:
            hint = ""
            if key.startswith("param:"):
                hint = f" (give params.{m.group(2)} in the suite)"
            elif key in ("server_address",):
                hint = " (not known before the server is ready)"
            raise KeyError(f"placeholder {{{key}}} has no value{hint}")
        return str(values[key])
    return PLACEHOLDER_RE.sub(sub, token)


def param_text(value):
    """A parameter value as a command-line string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def template_program(template, default):
    """The program whose binary a command template runs: {binary} is the
    entry itself, {binary:NAME} another registry program."""
    if template:
        m = PLACEHOLDER_RE.fullmatch(template[0])
        if m and m.group(1) == "binary":
            return m.group(2) or default
    return default


def pick_port(protocol, host="127.0.0.1"):
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- one run

class CaseRunner:
    def __init__(self, suite, registry, binaries, sup, run_dir, run_id, machine_info, topo,
                 client_grace_s=CLIENT_GRACE_S):
        self.suite, self.registry, self.binaries = suite, registry, binaries
        self.client_grace_s = client_grace_s
        self.sup, self.run_dir, self.run_id = sup, run_dir, run_id
        self.machine, self.topo = machine_info, topo
        self.log_dir = run_dir / "logs"
        self._next_port = 21000 + os.getpid() % 20000
        self._instances = 0

    def base_record(self, case, index, rep):
        prog = self.registry[case.program]
        pin_method = prog.pin if self.suite.pin else "none"
        if pin_method == "taskset" and not shutil.which("taskset"):
            pin_method = "none"
        pinning = {"server_cpu": self.suite.server_cpu if pin_method != "none" else None,
                   "client_cpu": self.suite.client_cpu if pin_method != "none" else None,
                   "method": pin_method}
        if pin_method == "none":
            pinning["note"] = "not pinned (pinning disabled, 1 cpu, or taskset missing)"
        return {
            "schema": RESULT_SCHEMA, "run_id": self.run_id, "suite": self.suite.name,
            "case_id": case.case_id, "case_index": index,
            "case_count": len(self.suite.cases), "repetition": rep,
            "repetitions": self.suite.repetitions, "status": "skipped", "reason": None,
            "stderr_tail": None, "program": case.program, "program_kind": prog.kind,
            "server_program": template_program(prog.server, case.program),
            "client_program": template_program(prog.client, case.program),
            "variant": case.variant, "implementation": case.implementation,
            "backend": case.variant, "backend_effective": None,
            "flags": " ".join(prog.get("variant_args", {}).get(case.variant, [])) or None,
            "protocol": case.protocol, "payload_bytes": case.payload_bytes,
            "connections": case.connections, "mode": case.mode,
            "rate_per_s": case.rate_per_s, "inflight": case.inflight,
            "params": case.params_dict,
            "samples_requested": case.samples, "warmup": case.warmup,
            "max_duration_s": case.max_duration_s,
            "duration_s_requested": case.duration_s, "samples": None, "lost": None,
            "rtt_us": {k: None for k in parsers.RTT_KEYS}, "rtt_note": None,
            "messages_per_s": None, "cpu_us_per_msg": None, "cpu_source": None,
            "kernel_entries_per_msg": None, "server_stats": None,
            "server_cpu_us_per_msg": None, "server_cpu_source": None,
            "server_kernel_entries_per_msg": None, "server_rss_kib_per_connection": None,
            "server_measured": None, "deliveries_per_s": None, "connections_open": None,
            "bulk": None, "inflight_achieved": None, "pinning": pinning,
            "topology": self.suite.topology, "server_address": None,
            "commands": {"server": None, "client": None},
            "threads": {"server": [], "client": []},
            "started_utc": machine.utc_now(), "wall_s": None,
            "machine": self.machine, "program_result": None,
        }

    def _prefix(self, side, pinning):
        prefix = []
        if self.topo is not None:
            prefix += self.topo.server_prefix if side == "server" else self.topo.client_prefix
        if pinning["method"] == "taskset":
            prefix += ["taskset", "-c", str(pinning[f"{side}_cpu"])]
        return prefix

    def run(self, case, index, rep, skip_reason=None):
        rec = self.base_record(case, index, rep)
        if skip_reason or case.skip_reason:
            rec["reason"] = skip_reason or case.skip_reason
            return rec
        t0 = time.monotonic()
        try:
            self._run(case, rep, rec)
        finally:
            rec["wall_s"] = round(time.monotonic() - t0, 3)
        return rec

    def _missing_binary(self, case):
        """(status, reason) when this case's program, or one its commands run
        via {binary:NAME}, is unavailable; else None."""
        for name in programs_needed([case.program], self.registry):
            binary, why = self.binaries.get(name, (None, f"{name} was not resolved"))
            if binary is None:
                kind = self.registry[name].kind
                via = "" if name == case.program else f"{name} (used by {case.program}): "
                return ("skipped" if kind == "peer" else "failed"), via + why
        return None

    def _values(self, case, prog, paths, host, port, work_dir):
        """Everything a template may name, for this case repetition."""
        self._instances += 1
        values = {
            "binary": self.binaries[case.program][0], "variant": case.variant,
            "protocol": case.protocol, "payload": case.payload_bytes,
            "connections": case.connections, "mode": case.mode, "inflight": case.inflight,
            "rate": int(case.rate_per_s) if case.rate_per_s else None,
            "samples": case.samples, "warmup": case.warmup, "duration_s": case.duration_s,
            "duration_s_int": max(1, int(round(case.duration_s))),
            "server_host": host, "port": port, "server_json": paths["server.json"],
            "client_json": paths["client.json"],
            "client_timeout_s": max(1, int(case.timeout_s)),
            "work_dir": work_dir, "max_duration_s": case.max_duration_s,
            # A small number that differs between the runner's processes and
            # between consecutive repetitions (a DDS domain id, a topic suffix).
            "instance": (os.getpid() + self._instances) % 200 + 1,
        }
        for name in programs_needed([case.program], self.registry):
            values[f"binary:{name}"] = self.binaries[name][0]
        # A parameter the case does not set takes the registry's default
        # (param_defaults), so a suite that never names it runs as before.
        for name, value in prog.get("param_defaults", {}).items():
            values[f"param:{name}"] = param_text(value)
        for name, value in case.params:
            values[f"param:{name}"] = param_text(value)
        for fname in prog.get("files", {}):
            values[f"file:{fname}"] = work_dir / fname
        return values

    def _lists(self, case, prog, pinning):
        lists = {
            "variant_args": prog.get("variant_args", {}).get(case.variant, []),
            "protocol_args": prog.get("protocol_args", {}).get(case.protocol, []),
            "mode_args": prog.get("mode_args", {}).get(case.mode, []),
            "server_pin": [], "client_pin": [],
            "max_duration_args": prog.get("max_duration_args", []) if case.max_duration_s
            else [],
        }
        for name, value in case.params:
            table = prog.get("param_args", {}).get(name)
            if table is not None and param_text(value) in table:
                lists[f"param_args:{name}"] = table[param_text(value)]
        pin_args = list(prog.get("pin_args", [])) if pinning["method"] == "flag" else []
        if pinning["method"] != "none":
            # Per-variant placement of helper threads (SQPOLL), on the side's cpu.
            pin_args += prog.get("variant_pin_args", {}).get(case.variant, [])
        lists["server_pin"] = [t.replace("{cpu}", str(pinning["server_cpu"])) for t in pin_args]
        lists["client_pin"] = [t.replace("{cpu}", str(pinning["client_cpu"])) for t in pin_args]
        return lists

    def _env(self, prog, values):
        """(environment for a child or None, the expanded program env)."""
        extra = {k: expand_one(v, values) for k, v in prog.get("env", {}).items()}
        if not extra:
            return None, {}
        env = dict(os.environ)
        env.update(extra)
        return env, extra

    def _run(self, case, rep, rec):
        prog = self.registry[case.program]
        missing = self._missing_binary(case)
        if missing:
            rec["status"], rec["reason"] = missing
            return
        stem = f"{case.case_id}.r{rep}"
        paths = {k: self.log_dir / f"{stem}.{k}" for k in
                 ("server.out", "server.err", "client.out", "client.err",
                  "server.json", "client.json")}
        host = self.topo.server_ip if self.topo else "127.0.0.1"
        kind = prog.transport_of(case.protocol)
        if prog.port == "pick":
            if self.topo:
                self._next_port += 1
                port = self._next_port
            else:
                port = pick_port(kind)
        else:
            port = 0
        work_dir = self.log_dir / f"{stem}.work"
        pinning = rec["pinning"]
        values = self._values(case, prog, paths, host, port, work_dir)
        lists = self._lists(case, prog, pinning)
        try:
            server_env, env_shown = self._env(prog, values)
            # Config files first: the server reads them when it starts.
            files = prog.get("files", {})
            texts = {name: expand_one(text, values) for name, text in files.items()}
            server_argv = self._prefix("server", pinning) + expand_args(prog.server, values,
                                                                        lists)
        except KeyError as e:
            rec.update(status="failed", reason=f"registry {case.program}: {e.args[0]}")
            return
        if files or any("{work_dir}" in t for t in prog.server + prog.client):
            work_dir.mkdir(parents=True, exist_ok=True)
            for name, text in texts.items():
                (work_dir / name).write_text(text, encoding="utf-8")
        rec["commands"]["server"] = server_argv
        if env_shown:
            rec["commands"]["env"] = env_shown
        if files:
            rec["commands"]["files"] = {name: str(work_dir / name) for name in files}
        unsupported = prog.get("unsupported_exit_code")

        server = self.sup.start(server_argv, paths["server.out"], paths["server.err"],
                                env=server_env)
        try:
            address, why = self._wait_ready(server, prog, case, host, port)
            if address is None:
                code = server.returncode
                rec["status"] = "skipped" if (unsupported is not None and code == unsupported) \
                    else "failed"
                rec["reason"] = why
                rec["stderr_tail"] = procs.tail(server.stderr_text() or server.stdout_text())
                return
            rec["server_address"] = address
            values["server_address"] = address
            try:
                client_env, client_env_shown = self._env(prog, values)
                client_argv = self._prefix("client", pinning) + expand_args(prog.client,
                                                                             values, lists)
            except KeyError as e:
                rec.update(status="failed",
                           reason=f"registry {case.program}.client: {e.args[0]}")
                return
            if client_env_shown and client_env_shown != env_shown:
                rec["commands"]["client_env"] = client_env_shown
            rec["commands"]["client"] = client_argv
            client = self.sup.start(client_argv, paths["client.out"], paths["client.err"],
                                    env=client_env)
            # Where the threads ran: sampled once while the client is busy
            # (one short wake-up of the runner), and from the server before
            # it is stopped.
            code = client.wait(THREAD_SAMPLE_AFTER_S)
            if code is None:
                rec["threads"]["client"] = procs.thread_placement(client.pid)
                code = client.wait(case.timeout_s + self.client_grace_s)
            rec["threads"]["server"] = procs.thread_placement(server.pid)
            if code is None:
                client.stop(signal.SIGTERM, grace_s=2)
                rec.update(status="failed", reason=f"client did not finish within "
                           f"{case.timeout_s + self.client_grace_s:g} s; killed")
                rec["stderr_tail"] = procs.tail(client.stderr_text())
                return
        finally:
            stop_sig = getattr(signal, prog.get("stop_signal", "SIGTERM"))
            server.stop(stop_sig, grace_s=5)
        rec["server_stats"] = _server_stats(server, paths["server.json"])
        out, err = client.stdout_text(), client.stderr_text()
        if code != 0:
            rec["status"] = "skipped" if (unsupported is not None and code == unsupported) \
                else "failed"
            rec["reason"] = (f"unsupported here (exit {code}): " if rec["status"] == "skipped"
                             else f"client exited with code {code}: ") + \
                (procs.tail(err or out, 1) or "no output")
            rec["stderr_tail"] = procs.tail(err or out)
            return
        try:
            m = parsers.PARSERS[prog.parser](out, err, paths["client.json"])
        except parsers.ParseError as e:
            rec.update(status="failed", reason=f"could not parse client output: {e}",
                       stderr_tail=procs.tail(err or out))
            return
        rec["status"] = "ok"
        for key in ("samples", "lost", "rtt_us", "rtt_note", "messages_per_s",
                    "kernel_entries_per_msg", "program_result"):
            rec[key] = m[key]
        rec["inflight_achieved"] = m.get("inflight_achieved")
        rec["backend_effective"] = m["backend_effective"] or case.variant
        if m["flags"] is not None:
            rec["flags"] = m["flags"]
        total_msgs = m["total_messages"] or ((m["samples"] or 0) + case.warmup)
        if m["cpu_us_per_msg"] is not None:
            rec["cpu_us_per_msg"] = m["cpu_us_per_msg"]
            rec["cpu_source"] = "program (client, measured phase)"
        else:
            cpu_s = client.cpu_s()
            if cpu_s is not None and total_msgs:
                rec["cpu_us_per_msg"] = cpu_s * 1e6 / total_msgs
                rec["cpu_source"] = "runner rusage (client, whole run incl. warm-up)"
        measured = server_measured(rec["server_stats"], m["program_result"])
        rec["server_measured"] = measured
        if measured:
            rec["server_kernel_entries_per_msg"] = measured["kernel_entries_per_msg"]
            rec["server_rss_kib_per_connection"] = measured["rss_kib_per_connection"]
        rec["server_cpu_us_per_msg"], rec["server_cpu_source"] = server_cpu(
            rec["server_stats"], server.cpu_s(), total_msgs, case.payload_bytes, measured)
        rec["deliveries_per_s"] = m["deliveries_per_s"]
        rec["connections_open"] = m["connections_open"]
        if m["bulk"] is not None:
            why = bulk_mismatch(m["bulk"], case.params_dict)
            if why:
                rec.update(status="failed", reason=f"client output does not match the case: "
                           f"{why}", stderr_tail=procs.tail(err or out))
                return
            rec["bulk"] = complete_bulk(m["bulk"], case.params_dict, measured,
                                        rec["server_stats"], server.cpu_s(), client.cpu_s())

    def _wait_ready(self, server, prog, case, host, port):
        deadline = time.monotonic() + self.suite.ready_timeout_s
        ready = prog.ready
        kind = prog.transport_of(case.protocol)
        delay = READY_DELAY_RE.match(ready)
        regex = None if ready in ("listen", "socket") or delay else re.compile(ready, re.M)
        if delay:
            # The server says nothing and its sockets prove nothing (a DDS
            # participant is up long before it has matched): give it time.
            ready_at = time.monotonic() + float(delay.group(1))
        while time.monotonic() < deadline:
            if regex is not None:
                for text in (server.stdout_text(), server.stderr_text()):
                    m = regex.search(text)
                    if m:
                        addr = m.groupdict().get("address") or f"{host}:{port}"
                        return addr, None
            elif delay:
                if time.monotonic() >= ready_at and server.alive():
                    return f"{host}:{port}", None
            elif ready == "socket":
                if procs.owns_socket(server.pid, kind):
                    return f"{host}:{port}", None
            elif procs.listening(server.pid, port, kind):
                return f"{host}:{port}", None
            if not server.alive():
                code = server.returncode
                last = procs.tail(server.stderr_text() or server.stdout_text(), 1)
                return None, f"server exited with code {code} before it was ready" + \
                    (f": {last}" if last else "")
            time.sleep(0.005)
        server.stop(signal.SIGKILL, grace_s=1)
        if regex is not None:
            what = "a line matching " + repr(ready)
        elif delay:
            what = f"{delay.group(1)} s, longer than ready_timeout_s"
        elif ready == "socket":
            what = f"a {kind} socket of the server process"
        else:
            what = f"a {kind} socket on port {port}"
        return None, f"server not ready within {self.suite.ready_timeout_s:g} s " \
            f"(waited for {what}); killed"


def _server_stats(server, json_path):
    for line in server.stdout_text().splitlines():
        if line.startswith("SERVER_STATS "):
            try:
                import json
                return json.loads(line[len("SERVER_STATS "):])
            except ValueError:
                return {"unparsed": line[:500]}
    return None


def server_messages(stats, payload_bytes):
    """Messages the server handled, from its SERVER_STATS: `messages`, else
    ringlab_pingpong's datagrams_echoed (UDP) or bytes_echoed / payload (TCP,
    whose echo does not see message boundaries)."""
    for key in ("messages", "datagrams_echoed"):
        v = stats.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return v
    b = stats.get("bytes_echoed")
    if isinstance(b, (int, float)) and b > 0 and payload_bytes:
        return b / payload_bytes
    return None


def _interp(ts, ys, x):
    """Linear interpolation of the cumulative series ys(ts) at time x
    (clamped to the series' ends)."""
    if x <= ts[0]:
        return ys[0]
    if x >= ts[-1]:
        return ys[-1]
    lo, hi = 0, len(ts) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ts[mid] <= x:
            lo = mid
        else:
            hi = mid
    span = ts[hi] - ts[lo]
    f = (x - ts[lo]) / span if span else 0.0
    return ys[lo] + f * (ys[hi] - ys[lo])


def server_measured(stats, client_result):
    """The server's CPU, messages and kernel entries over exactly the
    client's measured phase, from the timeline ringlab servers sample every
    50 ms (cumulative values, interpolated linearly at the phase's ends: the
    client's measured_start_ns / measured_end_ns, on the same monotonic
    clock), and its RSS per open connection then. None when either side
    lacks the data."""
    if not isinstance(stats, dict) or not isinstance(client_result, dict):
        return None
    tl = stats.get("timeline")
    start, end = client_result.get("measured_start_ns"), client_result.get("measured_end_ns")
    if not isinstance(tl, dict) or not isinstance(start, (int, float)) or \
            not isinstance(end, (int, float)) or end <= start:
        return None
    ts = tl.get("t_ns") or []
    cols = {k: tl.get(k) or [] for k in ("cpu_us", "messages", "kernel_entries", "rss_kib",
                                         "connections")}
    if len(ts) < 2 or any(len(v) != len(ts) for v in cols.values()):
        return None
    if start < ts[0] or end > ts[-1]:
        return None    # the server's timeline does not cover the phase: other clock?
    d = {k: _interp(ts, cols[k], end) - _interp(ts, cols[k], start)
         for k in ("cpu_us", "messages", "kernel_entries")}
    inside = [c for t, c in zip(ts, cols["connections"]) if start <= t <= end]
    conns = max(inside) if inside else round(_interp(ts, cols["connections"], start))
    rss_ready = stats.get("rss_kib_ready") or cols["rss_kib"][0]
    rss_phase = _interp(ts, cols["rss_kib"], start)
    out = {"window_s": round((end - start) / 1e9, 6), "cpu_us": round(d["cpu_us"], 1),
           "messages": round(d["messages"], 1), "kernel_entries": round(d["kernel_entries"], 1),
           "connections": conns, "rss_kib_ready": rss_ready, "rss_kib_measured": rss_phase,
           "sample_interval_ms": tl.get("interval_ms")}
    out["cpu_us_per_msg"] = d["cpu_us"] / d["messages"] if d["messages"] > 0 else None
    out["kernel_entries_per_msg"] = d["kernel_entries"] / d["messages"] \
        if d["messages"] > 0 else None
    out["rss_kib_per_connection"] = (rss_phase - rss_ready) / conns if conns else None
    return out


def bulk_mismatch(bulk, params):
    """Why a bulk result does not answer the case's `direction` / `bytes`
    parameters (a program that ignored a flag), or None."""
    want = params.get("direction")
    if want is not None and bulk.get("direction") not in (None, want):
        return f"the program transferred {bulk['direction']}, the case asked for {want}"
    want = params.get("bytes")
    if isinstance(want, (int, float)) and not isinstance(want, bool) and \
            int(want) != bulk["bytes"]:
        return f"the program transferred {bulk['bytes']} bytes, the case asked for {want:g}"
    return None


def complete_bulk(bulk, params, measured, stats, server_rusage_s, client_rusage_s):
    """Fills what a bulk result leaves open: the direction from the case's
    parameter; the server's CPU and kernel entries per MB from its timeline
    over the client's measured phase (the transfer), else its SERVER_STATS
    `cpu_us` (whole server run), else the runner's wait4 rusage of the
    server process (whole run incl. start-up); the client's CPU per MB from
    the runner's rusage of the client (whole run incl. connection set-up)."""
    out = dict(bulk)
    mb = out["bytes"] / 1e6
    if out.get("direction") is None and params.get("direction") in ("upload", "download"):
        out["direction"] = params["direction"]
    if out["server_cpu_us_per_mb"] is None:
        cpu = stats.get("cpu_us") if isinstance(stats, dict) else None
        if measured and measured.get("cpu_us") is not None:
            out["server_cpu_us_per_mb"] = measured["cpu_us"] / mb
            out["server_cpu_source"] = "server rusage over the client's measured phase " \
                                       "(interpolated from the server's timeline)"
        elif isinstance(cpu, (int, float)) and not isinstance(cpu, bool):
            out["server_cpu_us_per_mb"] = cpu / mb
            out["server_cpu_source"] = "server SERVER_STATS cpu_us (whole server run)"
        elif server_rusage_s is not None:
            out["server_cpu_us_per_mb"] = server_rusage_s * 1e6 / mb
            out["server_cpu_source"] = "runner wait4 rusage (server process, whole run " \
                                       "incl. start-up)"
    if out["server_kernel_entries_per_mb"] is None and measured and \
            measured.get("kernel_entries") is not None:
        out["server_kernel_entries_per_mb"] = measured["kernel_entries"] / mb
    if out["client_cpu_us_per_mb"] is None and client_rusage_s is not None:
        out["client_cpu_us_per_mb"] = client_rusage_s * 1e6 / mb
        out["client_cpu_source"] = "runner rusage (client, whole run incl. connection set-up)"
    return out


def server_cpu(stats, rusage_cpu_s, client_total_msgs, payload_bytes, measured=None):
    """(server CPU µs per message, source). Preference: the server's own
    rusage over the client's measured phase (`measured`, from its
    timeline); else its whole-run rusage in SERVER_STATS over its own
    message count; else the runner's wait4 rusage of the server process over
    the client's message count."""
    if measured and measured.get("cpu_us_per_msg") is not None:
        return measured["cpu_us_per_msg"], "server rusage over the client's measured phase " \
            "(interpolated from the server's timeline)"
    if isinstance(stats, dict):
        cpu = stats.get("cpu_us")
        msgs = server_messages(stats, payload_bytes)
        if isinstance(cpu, (int, float)) and not isinstance(cpu, bool) and msgs:
            return cpu / msgs, "server SERVER_STATS (own rusage and message count, whole " \
                               "server run incl. warm-up)"
    if rusage_cpu_s is not None and client_total_msgs:
        return rusage_cpu_s * 1e6 / client_total_msgs, \
            "runner wait4 rusage (server process, whole run incl. start-up and warm-up) " \
            "/ client messages"
    return None, None


# ---------------------------------------------------------------- steadiness

class Calibrator:
    """The steadiness check: before each repetition, a short no-framework UDP
    ping-pong (ringlab_floor_pingpong, `calibration_samples` round trips,
    pinned like the cases, on loopback in the runner's namespace). Its p50 is
    an index of the host's speed state; report.py compares consecutive ones.

        cal = Calibrator(suite, (path, why), sup, log_dir)
        record["calibration"] = cal.run()     # dict, see SCHEMA.md

    It costs about 0.1 s (two process starts and ~1,100 round trips). The
    logs of the latest calibration are kept in logs/calibration.*; a failed
    one keeps its stderr tail in the record. io_uring refused (exit 3): it
    falls back to the epoll variant once and says so."""

    SERVER_READY_S = 3.0
    CLIENT_TIMEOUT_S = 10.0

    def __init__(self, suite, binary, sup, log_dir):
        self.suite, self.sup, self.log_dir = suite, sup, log_dir
        self.binary, self.why = binary
        self.variant = suite.calibration_variant
        self.note = None
        self.count = 0

    def _pin(self, cpu):
        return [f"--cpu={cpu}"] if self.suite.pin and cpu is not None else []

    def run(self):
        t0 = time.monotonic()
        self.count += 1
        cal = {"status": "failed", "reason": None, "program": CALIBRATION_PROGRAM,
               "variant": self.variant, "samples": self.suite.calibration_samples,
               "p50_us": None, "rtt_us": None, "wall_s": None,
               "server_cpu": self.suite.server_cpu if self.suite.pin else None,
               "client_cpu": self.suite.client_cpu if self.suite.pin else None}
        if self.binary is None:
            cal.update(status="unavailable", reason=self.why)
            return cal
        try:
            self._measure(cal)
            if cal["status"] == "unsupported" and self.variant != "epoll":
                self.note = f"{self.variant} refused here ({cal['reason']}); using epoll"
                self.variant = "epoll"
                cal["variant"] = "epoll"
                self._measure(cal)
        finally:
            cal["wall_s"] = round(time.monotonic() - t0, 3)
        if self.note:
            cal["note"] = self.note
        if cal["status"] == "unsupported":
            cal["status"] = "failed"
        return cal

    def _measure(self, cal):
        logs = {k: self.log_dir / f"calibration.{k}" for k in
                ("server.out", "server.err", "client.out", "client.err")}
        server = self.sup.start([self.binary, "server", f"--variant={self.variant}",
                                 "--bind=127.0.0.1:0"] + self._pin(self.suite.server_cpu),
                                logs["server.out"], logs["server.err"])
        try:
            address = None
            deadline = time.monotonic() + self.SERVER_READY_S
            while time.monotonic() < deadline and address is None:
                m = re.search(r"^READY (\S+)\s*$", server.stdout_text(), re.M)
                if m:
                    address = m.group(1)
                elif not server.alive():
                    break
                else:
                    time.sleep(0.002)
            if address is None:
                code = server.wait(0.5)
                cal["status"] = "unsupported" if code == 3 else "failed"
                cal["reason"] = f"calibration server not ready (exit {code})"
                cal["stderr_tail"] = procs.tail(server.stderr_text(), 5)
                return
            n = self.suite.calibration_samples
            client = self.sup.start(
                [self.binary, "client", f"--variant={self.variant}", f"--server={address}",
                 "--payload=64", f"--samples={n}", f"--warmup={max(10, n // 10)}"] +
                self._pin(self.suite.client_cpu), logs["client.out"], logs["client.err"])
            code = client.wait(self.CLIENT_TIMEOUT_S)
            if code is None:
                client.stop(signal.SIGKILL, grace_s=1)
                cal["reason"] = f"calibration client hung for {self.CLIENT_TIMEOUT_S:g} s"
                return
        finally:
            server.stop(signal.SIGINT, grace_s=2)
        if code != 0:
            cal["status"] = "unsupported" if code == 3 else "failed"
            cal["reason"] = f"calibration client exited {code}"
            cal["stderr_tail"] = procs.tail(client.stderr_text(), 5)
            return
        try:
            m = parsers.parse_ringlab_json(client.stdout_text(), client.stderr_text(), None)
        except parsers.ParseError as e:
            cal["reason"] = f"calibration output: {e}"
            return
        cal["status"] = "ok"
        cal["reason"] = None
        cal["stderr_tail"] = None
        cal["rtt_us"] = {k: m["rtt_us"].get(k) for k in ("min", "mean", "p50", "p90", "p99")}
        cal["p50_us"] = m["rtt_us"]["p50"]


# ---------------------------------------------------------------- the run

def run_suite(opts, say=None):
    say = say or (lambda s: print(s, file=opts.progress, flush=True) if opts.progress else None)
    registry = load_registry(opts.registry_path) if opts.registry_path else load_registry()
    suite = load_suite(opts.suite, registry)
    if opts.repetitions:
        suite.repetitions = opts.repetitions
    if opts.only:
        rx = re.compile(opts.only)
        suite.cases = [c for c in suite.cases if rx.search(c.case_id)]
        if not suite.cases:
            raise SuiteError(f"--only {opts.only!r} matches no case of suite {suite.name}")
    build_dir = pathlib.Path(opts.build_dir) if opts.build_dir else \
        default_build_dir(opts.repo_dir)
    results_root = pathlib.Path(opts.results_root) if opts.results_root else \
        pathlib.Path(opts.repo_dir) / "results"
    now = datetime.datetime.now(datetime.timezone.utc)
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    run_dir = results.create_run_dir(results_root, suite.name, now.strftime("%Y%m%dT%H%M%SZ"),
                                     host)
    run_id = f"{suite.name}/{run_dir.name}"
    (run_dir / "logs").mkdir()
    (run_dir / "suite.toml").write_text(suite.text)
    say(f"ringlab: suite {suite.name} ({len(suite.cases)} cases x {suite.repetitions} "
        f"repetitions) -> {run_dir}")

    binaries = resolve_binaries(suite, registry, opts, build_dir, run_dir / "logs", say)
    case_programs = set(programs_needed({c.program for c in suite.cases}, registry))
    for name, (path, why) in binaries.items():
        if path or name not in case_programs:
            say(f"  {name}: {path or 'UNAVAILABLE: ' + why}")
        else:
            say(f"  {name}: UNAVAILABLE: {why}; its cases are recorded as " +
                ("skipped" if registry[name].kind == "peer" else "failed"))
    if suite.calibrate:
        cal_binary = binaries.get(CALIBRATION_PROGRAM,
                                  (None, f"{CALIBRATION_PROGRAM} is not in the registry"))
        say(f"  steadiness check: {suite.calibration_samples} round trips of "
            f"{CALIBRATION_PROGRAM} {suite.calibration_variant} before each repetition"
            + ("" if cal_binary[0] else f" UNAVAILABLE ({cal_binary[1]})"))
    info = machine.collect(opts.repo_dir, build_dir, registry)
    run_meta = {
        "schema": results.RUN_SCHEMA, "run_id": run_id, "suite": suite.name,
        "suite_file": str(suite.path), "description": suite.description,
        "started_utc": machine.utc_now(), "finished_utc": None, "status": "running",
        "case_count": len(suite.cases), "repetitions": suite.repetitions,
        "order": suite.order, "topology": suite.topology,
        "pinning": {"server_cpu": suite.server_cpu, "client_cpu": suite.client_cpu,
                    "enabled": suite.pin},
        "build_dir": str(build_dir),
        "binaries": {k: v[0] for k, v in binaries.items()},
        "unavailable": {k: v[1] for k, v in binaries.items() if v[0] is None},
        "argv": sys.argv, "machine": info,
        "calibration": {"enabled": suite.calibrate, "program": CALIBRATION_PROGRAM,
                        "variant": suite.calibration_variant,
                        "samples": suite.calibration_samples},
        "calibration_end": None,
        "targets": suite.targets,
    }
    results.write_json(run_dir / "run.json", run_meta)

    order = [(c, i, r) for r in range(1, suite.repetitions + 1)
             for i, c in enumerate(suite.cases, 1)] if suite.order == "interleaved" else \
        [(c, i, r) for i, c in enumerate(suite.cases, 1)
         for r in range(1, suite.repetitions + 1)]
    writer = results.RecordWriter(run_dir)
    progress = Progress(opts.progress, len(order))
    saturated = {}   # sweep_key -> lowest offered rate that saturated
    status = "complete"
    topo_ctx = None
    topo_skip = None
    try:
        with procs.Supervisor() as sup:
            if suite.topology == "netns-veth":
                ok, why = netns.can_use_netns()
                if ok:
                    try:
                        topo_ctx = netns.VethPair().__enter__()
                    except netns.NetnsError as e:
                        topo_skip = f"could not create the veth topology: {e}"
                else:
                    topo_skip = f"multihost topology skipped: {why}"
                if topo_skip:
                    say(f"ringlab: {topo_skip}")
                else:
                    say(f"ringlab: namespaces {topo_ctx.server_ns} ({topo_ctx.server_ip}) and "
                        f"{topo_ctx.client_ns} ({topo_ctx.client_ip}) joined by a veth pair")
            runner = CaseRunner(suite, registry, binaries, sup, run_dir, run_id, info, topo_ctx,
                                client_grace_s=opts.client_grace_s)
            calibrator = Calibrator(suite, cal_binary, sup, run_dir / "logs") \
                if suite.calibrate else None
            calibrated = False
            for n, (case, index, rep) in enumerate(order, 1):
                skip = topo_skip
                if case.mode == "rate" and case.stop_at_saturation:
                    sat = saturated.get(case.sweep_key)
                    if sat is not None and case.rate_per_s > sat:
                        skip = f"beyond saturation: {case.implementation} already fell " \
                               f"below {case.saturation_fraction:.0%} of the offered rate " \
                               f"at {sat:g}/s"
                runnable = not (skip or case.skip_reason or runner._missing_binary(case))
                remaining = sum(1 for c, _, _ in order[n - 1:] if not c.skip_reason)
                progress.line(f"[{n}/{len(order)}] case {index}/{len(suite.cases)} "
                              f"{case.case_id} rep {rep}/{suite.repetitions} "
                              f"(ETA {progress.eta(remaining, case.duration_s + 1.5)})")
                cal = None
                if runnable and calibrator is not None:
                    cal = calibrator.run()
                    calibrated = True
                rec = runner.run(case, index, rep, skip_reason=skip)
                rec["sequence"] = n
                rec["calibration"] = cal
                if runnable and rec["wall_s"]:
                    progress.run_wall += rec["wall_s"]
                    progress.runs_timed += 1
                errors = schema.validate_record(rec)
                if errors:
                    say("  warning: record does not match the schema: " + "; ".join(errors[:3]))
                writer.write(rec)
                progress.line("    " + _summary(rec))
                if (rec["status"] == "ok" and case.mode == "rate" and case.stop_at_saturation
                        and rec["messages_per_s"] is not None
                        and rec["messages_per_s"] < case.saturation_fraction * case.rate_per_s):
                    prev = saturated.get(case.sweep_key)
                    saturated[case.sweep_key] = min(prev, case.rate_per_s) if prev else \
                        case.rate_per_s
                if runnable and suite.pause_s:
                    time.sleep(suite.pause_s)
            if calibrated:
                # The state after the last repetition, so that one is judged too.
                run_meta["calibration_end"] = calibrator.run()
    except (KeyboardInterrupt, procs.Terminated) as e:
        status = "interrupted"
        say(f"\nringlab: interrupted ({type(e).__name__} {e}); children killed, "
            "records so far kept")
    except BaseException as e:
        status = f"crashed: {type(e).__name__}: {e}"
        raise
    finally:
        procs.kill_all()
        if topo_ctx is not None:
            topo_ctx.delete()
        writer.close()
        # records.jsonl is the truth: an interrupt can land between a record's
        # write and its bookkeeping in memory.
        records = results.load(writer.path)[1]
        run_meta["finished_utc"] = machine.utc_now()
        run_meta["status"] = status
        run_meta["record_count"] = len(records)
        results.write_json(run_dir / "run.json", run_meta)
        results.write_json(run_dir / "results.json",
                           {"schema": results.RESULTS_SCHEMA, "run": run_meta,
                            "records": records})
        try:
            report.write_report(run_dir)
        except Exception as e:  # a report bug must not lose the data
            say(f"ringlab: report generation failed: {type(e).__name__}: {e}")
    return run_dir


def _summary(rec):
    if rec["status"] != "ok":
        return f"{rec['status'].upper()}: {rec['reason']}"
    r = rec["rtt_us"]
    f = lambda v: "?" if v is None else f"{v:.1f}"
    parts = [f"ok p50={f(r['p50'])}us p99={f(r['p99'])}us"]
    cal = rec.get("calibration") or {}
    if cal.get("p50_us"):
        parts.append(f"(host check {cal['p50_us']:.1f}us)")
    if rec["messages_per_s"]:
        parts.append(f"{rec['messages_per_s']:.0f} msg/s")
    if rec["kernel_entries_per_msg"] is not None:
        parts.append(f"{rec['kernel_entries_per_msg']:.2f} entries/msg")
    return " ".join(parts)
