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
from .suite import EXPERIMENTS_DIR, SuiteError, load_registry, load_suite

REPO_DIR = EXPERIMENTS_DIR.parent
RESULT_SCHEMA = schema.RECORD_SCHEMA_ID


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
    used = sorted({c.program for c in suite.cases})
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
    """Fills {placeholders}; a token that is exactly "{name}" with a list
    value in `lists` becomes those tokens."""
    out = []
    for token in template:
        m = re.fullmatch(r"\{(\w+)\}", token)
        if m and m.group(1) in lists:
            out += [expand_one(t, values) for t in lists[m.group(1)]]
        else:
            out.append(expand_one(token, values))
    return out


def expand_one(token, values):
    def sub(m):
        key = m.group(1)
        if key not in values or values[key] is None:
            raise KeyError(f"placeholder {{{key}}} has no value")
        return str(values[key])
    return re.sub(r"\{(\w+)\}", sub, token)


def pick_port(protocol, host="127.0.0.1"):
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- one run

class CaseRunner:
    def __init__(self, suite, registry, binaries, sup, run_dir, run_id, machine_info, topo):
        self.suite, self.registry, self.binaries = suite, registry, binaries
        self.sup, self.run_dir, self.run_id = sup, run_dir, run_id
        self.machine, self.topo = machine_info, topo
        self.log_dir = run_dir / "logs"
        self._next_port = 21000 + os.getpid() % 20000

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
            "variant": case.variant, "implementation": case.implementation,
            "backend": case.variant, "backend_effective": None,
            "flags": " ".join(prog.get("variant_args", {}).get(case.variant, [])) or None,
            "protocol": case.protocol, "payload_bytes": case.payload_bytes,
            "connections": case.connections, "mode": case.mode,
            "rate_per_s": case.rate_per_s, "inflight": case.inflight,
            "samples_requested": case.samples, "warmup": case.warmup,
            "duration_s_requested": case.duration_s, "samples": None, "lost": None,
            "rtt_us": {k: None for k in parsers.RTT_KEYS}, "rtt_note": None,
            "messages_per_s": None, "cpu_us_per_msg": None, "cpu_source": None,
            "kernel_entries_per_msg": None, "server_stats": None, "pinning": pinning,
            "topology": self.suite.topology, "server_address": None,
            "commands": {"server": None, "client": None},
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

    def _run(self, case, rep, rec):
        prog = self.registry[case.program]
        binary, why = self.binaries[case.program]
        if binary is None:
            rec["status"] = "skipped" if prog.kind == "peer" else "failed"
            rec["reason"] = why
            return
        stem = f"{case.case_id}.r{rep}"
        paths = {k: self.log_dir / f"{stem}.{k}" for k in
                 ("server.out", "server.err", "client.out", "client.err",
                  "server.json", "client.json")}
        host = self.topo.server_ip if self.topo else "127.0.0.1"
        if prog.port == "pick":
            if self.topo:
                self._next_port += 1
                port = self._next_port
            else:
                port = pick_port(case.protocol)
        else:
            port = 0
        pinning = rec["pinning"]
        pin_args = prog.get("pin_args", [])
        values = {
            "binary": binary, "variant": case.variant, "protocol": case.protocol,
            "payload": case.payload_bytes, "connections": case.connections,
            "mode": case.mode, "inflight": case.inflight,
            "rate": int(case.rate_per_s) if case.rate_per_s else None,
            "samples": case.samples, "warmup": case.warmup, "duration_s": case.duration_s,
            "duration_s_int": max(1, int(round(case.duration_s))),
            "server_host": host, "port": port, "server_json": paths["server.json"],
            "client_json": paths["client.json"],
            "client_timeout_s": max(1, int(case.timeout_s)),
        }
        lists = {
            "variant_args": prog.get("variant_args", {}).get(case.variant, []),
            "protocol_args": prog.get("protocol_args", {}).get(case.protocol, []),
            "mode_args": prog.get("mode_args", {}).get(case.mode, []),
            "server_pin": [], "client_pin": [],
        }
        if pinning["method"] == "flag":
            lists["server_pin"] = [t.replace("{cpu}", str(pinning["server_cpu"]))
                                   for t in pin_args]
            lists["client_pin"] = [t.replace("{cpu}", str(pinning["client_cpu"]))
                                   for t in pin_args]
        try:
            server_argv = self._prefix("server", pinning) + expand_args(prog.server, values,
                                                                        lists)
        except KeyError as e:
            rec.update(status="failed", reason=f"registry {case.program}.server: {e.args[0]}")
            return
        rec["commands"]["server"] = server_argv
        unsupported = prog.get("unsupported_exit_code")

        server = self.sup.start(server_argv, paths["server.out"], paths["server.err"])
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
                client_argv = self._prefix("client", pinning) + expand_args(prog.client,
                                                                             values, lists)
            except KeyError as e:
                rec.update(status="failed",
                           reason=f"registry {case.program}.client: {e.args[0]}")
                return
            rec["commands"]["client"] = client_argv
            client = self.sup.start(client_argv, paths["client.out"], paths["client.err"])
            code = client.wait(case.timeout_s + 5)
            if code is None:
                client.stop(signal.SIGTERM, grace_s=2)
                rec.update(status="failed", reason=f"client did not finish within "
                           f"{case.timeout_s + 5:g} s; killed")
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
        rec["backend_effective"] = m["backend_effective"] or case.variant
        if m["flags"] is not None:
            rec["flags"] = m["flags"]
        if m["cpu_us_per_msg"] is not None:
            rec["cpu_us_per_msg"] = m["cpu_us_per_msg"]
            rec["cpu_source"] = "program (client, measured phase)"
        else:
            msgs = m["total_messages"] or ((m["samples"] or 0) + case.warmup)
            cpu_s = client.cpu_s()
            if cpu_s is not None and msgs:
                rec["cpu_us_per_msg"] = cpu_s * 1e6 / msgs
                rec["cpu_source"] = "runner rusage (client, whole run incl. warm-up)"

    def _wait_ready(self, server, prog, case, host, port):
        deadline = time.monotonic() + self.suite.ready_timeout_s
        regex = None if prog.ready == "listen" else re.compile(prog.ready, re.M)
        while time.monotonic() < deadline:
            if regex is not None:
                for text in (server.stdout_text(), server.stderr_text()):
                    m = regex.search(text)
                    if m:
                        addr = m.groupdict().get("address") or f"{host}:{port}"
                        return addr, None
            elif procs.listening(server.pid, port, case.protocol):
                return f"{host}:{port}", None
            if not server.alive():
                code = server.returncode
                last = procs.tail(server.stderr_text() or server.stdout_text(), 1)
                return None, f"server exited with code {code} before it was ready" + \
                    (f": {last}" if last else "")
            time.sleep(0.005)
        server.stop(signal.SIGKILL, grace_s=1)
        what = "a line matching " + repr(prog.ready) if regex else \
            f"a {case.protocol} socket on port {port}"
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
    for name, (path, why) in binaries.items():
        say(f"  {name}: {path}" if path else f"  {name}: UNAVAILABLE: {why}; its cases are "
            "recorded as " + ("skipped" if registry[name].kind == "peer" else "failed"))
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
            runner = CaseRunner(suite, registry, binaries, sup, run_dir, run_id, info, topo_ctx)
            for n, (case, index, rep) in enumerate(order, 1):
                skip = topo_skip
                if case.mode == "rate" and case.stop_at_saturation:
                    sat = saturated.get(case.sweep_key)
                    if sat is not None and case.rate_per_s > sat:
                        skip = f"beyond saturation: {case.implementation} already fell " \
                               f"below {case.saturation_fraction:.0%} of the offered rate " \
                               f"at {sat:g}/s"
                runnable = not (skip or case.skip_reason or binaries[case.program][0] is None)
                remaining = sum(1 for c, _, _ in order[n - 1:] if not c.skip_reason)
                progress.line(f"[{n}/{len(order)}] case {index}/{len(suite.cases)} "
                              f"{case.case_id} rep {rep}/{suite.repetitions} "
                              f"(ETA {progress.eta(remaining, case.duration_s + 1.5)})")
                rec = runner.run(case, index, rep, skip_reason=skip)
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
    if rec["messages_per_s"]:
        parts.append(f"{rec['messages_per_s']:.0f} msg/s")
    if rec["kernel_entries_per_msg"] is not None:
        parts.append(f"{rec['kernel_entries_per_msg']:.2f} entries/msg")
    return " ".join(parts)
