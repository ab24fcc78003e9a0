"""The broker's readings on the trial's windows, and the metrics they give (pure)."""

from __future__ import annotations

from runner.execution.telemetry.samples import Sample
from runner.execution.telemetry.windows import broker_telemetry, telemetry_metrics
from schemas.results import TimeSeries

S = 1_000_000_000
START = 50 * S


def _series(windows: int, last: float = 1.0) -> TimeSeries:
    seconds = [1.0] * (windows - 1) + [last]
    zeros = [0] * windows
    return TimeSeries(
        start_s=[float(i) for i in range(windows)],
        seconds=seconds,
        published=zeros,
        acked=zeros,
        received=zeros,
        latency_p50_ms=[None] * windows,
        latency_p99_ms=[None] * windows,
        in_flight=zeros,
    )


def _sample(second: float, node: int, **reading: float) -> Sample:
    return Sample(START + round(second * S), node, dict(reading))


def test_gauges_take_the_window_end_counters_their_growth_and_rates_per_second() -> None:
    samples = [
        _sample(0, 1, stream_messages=0, bytes_in=1000, gc_pause_ms=10, handler_idle_ns=0),
        _sample(1, 1, stream_messages=500, bytes_in=3000, gc_pause_ms=10, handler_idle_ns=0.9e9),
        # A reading taken 10 ms late: the rate is over the time between the readings.
        _sample(2.01, 1, stream_messages=700, bytes_in=5020, gc_pause_ms=130, handler_idle_ns=1e9),
    ]
    telemetry = broker_telemetry("prometheus", samples, START, _series(2))
    signals = telemetry.nodes[0].signals
    assert signals["stream_messages"] == [500.0, 700.0]
    assert signals["bytes_in"] == [2000.0, 2000.0]
    assert signals["gc_pause_ms"] == [0.0, 120.0]
    assert signals["handler_idle_ns"] == [90.0, 9.901]
    assert telemetry.samples == 3 and telemetry.failures == 0


def test_a_missed_reading_or_a_counter_reset_leaves_the_window_unknown() -> None:
    samples = [
        _sample(0, 1, slow_consumers=5, cpu_pct=10),
        Sample(START + 1 * S, 1, None, "http://x did not answer"),
        _sample(2, 1, slow_consumers=7, cpu_pct=20),
        _sample(3, 1, slow_consumers=1, cpu_pct=30),  # restarted: its counters began again
    ]
    telemetry = broker_telemetry("nats", samples, START, _series(3))
    signals = telemetry.nodes[0].signals
    assert signals["slow_consumers"] == [None, None, None]
    assert signals["cpu_pct"] == [None, 20.0, 30.0]
    assert telemetry.failures == 1


def test_a_leader_change_is_an_event_at_the_reading_that_saw_it() -> None:
    samples = []
    leaders = [3, 3, None, None, 1, 1]  # node 3 leads, an election, node 1 leads
    for second, leader in enumerate(leaders):
        for node in (1, 2, 3):
            samples.append(_sample(second, node, topic_leader=1.0 if node == leader else 0.0))
    telemetry = broker_telemetry("nats", samples, START, _series(5))
    assert [(e.at_s, e.text) for e in telemetry.events] == [
        (4.0, "stream leader moved from node 3 to node 1")
    ]
    assert telemetry_metrics(telemetry, _series(5), 0.0)["leader_changes"] == 1


def test_metrics_sum_peak_and_floor_over_the_windows_after_the_ramp() -> None:
    samples = []
    for second in range(5):
        # The ramp's seconds (0-2) hold the worst figures: they must not count.
        bad = second < 2
        for node in (1, 2):
            samples.append(
                _sample(
                    second,
                    node,
                    gc_pause_ms=100.0 * second * (3 if bad else 1),
                    handler_idle_ns=second * (0.1 if bad else 0.5) * S,
                    under_replicated=node if second == 3 else 0,
                    produce_p99_ms=50 if bad else 5 + second,
                )
            )
    metrics = telemetry_metrics(
        broker_telemetry("prometheus", samples, START, _series(4)), _series(4), 2.0
    )
    # Windows 2-3 (seconds 2-4): each node pauses 100 ms a second.
    assert metrics["broker_gc_pause_ms"] == 400.0
    assert metrics["broker_gc_pause_max_ms"] == 100.0
    assert metrics["under_replicated_peak"] == 3  # the cluster's: both nodes' summed
    assert metrics["broker_produce_p99_ms"] == 9.0
    assert metrics["broker_handler_idle_min_pct"] > 0  # counters rise at 0.5 s idle a second
    assert "leader_changes" not in metrics  # nothing said who leads
    assert "consumer_pending_peak" not in metrics  # a figure the broker has not: absent
