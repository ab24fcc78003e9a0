"""exprun's side of each comparison: trials configured as a spec would configure them, and run
as `exprun` runs them (a forked trial process per trial), or through benchmarks.probe.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner.execution.brokers import RunningBroker
from runner.execution.load_hosts import LoadHosts, load_hosts
from runner.execution.trial.parent import run_trial
from runner.execution.trial.request import TrialRequest
from schemas.resolve import TrialSettings
from schemas.results import TrialResult
from schemas.spec import ExecutionSettings, KafkaBroker, NatsBroker

MESSAGE_SIZE = 1024
WORKERS = 256  # "a large worker pool": the handler pool never limits a zero-work trial
MAX_PENDING = 4096  # exprun's default JetStream in-flight window
PROBE_TIMEOUT_S = 300.0


class TrialFailed(Exception):
    """An exprun trial of the benchmark did not finish "ok"; str() is its error."""


def nats_config(*, core: bool = False, in_flight: int = MAX_PENDING) -> NatsBroker:
    """The NATS broker of the harness's trials: a memory stream, or (core) plain subjects;
    `in_flight` bounds the producers' unanswered messages, requests or operations."""
    if core:
        return NatsBroker.model_validate({"type": "nats", "workers": WORKERS, "jetstream": False})
    return NatsBroker.model_validate(
        {
            "type": "nats",
            "workers": WORKERS,
            "stream": {"storage": "memory"},
            "publish": {"max_pending": in_flight},
        }
    )


def kafka_config(
    producer: dict[str, str | int], consumer: dict[str, str | int] | None = None
) -> KafkaBroker:
    return KafkaBroker.model_validate(
        {
            "type": "kafka",
            "workers": WORKERS,
            "topic": {"partitions": 1, "replication_factor": 1},
            "producer": producer,
            "consumer": consumer or {},
        }
    )


def trial_request(
    broker: RunningBroker,
    config: NatsBroker | KafkaBroker,
    messages: int | None,
    *,
    rate: float | None = None,
    duration: float | None = None,
    backlog: int | None = None,
    pattern: dict[str, Any] | None = None,
) -> TrialRequest:
    """Zero processing time, no settle wait: only the clients and the broker are measured.
    `pattern`: the workload's pattern settings, e.g. {"pattern": "kv", "kv": {...}}."""
    workload = TrialSettings.model_validate(
        {
            **(pattern or {}),
            "messages": messages,
            "duration": f"{duration}s" if duration is not None else None,
            "backlog": backlog,
            "message_size": MESSAGE_SIZE,
            "processing_time": "0s",
            "settle_time": "0s",
            "drain_timeout": "30s",
            "rate": rate if rate is not None else "unlimited",
        }
    )
    return TrialRequest(
        index=0,
        broker=config.type,
        variant="benchmark",
        scenario="benchmark",
        repetition=0,
        warmup=False,
        address=broker.address,
        broker_pids=tuple(broker.pids),
        broker_config=config,
        workload=workload,
        topic=f"exprun-bench-{uuid.uuid4().hex[:12]}",
        access=broker.access,
    )


def fresh(request: TrialRequest) -> TrialRequest:
    """The same trial on a topic / stream of its own."""
    return request.model_copy(update={"topic": f"exprun-bench-{uuid.uuid4().hex[:12]}"})


def run(request: TrialRequest) -> TrialResult:
    """One trial as exprun runs it; TrialFailed unless it is "ok" and lost nothing."""
    return checked(run_trial(fresh(request)))


def run_on_hosts(hosts: LoadHosts, request: TrialRequest) -> TrialResult:
    """One trial with its clients on the Dask hosts (as many as `hosts` offers: processes 1)."""
    single = request.model_copy(update={"processes": 1})
    return checked(hosts.run_trial(fresh(single)))


@contextlib.contextmanager
def local_hosts(count: int) -> Iterator[LoadHosts]:
    """`count` load-generator hosts on this machine: a LocalCluster's worker processes."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=count,
        threads_per_worker=1,
        processes=True,
        resources={"loadgen": 1},
        dashboard_address=None,
    ) as cluster:
        settings = ExecutionSettings(engine="dask", hosts=count)
        with load_hosts(settings, cluster.scheduler_address) as hosts:
            assert hosts is not None
            yield hosts


def run_probe(request: TrialRequest, env: dict[str, str]) -> TrialResult:
    """One trial in a fresh interpreter (benchmarks.probe) with extra environment variables."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        handle.write(fresh(request).model_dump_json())
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.probe", handle.name],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env={**os.environ, **env},
            cwd=Path(__file__).resolve().parent.parent,
        )
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TrialFailed(f"probe exit {done.returncode}: {last[:300]}")
    return checked(TrialResult.model_validate_json(done.stdout.strip().splitlines()[-1]))


def checked(result: TrialResult) -> TrialResult:
    """The result of a trial that was "ok" and exact; TrialFailed otherwise."""
    m = result.metrics
    if result.status != "ok":
        raise TrialFailed(result.error or "failed")
    if m.lost or m.duplicated or m.publish_errors or m.received != m.sent:
        raise TrialFailed(
            f"inexact trial: sent {m.sent}, received {m.received}, lost {m.lost}, "
            f"duplicated {m.duplicated}, publish errors {m.publish_errors}"
        )
    return result


def fixed_costs(result: TrialResult) -> dict[str, Any]:
    """A trial's set-up and tear-down costs, for the JSON details."""
    m = result.metrics
    keys = ("spawn_s", "create_s", "connect_s", "teardown_s", "duration_s", "trial_duration_s")
    return {key: getattr(m, key) for key in keys}
