"""Charts over time of synthetic trials: what a long trial adds (no brokers)."""

from __future__ import annotations

from synthetic_runs import make_trial

from reporters.timelines import timeline_charts
from runner.analysis.analyse import analyse
from schemas.results import TimeSeries, TrialResult
from schemas.spec import Experiment

SPEC = Experiment.model_validate(
    {
        "version": 1,
        "name": "soak",
        "brokers": {"nats": {"type": "nats"}},
        "scenarios": {"Steady": {"duration": "10m", "rate": "1000/s"}},
        "repetitions": 1,
        "warmup": 0,
    }
)


def trial_of(seconds: int) -> TrialResult:
    series = TimeSeries(
        start_s=[float(s) for s in range(seconds)],
        seconds=[1.0] * seconds,
        published=[1000] * seconds,
        acked=[1000] * seconds,
        received=[1000] * seconds,
        latency_p50_ms=[1.0] * seconds,
        latency_p99_ms=[2.0] * seconds,
        in_flight=[0] * seconds,
        loadgen_rss_mb=[60.0 + s / 100 for s in range(seconds)],
    )
    values = {"sent": 1000 * seconds, "received": 1000 * seconds, "throughput": 1000.0}
    return make_trial("nats", "default", "Steady", 1, values).model_copy(update={"series": series})


def test_a_long_trial_charts_the_load_generators_memory_and_a_short_one_does_not() -> None:
    long_charts = timeline_charts(analyse(SPEC, [trial_of(600)]))
    assert any("Load generator memory" in svg for svg in long_charts)
    short_charts = timeline_charts(analyse(SPEC, [trial_of(20)]))
    assert len(short_charts) == 2 and not any("memory" in svg for svg in short_charts)
