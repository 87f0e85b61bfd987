"""Machine and build metadata stored in every record.

    info = collect(repo_dir, build_dir, registry)   # dict, see SCHEMA.md "machine"

Every probe is best effort: a missing tool gives None, never an exception, so
metadata can't stop a run.
"""

import datetime
import os
import pathlib
import platform
import re
import resource
import shutil
import socket
import subprocess


def _run(argv, cwd=None, timeout=10):
    try:
        out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def compiler(build_dir):
    cache = pathlib.Path(build_dir) / "CMakeCache.txt"
    cxx, build_type = None, None
    if cache.exists():
        for line in cache.read_text(errors="replace").splitlines():
            if line.startswith("CMAKE_CXX_COMPILER:"):
                cxx = line.split("=", 1)[1].strip()
            elif line.startswith("CMAKE_BUILD_TYPE:"):
                build_type = line.split("=", 1)[1].strip() or None
    cxx = cxx or shutil.which("c++")
    version = _run([cxx, "--version"]) if cxx else None
    return (version.splitlines()[0] if version else cxx), build_type


def memlock_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    fmt = lambda v: "unlimited" if v == resource.RLIM_INFINITY else f"{v // 1024} KiB"
    return f"{fmt(soft)} (hard {fmt(hard)})"


def collect(repo_dir, build_dir, registry=None):
    comp, build_type = compiler(build_dir)
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo_dir)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir)
    if commit is None:
        dirty = None
    else:
        dirty = bool(status)
    try:
        uring_sysctl = pathlib.Path("/proc/sys/kernel/io_uring_disabled").read_text().strip()
    except OSError:
        uring_sysctl = None
    peers = {}
    for name, prog in (registry or {}).items():
        cmd = prog.get("version_command")
        if cmd and shutil.which(cmd[0]):
            out = _run(cmd)
            if out:
                m = re.search(r"version[^\d]*([\w.\-+]+)", out)
                peers[name] = m.group(1) if m else out.splitlines()[0]
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "liburing": _run(["dpkg-query", "-W", "-f=${Version}", "liburing-dev"]),
        "compiler": comp,
        "build_type": build_type,
        "git_commit": commit,
        "git_dirty": dirty,
        "time_utc": utc_now(),
        "python": platform.python_version(),
        "memlock_limit": memlock_limit(),
        "io_uring_disabled": uring_sysctl,
        "peer_versions": peers,
    }


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
