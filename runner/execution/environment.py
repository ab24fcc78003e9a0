"""What a run ran on: versions, machine, and the spec's git commit (environment.json)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from runner.versions import package_version


def _librdkafka_version() -> str | None:
    try:
        import confluent_kafka

        return str(confluent_kafka.libversion()[0])
    except ImportError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def spec_git(spec_path: Path) -> dict[str, Any] | None:
    """The commit and branch of the spec's repository, whether the spec file had uncommitted
    changes, and whether the repository had any (dirty)."""
    folder = spec_path.resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--", str(spec_path.resolve()))
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    return {
        "commit": commit,
        "branch": branch if branch and branch != "HEAD" else None,  # HEAD: a detached one
        "spec_modified": bool(status),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def host_facts() -> dict[str, Any]:
    """This machine: CPU, memory, OS, Python and the client libraries (also run on load hosts)."""
    memory = psutil.virtual_memory()
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "clients": {
            "confluent-kafka": package_version("confluent-kafka"),
            "librdkafka": _librdkafka_version(),
            "nats-py": package_version("nats-py"),
        },
        "machine": {
            "cpu": _cpu_model(),
            "cpu_count": psutil.cpu_count(logical=True),
            "cpu_count_physical": psutil.cpu_count(logical=False),
            "memory_gb": round(memory.total / 2**30, 1),
            "os": platform.platform(),
            "hostname": platform.node(),
        },
        "exprun": package_version("exprun"),
    }


def collect_environment(
    spec_path: Path,
    brokers: dict[str, dict[str, Any]],
    load_generators: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that can make two runs' figures differ besides the spec itself;
    `load_generators`: where each trial's clients run (default: in the trial process)."""
    here = host_facts()
    return {
        "exprun": here["exprun"],
        "python": here["python"],
        "python_implementation": here["python_implementation"],
        "executable": sys.executable,
        "clients": here["clients"],
        "brokers": brokers,
        "machine": here["machine"],
        "load_generators": load_generators or {"hosts": 1, "processes": 1},
        "spec_git": spec_git(spec_path),
    }
