"""Suite files and the program registry: loading, checking, matrix expansion.

A suite (experiments/suites/NAME.toml) is data: a [suite] table with run-wide
settings, an optional [defaults] table, and one or more [[matrix]] blocks.
Each block is the cross product of its lists; the suite is the union of its
blocks. See experiments/README.md for every key.

    registry = load_registry()                       # experiments/registry.toml
    suite = load_suite("quick", registry)            # name or path
    for case in suite.cases: print(case.case_id)

Errors raise SuiteError with a message naming the file, the line (when TOML
syntax is wrong, or the line where the offending key appears) and the key path
("matrix[2].payloads[1]"), and, for unknown names, the valid choices.
"""

import dataclasses
import pathlib
import re
import tomllib

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent
SUITES_DIR = EXPERIMENTS_DIR / "suites"
REGISTRY_PATH = EXPERIMENTS_DIR / "registry.toml"

# Modes the runner gives a meaning to: `rate` takes the `rates` axis (open
# loop, latency from the intended send time), `burst` the `inflight` axis.
# Any other mode name a registry program declares (`bulk`, ...) is valid in a
# suite too; it takes neither axis, and the program decides what it measures
# (experiments/README.md, "Program contract").
MODES = ("pingpong", "rate", "burst")
# Protocols are whatever the registry's programs declare; these are the socket
# kinds the runner knows for the usual names (used to pick a free port and to
# watch for the server's socket). Another name needs
# `transport_protocol = { NAME = "udp"|"tcp" }` in its registry entry.
KNOWN_TRANSPORTS = {"udp": "udp", "tcp": "tcp", "mqtt": "tcp", "dds": "udp", "rtps": "udp",
                    "rudp": "udp", "enet": "udp"}
TOPOLOGIES = ("loopback", "netns-veth")
# The program the steadiness check runs before each repetition.
CALIBRATION_PROGRAM = "ringlab_floor_pingpong"
MIN_PAYLOAD_BYTES = 16
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PROTOCOL_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
# A placeholder: {name} or {kind:argument}; {{ and }} are literal braces.
PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([a-z_]+)(?::([^{}\s]+))?\}")
READY_DELAY_RE = re.compile(r"^delay:(\d+(?:\.\d+)?)$")


class SuiteError(Exception):
    pass


# ---------------------------------------------------------------- registry

_PROGRAM_KEYS = {
    "kind": str, "description": str, "binary": str, "build_target": str,
    "install_hint": str, "version_command": list, "variants": list,
    "variant_args": dict, "protocol_args": dict, "mode_args": dict,
    "protocols": list, "modes": list, "max_connections": int, "pin": str,
    "pin_args": list, "port": str, "ready": str, "parser": str,
    "unsupported_exit_code": int, "stop_signal": str, "rtt": str,
    "server": list, "client": list, "params": dict, "param_args": dict, "env": dict,
    "files": dict, "transport_protocol": dict, "variant_pin_args": dict,
    "max_duration_args": list, "param_defaults": dict,
}
_PROGRAM_REQUIRED = ("kind", "binary", "variants", "protocols", "modes", "pin",
                     "port", "ready", "parser", "server", "client")


@dataclasses.dataclass
class Program:
    name: str
    spec: dict

    def __getattr__(self, key):
        try:
            return self.__dict__["spec"][key]
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key, default=None):
        return self.spec.get(key, default)

    def transport_of(self, protocol):
        """The socket kind ("udp"/"tcp") behind one of this program's protocols."""
        return self.spec.get("transport_protocol", {}).get(protocol,
                                                           KNOWN_TRANSPORTS.get(protocol))


def load_registry(path=REGISTRY_PATH):
    from . import parsers  # late import: parsers has no dependency on us
    path = pathlib.Path(path)
    data = _load_toml(path)
    programs = data.get("programs")
    if not isinstance(programs, dict) or not programs:
        raise SuiteError(f"{path}: needs a [programs.NAME] table")
    registry = {}
    for name, spec in programs.items():
        where = f"programs.{name}"
        if not isinstance(spec, dict):
            raise SuiteError(f"{path}: {where}: expected a table")
        for key, value in spec.items():
            if key not in _PROGRAM_KEYS:
                raise SuiteError(_at(path, key, f"{where}.{key}: unknown key; valid keys: "
                                     f"{', '.join(sorted(_PROGRAM_KEYS))}"))
            if not isinstance(value, _PROGRAM_KEYS[key]):
                raise SuiteError(_at(path, key, f"{where}.{key}: expected "
                                     f"{_PROGRAM_KEYS[key].__name__}"))
        for key in _PROGRAM_REQUIRED:
            if key not in spec:
                raise SuiteError(f"{path}: {where}: missing required key {key!r}")
        if spec["kind"] not in ("ours", "peer"):
            raise SuiteError(_at(path, "kind", f"{where}.kind: must be 'ours' or 'peer'"))
        if spec["pin"] not in ("flag", "taskset", "none"):
            raise SuiteError(_at(path, "pin", f"{where}.pin: must be flag, taskset or none"))
        if spec["port"] not in ("auto", "pick"):
            raise SuiteError(_at(path, "port", f"{where}.port: must be auto or pick"))
        if spec["parser"] not in parsers.PARSERS:
            raise SuiteError(_at(path, "parser", f"{where}.parser: unknown parser "
                                 f"{spec['parser']!r}; valid: {', '.join(sorted(parsers.PARSERS))}"))
        _check_program_extras(path, where, spec)
        registry[name] = Program(name, spec)
    for name, prog in registry.items():
        for other in prog.uses:
            if other not in registry:
                raise SuiteError(f"{path}: programs.{name}: {{binary:{other}}} names no program; "
                                 f"valid programs: {', '.join(sorted(registry))}")
    return registry


def _check_program_extras(path, where, spec):
    """The keys the protocol modules need: params, param_args, env, files,
    transport_protocol, and the placeholders in every template."""
    for mode in spec["modes"]:
        if not isinstance(mode, str) or not PROTOCOL_RE.match(mode):
            raise SuiteError(_at(path, "modes", f"{where}.modes: {mode!r} is not a mode name "
                                 "(lower case letters, digits, _ and -)"))
    for proto in spec["protocols"]:
        if not isinstance(proto, str) or not PROTOCOL_RE.match(proto):
            raise SuiteError(_at(path, "protocols", f"{where}.protocols: {proto!r} is not a "
                                 "protocol name (lower case letters, digits, _ and -)"))
        kind = spec.get("transport_protocol", {}).get(proto, KNOWN_TRANSPORTS.get(proto))
        if kind not in ("udp", "tcp"):
            raise SuiteError(_at(path, "protocols", f"{where}.protocols: protocol {proto!r} "
                                 "needs transport_protocol = {{ {proto} = \"udp\" or \"tcp\" }} "
                                 "(the socket kind the runner watches and picks ports for)"))
    ready = spec["ready"]
    if ready.startswith("delay:") and not READY_DELAY_RE.match(ready):
        raise SuiteError(_at(path, "ready", f"{where}.ready: {ready!r}: expected delay:SECONDS"))
    for pname, values in spec.get("params", {}).items():
        if not NAME_RE.match(pname):
            raise SuiteError(_at(path, "params", f"{where}.params.{pname}: parameter names are "
                                 "lower case letters, digits and _"))
        if values != "any" and not (isinstance(values, list) and values and
                                    all(_is_scalar(v) for v in values)):
            raise SuiteError(_at(path, "params", f"{where}.params.{pname}: expected a list of "
                                 "supported values or \"any\""))
    for pname, value in spec.get("param_defaults", {}).items():
        if pname not in spec.get("params", {}):
            raise SuiteError(_at(path, "param_defaults", f"{where}.param_defaults.{pname}: not "
                                 "declared in params"))
        if not _is_scalar(value):
            raise SuiteError(_at(path, "param_defaults", f"{where}.param_defaults.{pname}: "
                                 "expected a number, string or boolean"))
    for pname, table in spec.get("param_args", {}).items():
        if pname not in spec.get("params", {}):
            raise SuiteError(_at(path, "param_args", f"{where}.param_args.{pname}: not declared "
                                 "in params"))
        if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
            raise SuiteError(_at(path, "param_args", f"{where}.param_args.{pname}: expected a "
                                 "table value -> list of arguments"))
    for key in ("env", "files"):
        for k, v in spec.get(key, {}).items():
            if not isinstance(v, str):
                raise SuiteError(_at(path, key, f"{where}.{key}.{k}: expected a string"))
    for fname in spec.get("files", {}):
        if "/" in fname or fname in (".", "..") or not fname:
            raise SuiteError(_at(path, "files", f"{where}.files.{fname!r}: a plain file name "
                                 "is needed (it is written into the repetition's work dir)"))
    uses = []
    templates = [("server", t) for t in spec["server"]] + [("client", t) for t in spec["client"]]
    templates += [(f"env.{k}", v) for k, v in spec.get("env", {}).items()]
    templates += [(f"files.{k}", v) for k, v in spec.get("files", {}).items()]
    for key, text in templates:
        if not isinstance(text, str):
            raise SuiteError(_at(path, key.split(".")[0], f"{where}.{key}: expected strings"))
        for m in PLACEHOLDER_RE.finditer(text):
            kind, arg = m.group(1), m.group(2)
            if kind is None:
                continue
            if arg is not None and kind not in ("param", "param_args", "file", "binary"):
                raise SuiteError(_at(path, key.split(".")[0], f"{where}.{key}: unknown "
                                     f"placeholder {m.group(0)}; namespaced ones are "
                                     "{param:NAME} {param_args:NAME} {file:NAME} {binary:PROGRAM}"))
            if kind == "file" and arg not in spec.get("files", {}):
                raise SuiteError(_at(path, key.split(".")[0], f"{where}.{key}: {m.group(0)} "
                                     f"names no entry of [{where}.files]"))
            if kind in ("param", "param_args") and arg not in spec.get("params", {}):
                raise SuiteError(_at(path, key.split(".")[0], f"{where}.{key}: {m.group(0)}: "
                                     f"parameter {arg!r} is not declared in params"))
            if kind == "binary" and arg is not None and arg not in uses:
                uses.append(arg)
    spec["uses"] = uses


def _is_scalar(v):
    return isinstance(v, (str, int, float, bool))


# ---------------------------------------------------------------- suites

_SUITE_KEYS = {
    "name": str, "description": str, "repetitions": int, "order": str,
    "timeout_s": (int, float), "topology": str, "server_cpu": int,
    "client_cpu": int, "pin": bool, "ready_timeout_s": (int, float),
    "pause_s": (int, float), "calibrate": bool, "calibration_variant": str,
    "calibration_samples": int,
}
_MATRIX_KEYS = {
    "name": str, "program": str, "programs": list, "variants": (list, str),
    "protocols": list, "payloads": list, "connections": list, "mode": str,
    "modes": list, "rates": list, "inflight": list, "samples": int,
    "warmup": int, "duration_s": (int, float), "timeout_s": (int, float),
    "stop_at_saturation": bool, "saturation_fraction": (int, float), "params": dict,
    "max_duration_s": (int, float),
}
_DEFAULTS = {
    "payloads": [64], "connections": [1], "modes": ["pingpong"], "rates": [None],
    "inflight": [1], "samples": 50000, "warmup": 5000, "duration_s": None,
    "timeout_s": None, "stop_at_saturation": False, "saturation_fraction": 0.9, "params": {},
    "max_duration_s": None,
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One point of the matrix. Repetitions are run by the runner."""
    case_id: str
    block: str
    program: str
    variant: str
    protocol: str
    payload_bytes: int
    connections: int
    mode: str
    rate_per_s: float | None
    inflight: int
    samples: int
    warmup: int
    duration_s: float
    timeout_s: float
    stop_at_saturation: bool
    saturation_fraction: float
    skip_reason: str | None = None   # set when the program cannot run this case
    params: tuple = ()               # ((name, value), ...) sorted by name
    max_duration_s: float | None = None  # measured phase cap (ours: samples become a cap)

    @property
    def params_dict(self):
        return dict(self.params)

    @property
    def implementation(self):
        return f"{self.program}:{self.variant}"

    @property
    def scenario(self):
        """The case without the implementation: what ratios are taken within."""
        return (self.protocol, self.payload_bytes, self.connections, self.mode,
                self.rate_per_s, self.inflight, self.params)

    @property
    def sweep_key(self):
        """Cases that differ only in offered rate (for stop_at_saturation)."""
        return (self.block, self.program, self.variant, self.protocol,
                self.payload_bytes, self.connections, self.mode, self.inflight, self.params)


@dataclasses.dataclass
class Suite:
    name: str
    path: pathlib.Path
    text: str
    description: str
    repetitions: int
    order: str
    topology: str
    server_cpu: int | None
    client_cpu: int | None
    pin: bool
    ready_timeout_s: float
    pause_s: float
    cases: list
    calibrate: bool = True
    calibration_variant: str = "uring"
    calibration_samples: int = 1000
    targets: list = dataclasses.field(default_factory=list)


def resolve_suite_path(name_or_path):
    p = pathlib.Path(name_or_path)
    # A bare name is a suite under experiments/suites even when a directory of
    # that name exists where the runner is started (`run mqtt` from the repo
    # root must not pick up the mqtt/ module directory).
    if p.suffix == ".toml" or p.is_file():
        return p
    candidate = SUITES_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    valid = sorted(x.stem for x in SUITES_DIR.glob("*.toml"))
    raise SuiteError(f"unknown suite {name_or_path!r}; valid suites: {', '.join(valid)} "
                     f"(or a path to a .toml file)")


def load_suite(name_or_path, registry, cpu_count=None):
    path = resolve_suite_path(name_or_path)
    text = path.read_text(encoding="utf-8") if path.exists() else None
    if text is None:
        raise SuiteError(f"{path}: no such suite file")
    data = _parse_toml_text(text, path)
    return build_suite(data, path, text, registry, cpu_count)


def build_suite(data, path, text, registry, cpu_count=None):
    import os
    cpu_count = cpu_count or os.cpu_count() or 1
    for key in data:
        if key not in ("suite", "defaults", "matrix", "target"):
            raise SuiteError(_at(path, key, f"{key}: unknown top-level table; valid: "
                                 "suite, defaults, matrix, target", text))
    targets = _check_targets(data.get("target", []), path, text)
    head = data.get("suite")
    if not isinstance(head, dict):
        raise SuiteError(f"{path}: missing [suite] table")
    _check_keys(head, _SUITE_KEYS, "suite", path, text)
    if "name" not in head:
        raise SuiteError(f"{path}: suite.name: missing required key")
    order = head.get("order", "interleaved")
    if order not in ("interleaved", "sequential"):
        raise SuiteError(_at(path, "order", f"suite.order: {order!r} is not one of "
                             "interleaved, sequential", text))
    topology = head.get("topology", "loopback")
    if topology not in TOPOLOGIES:
        raise SuiteError(_at(path, "topology", f"suite.topology: {topology!r} is not one of "
                             f"{', '.join(TOPOLOGIES)}", text))
    reps = head.get("repetitions", 3)
    if reps < 1:
        raise SuiteError(_at(path, "repetitions", "suite.repetitions: must be >= 1", text))
    pin = head.get("pin", True) and cpu_count >= 2
    server_cpu = head.get("server_cpu", 0) if pin else None
    client_cpu = head.get("client_cpu", 1) if pin else None
    for key, cpu in (("server_cpu", server_cpu), ("client_cpu", client_cpu)):
        if cpu is not None and not 0 <= cpu < cpu_count:
            raise SuiteError(_at(path, key, f"suite.{key}: cpu {cpu} does not exist "
                                 f"(this machine has cpus 0..{cpu_count - 1})", text))

    cal_variant = head.get("calibration_variant", "uring")
    floor = registry.get(CALIBRATION_PROGRAM)
    if floor is not None and cal_variant not in floor.variants:
        raise SuiteError(_at(path, "calibration_variant", f"suite.calibration_variant: "
                             f"{cal_variant!r} is not a variant of {CALIBRATION_PROGRAM}; valid: "
                             f"{', '.join(floor.variants)}", text))
    cal_samples = head.get("calibration_samples", 1000)
    if not 100 <= cal_samples <= 100000:
        raise SuiteError(_at(path, "calibration_samples", "suite.calibration_samples: must be "
                             "in 100..100000", text))
    defaults = dict(_DEFAULTS)
    if "defaults" in data:
        if not isinstance(data["defaults"], dict):
            raise SuiteError(f"{path}: defaults: expected a table")
        _check_keys(data["defaults"], _MATRIX_KEYS, "defaults", path, text)
        defaults.update(_normalise_block(data["defaults"], "defaults", path, text, registry))

    blocks = data.get("matrix")
    if not isinstance(blocks, list) or not blocks:
        raise SuiteError(f"{path}: needs at least one [[matrix]] block")
    cases = []
    seen = {}
    for i, block in enumerate(blocks, 1):
        where = f"matrix[{i}]"
        _check_keys(block, _MATRIX_KEYS, where, path, text)
        merged = dict(defaults)
        own = _normalise_block(block, where, path, text, registry)
        # Parameters merge by name: a block adds to (or overrides some of)
        # the parameters of [defaults].
        params = dict(defaults.get("params") or {})
        params.update(own.pop("params", {}))
        merged.update(own)
        merged["params"] = params
        for case in _expand_block(merged, block.get("name", where), where, registry, path, text):
            if case.case_id in seen:
                raise SuiteError(f"{path}: {where}: case {case.case_id} is also produced by "
                                 f"{seen[case.case_id]}; make the blocks disjoint")
            seen[case.case_id] = where
            cases.append(case)
    return Suite(name=head["name"], path=path, text=text,
                 description=head.get("description", ""), repetitions=reps, order=order,
                 topology=topology, server_cpu=server_cpu, client_cpu=client_cpu,
                 pin=pin, ready_timeout_s=float(head.get("ready_timeout_s", 10)),
                 pause_s=float(head.get("pause_s", 0.2)), cases=cases,
                 calibrate=head.get("calibrate", True),
                 calibration_variant=cal_variant, calibration_samples=cal_samples,
                 targets=targets)


def registry_modes(registry):
    """The runner's modes, then every other mode a registry program declares."""
    out = list(MODES)
    for prog in registry.values():
        out += [m for m in prog.modes if m not in out]
    return out


def _registry_protocols(registry):
    out = []
    for prog in registry.values():
        out += [p for p in prog.protocols if p not in out]
    return out


TARGET_METRICS = ("p50", "p90", "p99", "p999", "max", "mean", "messages_per_s",
                  "cpu_us_per_msg", "server_cpu_us_per_msg", "kernel_entries_per_msg",
                  "server_kernel_entries_per_msg", "server_rss_kib_per_connection",
                  # broker throughput (MQTT fan-in / fan-out)
                  "deliveries_per_s", "connections_open",
                  # bulk transfers (the record's `bulk` object)
                  "goodput_bytes_per_s", "completion_s", "retransmission_ratio",
                  "spurious_retransmissions", "client_cpu_us_per_mb", "server_cpu_us_per_mb",
                  "client_kernel_entries_per_mb", "server_kernel_entries_per_mb")
TARGET_FIELDS = ("implementation", "program", "variant", "protocol", "payload_bytes",
                 "connections", "mode", "rate_per_s", "inflight")


def _check_targets(targets, path, text):
    """[[target]] blocks: a paired ratio the report checks against a bound.

        [[target]]
        name = "uring-fixed within 2% of its floor"
        metric = "p50"
        a = { implementation = "ringlab_pingpong:uring-fixed" }
        b = { implementation = "ringlab_floor_pingpong:uring" }
        where = { protocol = "udp" }     # optional, applies to both sides
        max = 1.02                       # and/or min = ...
    """
    if not isinstance(targets, list):
        raise SuiteError(f"{path}: target: use [[target]] blocks")
    out = []
    for i, t in enumerate(targets, 1):
        where = f"target[{i}]"
        if not isinstance(t, dict):
            raise SuiteError(f"{path}: {where}: expected a table")
        _check_keys(t, {"name": str, "metric": str, "a": dict, "b": dict, "where": dict,
                        "max": (int, float), "min": (int, float), "note": str},
                    where, path, text)
        for key in ("name", "metric", "a", "b"):
            if key not in t:
                raise SuiteError(f"{path}: {where}: missing {key!r}")
        if t["metric"] not in TARGET_METRICS:
            raise SuiteError(_at(path, "metric", f"{where}.metric: {t['metric']!r}; valid: "
                                 f"{', '.join(TARGET_METRICS)}", text))
        if "max" not in t and "min" not in t:
            raise SuiteError(f"{path}: {where}: needs max = ... and/or min = ...")
        for side in ("a", "b", "where"):
            sel = dict(t.get(side, {}))
            # TOML makes `params.qos = 1` a nested table: flatten it.
            if isinstance(sel.get("params"), dict):
                for k, v in sel.pop("params").items():
                    sel[f"params.{k}"] = v
            t = dict(t)
            if side in t:
                t[side] = sel
            for field in sel:
                if field not in TARGET_FIELDS and not (field.startswith("params.") and
                                                       NAME_RE.match(field[7:])):
                    raise SuiteError(_at(path, side, f"{where}.{side}.{field}: not a record "
                                         f"field; valid: {', '.join(TARGET_FIELDS)}, "
                                         "params.NAME", text))
        out.append(dict(t))
    return out


def _normalise_block(block, where, path, text, registry):
    out = {}
    for key, value in block.items():
        if key == "mode":
            out["modes"] = [value]
        elif key == "program":
            out["programs"] = [value]
        else:
            out[key] = value
    for key in ("payloads", "connections", "inflight"):
        for j, v in enumerate(out.get(key, [])):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SuiteError(_at(path, key, f"{where}.{key}[{j}]: expected a positive "
                                     f"integer, got {v!r}", text))
    for j, v in enumerate(out.get("payloads", [])):
        if v < MIN_PAYLOAD_BYTES:
            raise SuiteError(_at(path, "payloads", f"{where}.payloads[{j}]: {v} is below the "
                                 f"minimum payload of {MIN_PAYLOAD_BYTES} bytes", text))
    for j, v in enumerate(out.get("rates", [])):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise SuiteError(_at(path, "rates", f"{where}.rates[{j}]: expected a positive "
                                 f"number of messages/s, got {v!r}", text))
    known = _registry_protocols(registry)
    for j, v in enumerate(out.get("protocols", [])):
        if v not in known:
            raise SuiteError(_at(path, "protocols", f"{where}.protocols[{j}]: unknown protocol "
                                 f"{v!r}; valid (declared by the registry's programs): "
                                 f"{', '.join(known)}", text))
    if "params" in out:
        for name, values in out["params"].items():
            if not NAME_RE.match(name):
                raise SuiteError(_at(path, "params", f"{where}.params.{name}: parameter names "
                                     "are lower case letters, digits and _", text))
            if not isinstance(values, list) or not values:
                raise SuiteError(_at(path, "params", f"{where}.params.{name}: expected a "
                                     f"non-empty list of values, got {values!r}", text))
            for j, v in enumerate(values):
                if not _is_scalar(v):
                    raise SuiteError(_at(path, "params", f"{where}.params.{name}[{j}]: expected "
                                         f"a string, number or boolean, got {v!r}", text))
            if len({_param_token(v) for v in values}) != len(values):
                raise SuiteError(_at(path, "params", f"{where}.params.{name}: duplicate "
                                     "values", text))
    modes = registry_modes(registry)
    for j, v in enumerate(out.get("modes", [])):
        if v not in modes:
            key = "mode" if "mode" in block else "modes"
            raise SuiteError(_at(path, key, f"{where}.{key}: unknown mode {v!r}; valid "
                                 "(the runner's and those the registry's programs declare): "
                                 f"{', '.join(modes)}", text))
    if "max_duration_s" in out and out["max_duration_s"] <= 0:
        raise SuiteError(_at(path, "max_duration_s", f"{where}.max_duration_s: must be > 0",
                             text))
    for key in ("samples", "warmup"):
        if key in out and (out[key] < (1 if key == "samples" else 0)):
            raise SuiteError(_at(path, key, f"{where}.{key}: must be "
                                 f"{'>= 1' if key == 'samples' else '>= 0'}", text))
    return out


def _expand_block(b, block_name, where, registry, path, text):
    programs = b.get("programs")
    if not programs:
        raise SuiteError(f"{path}: {where}: missing 'program' (valid programs: "
                         f"{', '.join(sorted(registry))})")
    if "protocols" not in b:
        raise SuiteError(f"{path}: {where}: missing 'protocols' (valid: "
                         f"{', '.join(_registry_protocols(registry))})")
    for j, name in enumerate(programs):
        if name not in registry:
            key = "program" if len(programs) == 1 else f"programs[{j}]"
            raise SuiteError(_at(path, "program", f"{where}.{key}: unknown program {name!r}; "
                                 f"valid programs: {', '.join(sorted(registry))}", text))
    modes = b["modes"]
    if "rate" in modes and b.get("rates") in (None, [None]):
        raise SuiteError(f"{path}: {where}: mode 'rate' needs 'rates' (messages/s)")
    for name in programs:
        prog = registry[name]
        variants = b.get("variants", "all")
        if variants == "all":
            variants = [v for v in prog.variants if v != "auto"]
        elif isinstance(variants, str):
            raise SuiteError(_at(path, "variants", f"{where}.variants: expected a list or "
                                 "\"all\"", text))
        for j, v in enumerate(variants):
            if v not in prog.variants:
                raise SuiteError(_at(path, "variants", f"{where}.variants[{j}]: unknown "
                                     f"{'preset' if prog.kind == 'ours' else 'variant'} {v!r} "
                                     f"for {name}; valid: {', '.join(prog.variants)}", text))
        param_sets = _param_product(b.get("params") or {})
        for protocol in b["protocols"]:
            for payload in b["payloads"]:
                for conns in b["connections"]:
                    for mode in modes:
                        rates = b["rates"] if mode == "rate" else [None]
                        inflights = b["inflight"] if mode == "burst" else [1]
                        for rate in rates:
                            for inflight in inflights:
                                for params in param_sets:
                                    for variant in variants:
                                        yield _make_case(b, block_name, prog, variant, protocol,
                                                         payload, conns, mode, rate, inflight,
                                                         params)


def _param_product(params):
    """Cross product of the parameter lists: [((name, value), ...), ...],
    names sorted so a case's parameters have one order everywhere."""
    sets = [()]
    for name in sorted(params):
        sets = [s + ((name, v),) for s in sets for v in params[name]]
    return sets


def _param_token(value):
    """A parameter value as it appears in a case id."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _fmt_num(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", value)


def params_id(params):
    """The case-id part for ((name, value), ...): numbers glue to the name
    (qos1, loss_pct20), other values follow an underscore
    (reliability_best-effort)."""
    out = []
    for name, value in params:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        out.append(f"{name}{_param_token(value)}" if numeric else
                   f"{name}_{_param_token(value)}")
    return out


def _param_skip_reason(prog, params):
    declared = prog.get("params", {})
    for name, value in params:
        if name not in declared:
            takes = ", ".join(sorted(declared)) or "none"
            return f"{prog.name} does not take parameter {name!r} (takes: {takes})"
        allowed = declared[name]
        if allowed != "any" and not any(_same_value(value, a) for a in allowed):
            return (f"{prog.name} does not support {name}={value!r} (supports "
                    f"{', '.join(repr(a) for a in allowed)})")
    return None


def _same_value(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return float(a) == float(b)


def _make_case(b, block_name, prog, variant, protocol, payload, conns, mode, rate, inflight,
               params=()):
    parts = [protocol, f"{payload}B", f"c{conns}", mode]
    if mode == "rate":
        parts.append(f"r{_fmt_num(rate)}")
    if mode == "burst":
        parts.append(f"i{inflight}")
    parts += params_id(params)
    parts += [prog.name, variant]
    case_id = "-".join(str(p) for p in parts)
    samples = b["samples"]
    duration = b["duration_s"]
    if mode == "rate" and duration:
        samples = max(1, int(rate * duration))
    if duration is None:
        duration = 1.0
    longest = max(duration, b.get("max_duration_s") or 0)
    timeout = b["timeout_s"] or max(30.0, 4 * longest + 20)
    reason = None
    if protocol not in prog.protocols:
        reason = f"{prog.name} does not support protocol {protocol}"
    elif mode not in prog.modes:
        reason = f"{prog.name} does not support mode {mode} (supports {', '.join(prog.modes)})"
    elif conns > prog.get("max_connections", 1):
        reason = (f"{prog.name} supports at most {prog.get('max_connections', 1)} "
                  f"connection(s) per run")
    else:
        reason = _param_skip_reason(prog, params)
    return Case(case_id=case_id, block=block_name, program=prog.name, variant=variant,
                protocol=protocol, payload_bytes=payload, connections=conns, mode=mode,
                rate_per_s=float(rate) if rate is not None else None, inflight=inflight,
                samples=samples, warmup=b["warmup"], duration_s=float(duration),
                timeout_s=float(timeout), stop_at_saturation=b["stop_at_saturation"],
                saturation_fraction=float(b["saturation_fraction"]), skip_reason=reason,
                params=tuple(params),
                # Rate mode's measured phase is rate x duration_s already.
                max_duration_s=float(b["max_duration_s"])
                if b.get("max_duration_s") and mode != "rate" else None)


def _fmt_num(x):
    return str(int(x)) if float(x).is_integer() else str(x)


# ---------------------------------------------------------------- helpers

def _load_toml(path):
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SuiteError(f"{path}: cannot read: {e.strerror}") from None
    return _parse_toml_text(text, path)


def _parse_toml_text(text, path):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            line = int(m.group(1))
            src = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
            raise SuiteError(f"{path}:{line}:{m.group(2)}: TOML syntax error: "
                             f"{msg[:m.start()].strip()}\n    {line} | {src}") from None
        raise SuiteError(f"{path}: TOML syntax error: {msg}") from None


def _check_keys(table, allowed, where, path, text=None):
    for key, value in table.items():
        if key not in allowed:
            raise SuiteError(_at(path, key, f"{where}.{key}: unknown key; valid keys: "
                                 f"{', '.join(sorted(allowed))}", text))
        kinds = allowed[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join("list" if k is list else k.__name__ for k in kinds)
            raise SuiteError(_at(path, key, f"{where}.{key}: expected {names}, got "
                                 f"{type(value).__name__} {value!r}", text))


def _at(path, key, message, text=None):
    """Prefixes `message` with file:line of the first `key = ` in the file."""
    if text is None:
        try:
            text = pathlib.Path(path).read_text(encoding="utf-8")
        except OSError:
            text = ""
    lines = text.splitlines()
    start = 0
    # Search inside the table the message is about: the i-th [[matrix]],
    # [defaults], [suite] or [programs.NAME].
    m = re.match(r"(matrix)\[(\d+)\]|(suite|defaults)\b|programs\.([\w-]+)", message)
    if m:
        if m.group(1):
            headers = [n for n, l in enumerate(lines) if re.match(r"\s*\[\[matrix\]\]", l)]
            idx = int(m.group(2)) - 1
            start = headers[idx] if idx < len(headers) else 0
        else:
            name = m.group(3) or f"programs.{m.group(4)}"
            for n, l in enumerate(lines):
                if re.match(rf"\s*\[{re.escape(name)}\]", l):
                    start = n
                    break
    for n in range(start, len(lines)):
        if n > start and re.match(r"\s*\[", lines[n]) and m and m.group(1):
            break  # left this [[matrix]] block
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[n]):
            return f"{path}:{n + 1}: {message}"
    return f"{path}: {message}"
