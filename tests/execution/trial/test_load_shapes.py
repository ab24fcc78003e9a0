"""Load shapes on real embedded brokers: paced durations, ramps, time series, backlogs.

Small sizes (seconds each). The accounting stays exact in every shape; the ramp is left out
of the figures but not of the counts; a backlog is built, drained and timed.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_trials import kafka_config, make_request, nats_config

from runner.execution.brokers import RunningBroker
from runner.execution.trial.parent import run_trial
from schemas.results import TrialResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


WARMED: set[int] = set()


@pytest.fixture(params=["nats", "kafka"])
def broker(request: pytest.FixtureRequest) -> tuple[RunningBroker, Any]:
    kind = request.param
    running = request.getfixturevalue(f"{kind}_broker")
    config = nats_config if kind == "nats" else kafka_config
    if running.pid not in WARMED:
        # A broker's first trial is slow (a cold JVM takes ~1 s per message at first): these
        # tests are about shapes, so they run on a warm broker, as a spec's warm-up trial does.
        run_trial(make_request(running, config(), messages=None, duration="1s", rate="2000/s"))
        WARMED.add(running.pid or 0)
    return running, config


def shaped(broker: tuple[RunningBroker, Any], **workload: Any) -> TrialResult:
    running, config = broker
    result = run_trial(make_request(running, config(), messages=None, **workload))
    assert result.status == "ok", result.error
    return result


def assert_exact(result: TrialResult, sent: int | None = None) -> None:
    m = result.metrics
    if sent is not None:
        assert m.sent == sent
    assert m.sent > 0 and (m.acked, m.received) == (m.sent, m.sent)
    assert (m.lost, m.duplicated, m.publish_errors) == (0, 0, {})


def test_paced_duration_is_exact_and_the_ramp_is_left_out(broker: Any) -> None:
    result = shaped(broker, duration="2s", rate="2000/s", ramp="500ms")
    assert_exact(result, sent=4000)
    m, series = result.metrics, result.series
    assert series is not None
    # The figures count what came after the ramp: about 1.5 s of the 2 s at 2,000 msg/s.
    assert 2700 <= m.latency_ms.count <= 3300 < m.received
    assert m.publish_latency_ms.count < m.acked
    assert m.throughput is not None and 1800 <= m.throughput <= 2200
    assert m.achieved_rate is not None and m.achieved_rate >= 1900
    assert result.notes == []
    # Per-second windows, aligned on the ramp's end, adding up to the trial's counts.
    assert any(abs(start - 0.5) < 0.05 for start in series.start_s)
    assert sum(series.published) == m.sent and sum(series.received) == m.received
    assert sum(series.acked) == m.acked and series.in_flight[-1] == 0
    assert all(p is not None for p in series.latency_p99_ms[:-1])
    # The load generator's memory in every window, its peak the trial's.
    rss = series.loadgen_rss_mb
    assert rss is not None and len(rss) == len(series.start_s) and None not in rss, rss
    assert m.rss_peak_mb is not None and max(rss) == round(m.rss_peak_mb, 1)


def test_unpaced_duration_publishes_until_the_time_is_up(broker: Any) -> None:
    result = shaped(broker, duration="1s")
    assert_exact(result)
    m = result.metrics
    assert m.sent > 2000  # as fast as acks allow, for a second
    assert m.achieved_rate is None  # only paced trials declare a rate to achieve
    assert m.duration_s is not None and m.duration_s >= 1.0
    assert result.series is not None and sum(result.series.published) == m.sent


def test_backlog_is_built_then_drained(broker: Any) -> None:
    result = shaped(broker, duration="3s", rate="2000/s", backlog=2000)
    assert_exact(result, sent=6000)
    m = result.metrics
    assert m.backlog_build_s is not None and 0.8 <= m.backlog_build_s <= 2.0
    assert m.drain_s is not None and 0 < m.drain_s < 2.0
    # While catching up the consumers read faster than the producers publish.
    assert m.drain_throughput is not None and m.drain_throughput > 2000
    series = result.series
    assert series is not None and series.received[0] == 0  # held back for the first second


def test_a_backlog_that_does_not_drain_fails_the_trial(nats_broker: RunningBroker) -> None:
    # One handler at 20 ms a message reads 50 msg/s: 1,000 stored messages need 20 s.
    request = make_request(
        nats_broker,
        nats_config(workers=1),
        messages=None,
        duration="1s",
        rate="2000/s",
        backlog=1000,
        processing_time="20ms",
        drain_timeout="1s",
    )
    result = run_trial(request)
    assert result.status == "failed"
    assert "backlog did not drain within the drain timeout" in (result.error or "")
    assert result.metrics.backlog_build_s is not None


def test_a_rate_the_producers_cannot_offer_is_reported_with_its_cause(
    nats_broker: RunningBroker,
) -> None:
    # One publish in flight at a time: each waits for its ack, far below 50,000 msg/s.
    request = make_request(
        nats_broker,
        nats_config(publish={"max_pending": 1}),
        messages=None,
        duration="1s",
        rate="50000/s",
    )
    result = run_trial(request)
    m = result.metrics
    assert result.status == "ok", result.error
    assert m.achieved_rate is not None and m.achieved_rate < 0.95 * 50000
    [note] = result.notes
    assert "short" in note and ("backpressure" in note or "out of CPU" in note)
    assert m.publish_blocked_pct is not None and m.loadgen_cpu_percent is not None
