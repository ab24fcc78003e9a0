"""What broker telemetry costs a trial: the same unpaced trials with the broker read every
second and without, interleaved (the order alternates each round), on each embedded broker.

Kafka's side needs a broker with the JMX exporter agent and one without (the agent is in the
JVM or not); both run throughout, only one takes a trial at a time. NATS always has its
monitoring port, so its "off" is only not reading it. The sampler runs in this process, as in
`exprun run`: its CPU is this process's CPU during "on" trials less that during "off" ones.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from benchmarks.exprun_side import (
    TrialFailed,
    checked,
    kafka_config,
    nats_config,
    trial_request,
)
from runner.analysis.statistics import compare
from runner.execution.brokers import RunningBroker, start_kafka, start_nats
from runner.execution.telemetry.sampler import TelemetrySampler
from runner.execution.telemetry.sources import telemetry_sources
from runner.execution.trial.parent import prestart, start_trial
from runner.execution.trial.request import TrialRequest
from schemas.results import TrialResult
from schemas.spec import KafkaBroker, NatsBroker

KAFKA_PRODUCER: dict[str, str | int] = {"acks": "all", "linger.ms": 5}


@dataclass
class TelemetryCost:
    """Throughput of the trials read (on) and not (off), and what reading cost this process."""

    on: list[float] = field(default_factory=list)
    off: list[float] = field(default_factory=list)
    # This process's CPU (ms per second of trial) during the trials read, and during the others.
    cpu_on_ms_per_s: list[float] = field(default_factory=list)
    cpu_off_ms_per_s: list[float] = field(default_factory=list)
    readings_per_trial: list[int] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        """The U test of on vs off, and the sampler's CPU."""
        out: dict[str, Any] = {"on_msg_s": self.on, "off_msg_s": self.off}
        if len(self.on) >= 2 and len(self.off) >= 2:
            test = compare(self.off, self.on, better="higher")
            out.update(test=test.test, p_value=test.p_value, significant=test.significant)
        if self.cpu_on_ms_per_s and self.cpu_off_ms_per_s:
            sampler = statistics.median(self.cpu_on_ms_per_s) - statistics.median(
                self.cpu_off_ms_per_s
            )
            out["sampler_cpu_ms_per_s"] = round(sampler, 3)
        if self.readings_per_trial:
            out["readings_per_trial"] = statistics.median(self.readings_per_trial)
        return out


def measure(kind: str, repetitions: int, seconds: float) -> TelemetryCost:
    """`repetitions` rounds of one unpaced trial of `seconds` read and one not, on embedded
    `kind` brokers, after a round that warms both (a JVM's first trial is its slowest)."""
    cost = TelemetryCost()
    with _brokers(kind) as (read, unread, config):
        prestart()
        for round_ in range(-1, repetitions):
            sides = [True, False] if round_ % 2 == 0 else [False, True]
            for telemetry in sides:
                broker = read if telemetry else unread
                request = trial_request(broker, config, None, duration=seconds)
                started_cpu, started = _cpu_s(), time.monotonic()
                result, readings = _trial(request, broker, config, telemetry)
                busy_ms_per_s = 1000 * (_cpu_s() - started_cpu) / (time.monotonic() - started)
                throughput = result.metrics.throughput or 0.0
                if round_ < 0:
                    continue
                if telemetry:
                    cost.on.append(throughput)
                    cost.cpu_on_ms_per_s.append(busy_ms_per_s)
                    cost.readings_per_trial.append(readings)
                else:
                    cost.off.append(throughput)
                    cost.cpu_off_ms_per_s.append(busy_ms_per_s)
    return cost


def _trial(
    request: TrialRequest,
    broker: RunningBroker,
    config: NatsBroker | KafkaBroker,
    telemetry: bool,
) -> tuple[TrialResult, int]:
    sampler = None
    if telemetry:
        sampler = TelemetrySampler(telemetry_sources(broker, config), request.topic)
    result = start_trial(request, watcher=sampler).result()
    if sampler is not None:
        result = sampler.attach(result)
    checked(result)
    if telemetry and (result.telemetry is None or result.telemetry.failures):
        raise TrialFailed(f"telemetry not read: {result.warnings}")
    return result, result.telemetry.samples if result.telemetry is not None else 0


@contextlib.contextmanager
def _brokers(
    kind: str,
) -> Iterator[tuple[RunningBroker, RunningBroker, NatsBroker | KafkaBroker]]:
    """(broker read, broker not read, config) of `kind`; one broker serves both for NATS."""
    if kind == "nats":
        with start_nats() as broker:
            yield broker, broker, nats_config()
        return
    with start_kafka(telemetry=True) as read, start_kafka() as unread:
        yield read, unread, kafka_config(KAFKA_PRODUCER)


def _cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system
