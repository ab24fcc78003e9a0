"""The broker's side of a stretch of a trial, as an anomaly cites it (pure)."""

from __future__ import annotations

from runner.analysis.broker_evidence import broker_evidence
from schemas.results import TimeSeries
from schemas.telemetry import BrokerTelemetry, NodeTelemetry, TelemetryEvent


def _series(windows: int) -> TimeSeries:
    zeros = [0] * windows
    return TimeSeries(
        start_s=[float(i) for i in range(windows)],
        seconds=[1.0] * windows,
        published=zeros,
        acked=zeros,
        received=zeros,
        latency_p50_ms=[None] * windows,
        latency_p99_ms=[None] * windows,
        in_flight=zeros,
    )


TELEMETRY = BrokerTelemetry(
    source="prometheus",
    nodes=[
        NodeTelemetry(
            node=1,
            signals={
                "handler_idle_ns": [90, 85, 80, 70, 60, 50, 40, 30, 20, 10],
                "gc_pause_ms": [5, 5, 5, 5, 5, 5, 5, 5, 5, 5],
            },
        ),
        NodeTelemetry(
            node=2,
            signals={
                "handler_idle_ns": [90, 90, 90, 90, 90, 90, 90, 90, 90, 90],
                "gc_pause_ms": [0, 0, 0, 0, 0, 0, 420, None, 0, 0],
                "under_replicated": [0, 0, 0, 3, 3, 0, 0, 0, 0, 0],
            },
        ),
    ],
    events=[
        TelemetryEvent(
            at_s=3.2, kind="leader", text="partition 0 leader moved from node 3 to node 1"
        )
    ],
)


def test_the_stretch_cites_busy_handlers_gc_pauses_replicas_and_leader_moves() -> None:
    series = _series(10)
    assert broker_evidence(TELEMETRY, series, 7.0, 10.0) == [
        "request handler idle 10% on node 1 from 9 s to 10 s",
        "GC pause 420 ms in a second on node 2 from 6 s to 7 s",
    ]
    assert broker_evidence(TELEMETRY, series, 3.0, 5.0) == [
        "3 under-replicated partition(s) on node 2 from 3 s to 5 s",
        "partition 0 leader moved from node 3 to node 1 at 3.2 s",
    ]


def test_a_quiet_broker_and_a_trial_without_telemetry_cite_nothing() -> None:
    series = _series(10)
    assert broker_evidence(TELEMETRY, series, 0.0, 1.0) == []
    assert broker_evidence(None, series, 0.0, 10.0) == []
