"""Findings about the course of a trial: sags, climbing p99, a rate not offered (no broker)."""

from __future__ import annotations

import warnings
from typing import Any

from synthetic_runs import make_trial, small_spec

from runner.analysis.analyse import analyse
from runner.analysis.timeline import find_climb, find_sag, judged_windows
from schemas.results import TimeSeries, TrialResult
from schemas.telemetry import BrokerTelemetry, NodeTelemetry, TelemetryEvent


def series(received: list[int], p99: list[float], ramp_windows: int = 0) -> TimeSeries:
    n = len(received)
    return TimeSeries(
        start_s=[float(i) for i in range(n)],
        seconds=[1.0] * n,
        published=[1000] * n,
        acked=[1000] * n,
        received=received,
        latency_p50_ms=[1.0] * n,
        latency_p99_ms=p99,
        in_flight=[0] * n,
    )


STEADY = [1000] * 10
FLAT = [5.0, 6.0, 5.0, 5.5, 6.0, 5.0, 5.5, 6.0, 5.0, 5.5]


def test_a_sag_is_found_with_its_window() -> None:
    sagging = [1000, 1000, 1000, 300, 200, 250, 1000, 1000, 1000, 1000]
    sag = find_sag(judged_windows(series(sagging, FLAT), ramp_s=0))
    assert sag is not None and (sag.start_s, sag.end_s, sag.lowest) == (3.0, 6.0, 200)
    assert find_sag(judged_windows(series(STEADY, FLAT), ramp_s=0)) is None
    one_dip = [1000, 1000, 1000, 200, 1000, 1000, 1000, 1000, 1000, 1000]
    assert find_sag(judged_windows(series(one_dip, FLAT), ramp_s=0)) is None


def test_a_climbing_p99_is_found_and_a_noisy_one_is_not() -> None:
    climbing = [5.0, 8.0, 12.0, 15.0, 20.0, 26.0, 30.0, 38.0, 45.0, 60.0]
    climb = find_climb(judged_windows(series(STEADY, climbing), ramp_s=0))
    assert climb is not None and climb.first_ms < climb.last_ms and climb.correlation >= 0.8
    assert find_climb(judged_windows(series(STEADY, FLAT), ramp_s=0)) is None


def test_a_constant_p99_does_not_climb_and_raises_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_climb(judged_windows(series(STEADY, [5.0] * 10), ramp_s=0)) is None


def test_the_ramp_and_idle_windows_are_not_judged() -> None:
    data = series([0, 0, 200, 1000, 1000, 1000, 1000, 1000, 1000, 1000], FLAT)
    data.published[0] = data.published[1] = 0  # producers not started yet
    assert [w.start_s for w in judged_windows(data, ramp_s=3.0)] == [
        3.0,
        4.0,
        5.0,
        6.0,
        7.0,
        8.0,
        9.0,
    ]
    assert find_sag(judged_windows(data, ramp_s=3.0)) is None


def trials(**metrics: Any) -> list[TrialResult]:
    out = []
    for variant in ("before", "after"):
        for rep in range(1, 6):
            values = {"sent": 1000, "acked": 1000, "received": 1000, "success_rate": 100.0}
            values |= {"throughput": 1000.0 + rep, "latency_ms": {"p99": 5.0, "count": 1000}}
            values |= metrics
            config = {"workload": {"rate": 20000.0, "ramp": "0s", "settle_time": 2.0}}
            out.append(make_trial("nats", variant, "Low", rep, values, config=config))
    return out


def test_a_rate_not_offered_is_a_finding_with_its_cause() -> None:
    out_of_cpu = trials(achieved_rate=12000.0, loadgen_cpu_percent=99.0, publish_blocked_pct=1.0)
    report = analyse(small_spec(), out_of_cpu)
    [finding, *_] = [a for a in report.anomalies if a.kind == "rate_shortfall"]
    assert "12,000 of 20,000 msg/s (40.0% short)" in finding.evidence
    assert "out of CPU" in finding.evidence and "harness limit" in finding.evidence
    pushed_back = trials(achieved_rate=15000.0, loadgen_cpu_percent=30.0, publish_blocked_pct=60.0)
    report = analyse(small_spec(), pushed_back)
    [finding, *_] = [a for a in report.anomalies if a.kind == "rate_shortfall"]
    assert "backpressure from the broker" in finding.evidence
    fine = analyse(small_spec(), trials(achieved_rate=19900.0))
    assert not [a for a in fine.anomalies if a.kind == "rate_shortfall"]


def test_a_sag_in_the_median_trial_is_a_finding() -> None:
    sagging = [1000, 1000, 1000, 300, 200, 250, 1000, 1000, 1000, 1000]
    cell = [t.model_copy(update={"series": series(sagging, FLAT)}) for t in trials()]
    report = analyse(small_spec(), cell)
    found = [a for a in report.anomalies if a.kind == "throughput_sag"]
    assert len(found) == 2  # before and after
    assert "from 3s to 6s" in found[0].evidence and "seen in 5 of 5 trials" in found[0].evidence


def test_a_sag_cites_what_the_broker_did_in_those_seconds() -> None:
    sagging = [1000, 1000, 1000, 300, 200, 250, 1000, 1000, 1000, 1000]
    idle = [80.0, 80.0, 80.0, 4.0, 3.0, 5.0, 80.0, 80.0, 80.0, 80.0]
    telemetry = BrokerTelemetry(
        source="prometheus",
        nodes=[NodeTelemetry(node=2, signals={"handler_idle_ns": idle})],
        events=[TelemetryEvent(at_s=3.1, kind="leader", text="partition 0 leader moved")],
    )
    update = {"series": series(sagging, FLAT), "telemetry": telemetry}
    report = analyse(small_spec(), [t.model_copy(update=update) for t in trials()])
    [sag, *_] = [a for a in report.anomalies if a.kind == "throughput_sag"]
    assert sag.evidence.endswith(
        "; the broker: request handler idle 3% on node 2 from 3 s to 6 s; "
        "partition 0 leader moved at 3.1 s"
    ), sag.evidence
