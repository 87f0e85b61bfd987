"""Command line: run / report / compare / validate / list.

    python3 experiments/run.py quick                 # = run quick
    python3 experiments/run.py run quick --repetitions 1 --only 'udp-.*uring'
    python3 experiments/run.py report results/quick/20250101T120000Z-host
    python3 experiments/run.py compare OLD NEW [--threshold 0.05] [--out FILE]
    python3 experiments/run.py validate results/quick/...   # schema check
    python3 experiments/run.py list [SUITE]                 # suites / cases

`run` prints the report path as its very last line on stdout. Exit codes:
0 ok, 1 run problems (no ok record, validation errors), 2 bad input.
"""

import argparse
import datetime
import pathlib
import sys

from . import compare as compare_mod
from . import report, results, runner, schema
from .suite import SUITES_DIR, SuiteError, load_registry, load_suite

COMMANDS = ("run", "report", "compare", "validate", "list")


def _kv(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return tuple(text.split("=", 1))


def _key_field(text):
    if text in compare_mod.KEY_FIELDS or (text.startswith("params.") and len(text) > 7):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected one of "
                                     f"{', '.join(compare_mod.KEY_FIELDS)} or params.NAME")


def build_parser():
    p = argparse.ArgumentParser(prog="ringlab", description="ringlab experiment runner")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a suite (name in experiments/suites or a .toml path)")
    r.add_argument("suite")
    r.add_argument("--build-dir", help="CMake build dir with bench/ringlab_pingpong "
                   "(default $RINGLAB_BUILD_DIR or <repo>/build/release)")
    r.add_argument("--results", help="results root (default <repo>/results)")
    r.add_argument("--registry", help="program registry (default experiments/registry.toml)")
    r.add_argument("--binary", action="append", type=_kv, default=[], metavar="PROGRAM=PATH",
                   help="use this executable for a registry program")
    r.add_argument("--no-build", action="store_true", help="never run cmake")
    r.add_argument("--repetitions", type=int, help="override suite.repetitions")
    r.add_argument("--only", metavar="REGEX", help="run only cases whose id matches")
    r.add_argument("--quiet", action="store_true", help="no progress on stderr")
    rp = sub.add_parser("report", help="(re)write report.md for a result folder")
    rp.add_argument("dir")
    c = sub.add_parser("compare", help="compare two result folders/files (B relative to A)")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--threshold", type=float, default=0.05,
                   help="minimum |ratio-1| to call a difference significant (default 0.05)")
    c.add_argument("--tail-threshold", type=float, default=0.10,
                   help="the same for p99, which drifts more between runs (default 0.10)")
    c.add_argument("--min-reps", type=int, default=2)
    c.add_argument("--ignore", action="append", default=[], type=_key_field,
                   help="drop a field from the case match key: one of "
                   f"{', '.join(compare_mod.KEY_FIELDS)}, or params.NAME")
    c.add_argument("--where-a", action="append", type=_kv, default=[], metavar="FIELD=VALUE")
    c.add_argument("--where-b", action="append", type=_kv, default=[], metavar="FIELD=VALUE")
    c.add_argument("--normalize", metavar="PROGRAM:VARIANT",
                   help="divide each side, repetition by repetition, by this implementation "
                   "measured in the same run (e.g. sockperf:blocking or "
                   "ringlab_floor_pingpong:uring), or by each record's own steadiness check "
                   "(calibration), then compare what remains")
    c.add_argument("--normalize-spinning", metavar="PROGRAM:VARIANT",
                   help="with --normalize: the anchor for spinning rows (busy presets, "
                   "sockperf --nonblocked, floor uring-spin), e.g. sockperf:nonblocked")
    c.add_argument("--out", help="Markdown output (default results/compare/<stamp>.md)")
    v = sub.add_parser("validate", help="check records against schema/result-v1.json")
    v.add_argument("path")
    ls = sub.add_parser("list", help="list suites, or the cases of one suite")
    ls.add_argument("suite", nargs="?")
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")   # `run.py quick` is `run.py run quick`
    args = build_parser().parse_args(argv)
    try:
        return globals()[f"cmd_{args.command}"](args)
    except SuiteError as e:
        print(f"ringlab: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"ringlab: error: {e}", file=sys.stderr)
        return 2


def cmd_run(args):
    opts = runner.RunOptions(
        suite=args.suite, build_dir=args.build_dir, results_root=args.results,
        registry_path=args.registry, binaries=dict(args.binary), build=not args.no_build,
        repetitions=args.repetitions, only=args.only,
        progress=None if args.quiet else sys.stderr)
    run_dir = runner.run_suite(opts)
    run, records = results.load(run_dir)
    ok = sum(r["status"] == "ok" for r in records)
    print(f"ringlab: {ok}/{len(records)} records ok; results in {run_dir}", file=sys.stderr)
    print(run_dir / "report.md")
    return 0 if ok else 1


def cmd_report(args):
    print(report.write_report(args.dir))
    return 0


def cmd_compare(args):
    _, ra = results.load(args.a)
    _, rb = results.load(args.b)
    rows = compare_mod.compare(ra, rb, args.threshold, args.min_reps, args.ignore,
                               dict(args.where_a), dict(args.where_b), args.tail_threshold,
                               normalize=args.normalize,
                               normalize_spinning=args.normalize_spinning)
    text = compare_mod.render(rows, args.a, args.b, args.threshold, args.min_reps,
                              args.tail_threshold, normalize=args.normalize,
                              normalize_spinning=args.normalize_spinning)
    out = pathlib.Path(args.out) if args.out else None
    if out is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out_dir = runner.REPO_DIR / "results" / "compare"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{stamp}-{pathlib.Path(args.a).name}-vs-{pathlib.Path(args.b).name}.md"
        n = 2
        while out.exists():
            out = out.with_name(f"{out.stem}-{n}.md")
            n += 1
    out.write_text(text)
    print(text)
    print(out)
    return 0


def cmd_validate(args):
    _, records = results.load(args.path)
    bad = 0
    for i, r in enumerate(records):
        for e in schema.validate_record(r):
            bad += 1
            print(f"record {i} ({r.get('case_id', '?')}): {e}")
    print(f"{len(records)} records, {bad} schema error(s)")
    return 1 if bad else 0


def cmd_list(args):
    if not args.suite:
        for p in sorted(SUITES_DIR.glob("*.toml")):
            print(p.stem)
        return 0
    suite = load_suite(args.suite, load_registry())
    for i, c in enumerate(suite.cases, 1):
        extra = f"  [skipped: {c.skip_reason}]" if c.skip_reason else ""
        print(f"{i:4d} {c.case_id}{extra}")
    print(f"{len(suite.cases)} cases x {suite.repetitions} repetitions")
    return 0
