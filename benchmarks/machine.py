"""The machine a benchmark ran on, and whether someone else's broker shares it."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import psutil

from benchmarks.matrix import SPEC
from runner.execution.environment import collect_environment

POLL_S = 5.0


def foreign_brokers() -> list[str]:
    """Broker processes on this machine that this process did not start."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        is_broker = proc.info["name"] == "nats-server" or "kafka.Kafka" in cmdline
        if is_broker and proc.info["pid"] not in mine:
            found.append(f"pid {proc.info['pid']}: {' '.join(cmdline)[:120]}")
    return found


def wait_for_quiet_machine(limit_s: float) -> list[str]:
    """Wait (up to limit_s) until no other Kafka broker runs: 2 cores cannot host two.
    Returns the other brokers still running then."""
    deadline = time.monotonic() + limit_s
    announced = False
    while True:
        others = foreign_brokers()
        kafkas = [line for line in others if "kafka.Kafka" in line]
        if not kafkas or time.monotonic() >= deadline:
            return others
        if not announced:
            print(f"waiting for another Kafka broker to end: {kafkas[0]}", file=sys.stderr)
            announced = True
        time.sleep(POLL_S)


def describe() -> dict[str, Any]:
    """CPU, memory, OS, Python and client versions (as exprun's environment.json has them)."""
    environment = collect_environment(SPEC, {})
    return {
        **environment["machine"],
        "python": environment["python"],
        "clients": environment["clients"],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
