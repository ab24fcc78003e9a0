"""Run the real `exprun` CLI as a child process, and find what it may have left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]

NATS_SPEC = """\
version: 1
name: faults
brokers:
  nats:
    type: nats
    stream: {storage: memory, max_msgs: 100000, max_bytes: 100MB}
    workers: 32
defaults:
  message_size: 512B
  settle_time: 100ms
  drain_timeout: 3s
scenarios:
  Small: {messages: 300}
  Paced: {messages: 3000, rate: 2000}
variants:
  narrow: {brokers: {nats: {workers: 4}}}
  wide: {brokers: {nats: {workers: 64}}}
baseline: narrow
repetitions: 3
warmup: 0
reports: [markdown, json]
"""


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    """The child's environment: its temp files (and so its brokers' folders) under `tmp`."""
    return {**os.environ, "TMPDIR": str(tmp), **extra}


def exprun(
    *args: str, tmp: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env or environment(tmp),
        timeout=timeout,
    )


def start_exprun(*args: str, tmp: Path, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner.cli", *args],
        cwd=tmp,
        env=environment(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def leftovers(tmp: Path) -> list[str]:
    """Processes (brokers, trial processes, exprun) started with their temp files under `tmp`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.pid == os.getpid():
            continue
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            ours = str(tmp) in cmdline or process.environ().get("TMPDIR") == str(tmp)
            if ours and process.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{process.pid} {cmdline[:160]}")
        except psutil.Error:
            continue
    return found


def no_leftovers(tmp: Path, within: float = 5.0) -> list[str]:
    """Leftovers still there after `within` seconds (a killed tree takes a moment to go)."""
    deadline = time.monotonic() + within
    while (found := leftovers(tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_trials(path: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} trials recorded within {timeout} s")


def process_named(name: str, tmp: Path) -> psutil.Process:
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == name and str(tmp) in cmdline:
            return process
    raise AssertionError(f"no {name} process of this test is running")


def run_spec(tmp_path: Path, text: str, timeout: float, **env: str) -> list[dict[str, Any]]:
    """`exprun run` of the spec `text` (with `env` added); its trials, once it exited 0 and
    left nothing running."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    run = tmp_path / "run"
    done = exprun(
        "run",
        str(spec),
        "--out",
        str(run),
        tmp=tmp_path,
        timeout=timeout,
        env=environment(tmp_path, **env),
    )
    trials = read_jsonl(run / "trials.jsonl")
    errors = [t["error"] for t in trials if t["error"]]
    assert done.returncode == 0, f"{errors}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    no_leftovers(tmp_path)
    return trials
