"""When missed telemetry readings are worth a warning: never answering always is; a few in a
long trial are not; more than 1% of a node's readings in a trial without faults are."""

from __future__ import annotations

from runner.execution.telemetry.sampler import TelemetrySampler
from runner.execution.telemetry.samples import Sample, Source

ERROR = "http://127.0.0.1:8222 did not answer (timed out)"


def sampler(readings: int, missed: int, *, faults: bool = False) -> TelemetrySampler:
    watcher = TelemetrySampler([Source(1, "nats", "http://127.0.0.1:8222")], "t", faults=faults)
    watcher.samples = [
        Sample(at_ns=i, node=1, reading=None if i < missed else {"cpu_pct": 1.0}, error=ERROR)
        for i in range(readings)
    ]
    return watcher


def test_one_reading_missed_in_an_hour_is_no_warning() -> None:
    assert sampler(3602, 1).warnings() == []
    assert sampler(3602, 36).warnings() == []


def test_more_than_one_in_a_hundred_missed_is_a_warning() -> None:
    assert sampler(3602, 37).warnings() == [
        f"telemetry of node 1: 37 of 3602 readings missed ({ERROR})"
    ]
    assert sampler(10, 1).warnings() == [f"telemetry of node 1: 1 of 10 readings missed ({ERROR})"]


def test_a_node_that_never_answered_is_a_warning_even_with_faults() -> None:
    assert sampler(5, 5, faults=True).warnings() == [f"telemetry of node 1: {ERROR}; no figures"]
    assert sampler(50, 10, faults=True).warnings() == []  # a paused node misses some
