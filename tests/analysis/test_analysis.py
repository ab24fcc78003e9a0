"""runner.analysis on synthetic trial sets: comparisons, targets, anomalies, the report model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic_runs import (
    SPEC,
    cell_trials,
    environment,
    make_trial,
    small_spec,
    source_like_trials,
)

from reporters.markdown import render_markdown
from runner.analysis.analyse import analyse
from runner.analysis.statistics import TEST_MWU_EXACT, TEST_WELCH_LOG
from runner.spec.loader import load_spec
from schemas.report import Anomaly, Comparison, Report, report_schema
from schemas.results import TrialResult
from schemas.spec import Experiment

ROOT = Path(__file__).resolve().parents[2]
BASE5 = [1000.0, 1012.0, 991.0, 1006.0, 997.0]


def throughput_comparison(report: Report, scenario: str = "Low") -> Comparison:
    [found] = [
        c
        for c in report.variant_comparisons
        if c.metric == "throughput" and c.candidate.scenario == scenario
    ]
    return found


def two_variants(before: list[float], after: list[float], spec: Experiment | None = None) -> Report:
    trials = cell_trials("before", "Low", before) + cell_trials("after", "Low", after)
    return analyse(spec or small_spec(), trials)


def anomalies_of(report: Report, kind: str) -> list[Anomaly]:
    return [a for a in report.anomalies if a.kind == kind]


# --------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize(("n", "test"), [(5, TEST_MWU_EXACT), (3, TEST_WELCH_LOG)])
def test_planted_2x_gain_is_significant_and_better(n: int, test: str) -> None:
    before = BASE5[:n]
    report = two_variants(before, [2 * v for v in before])
    c = throughput_comparison(report)
    assert c.significant
    assert c.verdict == "better"
    assert c.test == test
    assert c.p_value is not None and c.p_value < 0.05
    assert c.change_pct == pytest.approx(100.0)
    assert (c.baseline.variant, c.candidate.variant) == ("before", "after")


def test_identical_distributions_give_tilde() -> None:
    report = two_variants(BASE5, list(reversed(BASE5)))
    c = throughput_comparison(report)
    assert c.verdict == "~"
    assert not c.significant
    assert c.change_pct == 0


def test_one_percent_significant_shift_is_noise_under_default_threshold() -> None:
    tight = [1000.0, 1000.5, 999.5, 1000.2, 999.8]
    report = two_variants(tight, [v * 1.01 for v in tight])
    c = throughput_comparison(report)
    assert c.p_value is not None and c.p_value < 0.05  # statistically detectable...
    assert c.verdict == "~"  # ...but below the 2% noise threshold
    assert not c.significant
    assert c.note is not None and "noise threshold" in c.note


def test_noise_threshold_comes_from_the_spec() -> None:
    tight = [1000.0, 1000.5, 999.5, 1000.2, 999.8]
    spec = small_spec(statistics={"noise_threshold": 0.5})
    c = throughput_comparison(two_variants(tight, [v * 1.01 for v in tight], spec))
    assert c.verdict == "better"


def test_lower_is_better_metrics_are_labelled_by_direction() -> None:
    trials = cell_trials("before", "Low", BASE5, latency_ms={"p99": 10.0, "p50": 5.0})
    trials += cell_trials("after", "Low", BASE5, latency_ms={"p99": 20.0, "p50": 5.0})
    for i, t in enumerate(trials):  # a little variance so that a test runs
        t.metrics.latency_ms.p99 = (t.metrics.latency_ms.p99 or 0) + i * 0.01
    report = analyse(small_spec(), trials)
    [c] = [c for c in report.variant_comparisons if c.metric == "latency_p99_ms"]
    assert c.verdict == "worse"


def test_two_repetitions_give_insufficient_data_with_advice() -> None:
    c = throughput_comparison(two_variants(BASE5[:2], [2 * v for v in BASE5[:2]]))
    assert c.verdict == "insufficient data"
    assert c.test is None
    assert c.note is not None and "at least 3" in c.note


def test_broker_vs_broker_within_a_variant() -> None:
    report = analyse(load_spec(SPEC).spec, source_like_trials())
    [c] = [
        c
        for c in report.broker_comparisons
        if c.metric == "latency_p50_ms"
        and c.candidate.variant == "after"
        and c.candidate.scenario == "Low"
    ]
    assert (c.baseline.broker, c.candidate.broker) == ("kafka", "nats")
    assert c.verdict == "better"  # NATS latency is far below Kafka's, as in the source report
    assert c.change_pct is not None and c.change_pct < -90


# --------------------------------------------------------------------------- cells


def test_warmup_and_failed_trials_are_excluded_and_counted() -> None:
    trials = cell_trials("before", "Low", BASE5)
    trials.append(make_trial("nats", "before", "Low", 1, {"throughput": 1e9}, warmup=True))
    trials.append(
        make_trial(
            "nats", "before", "Low", 6, {"throughput": 1.0}, status="failed", error="drain timeout"
        )
    )
    report = analyse(small_spec(), trials)
    cell = report.cell("nats", "before", "Low")
    assert cell is not None
    assert (cell.measured, cell.warmup_excluded, cell.failed_excluded) == (5, 1, 1)
    stats = cell.metrics["throughput"]
    assert stats.n == 5
    assert stats.median == 1000.0
    assert stats.max == 1012.0
    assert stats.ci_low is not None and stats.ci_level is not None
    assert (report.run.measured_trials, report.run.warmup_trials, report.run.failed_trials) == (
        5,
        1,
        1,
    )
    [failed] = anomalies_of(report, "failed_trials")
    assert "drain timeout" in failed.evidence
    assert "1 of 7 trials failed" in failed.evidence


def test_partial_when_interrupted() -> None:
    run = {"complete": False, "interrupted": True, "planned_trials": 20}
    report = analyse(small_spec(), cell_trials("before", "Low", BASE5), {}, run)
    assert report.partial
    assert not analyse(
        small_spec(), cell_trials("before", "Low", BASE5), {}, {"complete": True}
    ).partial


# --------------------------------------------------------------------------- anomalies


def test_planted_dip_in_a_middle_scenario_is_flagged_with_evidence() -> None:
    report = analyse(load_spec(SPEC).spec, source_like_trials())
    breaks = [a for a in anomalies_of(report, "trend_break") if a.metric == "throughput"]
    assert [(str(a.cell)) for a in breaks] == ["nats/after/High"]
    evidence = breaks[0].evidence
    assert "5.1x below" in evidence
    assert "Medium" in evidence and "Extreme" in evidence
    assert "every one of them below" in evidence
    # The same cell's latency rises out of line too, as in the source report.
    latency = [a for a in anomalies_of(report, "trend_break") if a.metric == "latency_p99_ms"]
    assert [str(a.cell) for a in latency] == ["nats/after/High"]


def test_no_trend_break_without_a_dip() -> None:
    def no_dip(broker: str, variant: str, scenario: str, rep: int, m: dict) -> None:
        if (broker, variant, scenario) == ("nats", "after", "High"):
            m["throughput"] *= 6.0
            m["latency_ms"] = {"p50": 4.3, "p99": 7.5, "mean": 4.8}
            m["duration_s"] /= 6.0
            m["publish_throughput"] *= 6.0

    report = analyse(load_spec(SPEC).spec, source_like_trials(tweak=no_dip))
    assert anomalies_of(report, "trend_break") == []


def test_high_variance_is_flagged_with_advice() -> None:
    report = analyse(small_spec(), cell_trials("before", "Low", [1000, 700, 1300, 900, 1150]))
    [a] = [a for a in anomalies_of(report, "high_variance") if a.metric == "throughput"]
    assert "CV" in a.evidence and "above the 10% threshold" in a.evidence
    assert a.advice is not None and "add repetitions" in a.advice


def test_loss_duplicates_and_publish_errors_are_flagged() -> None:
    trials = cell_trials("before", "Low", BASE5[:4])
    trials += cell_trials(
        "before", "Low", [1000.0], lost=7, received=493, duplicated=3, success_rate=98.6
    )
    trials[-1].repetition = 5
    trials += cell_trials("after", "Low", BASE5, publish_errors={"timeout": 2})
    report = analyse(small_spec(), trials)
    [loss] = anomalies_of(report, "loss")
    assert "7 acked messages never received in 1 of 5 trials" in loss.evidence
    [dup] = anomalies_of(report, "duplicates")
    assert "3 deliveries beyond the first" in dup.evidence
    [errors] = anomalies_of(report, "publish_errors")
    assert "timeout: 10" in errors.evidence
    assert anomalies_of(report, "limit_reached") == []  # a timeout is not a stream limit


def test_refused_publishes_that_were_delivered_are_flagged_apart_from_unknown_ones() -> None:
    trials = cell_trials(
        "before",
        "Low",
        BASE5,
        publish_errors={"no responders": 40, "timeout": 2},
        publish_failed=40,
        publish_unknown=2,
        failed_delivered=0,
    )
    trials += cell_trials("after", "Low", BASE5[:4], failed_delivered=0)
    trials += cell_trials("after", "Low", [1000.0], failed_delivered=3)
    trials[-1].repetition = 5
    report = analyse(small_spec(), trials)
    [errors] = anomalies_of(report, "publish_errors")
    assert "200 refused by the broker (not stored), 10 with an unknown outcome" in errors.evidence
    [wrong] = anomalies_of(report, "failed_delivered")
    assert wrong.cell is not None and wrong.cell.variant == "after"
    assert "3 messages reported as refused by the broker reached a consumer" in wrong.evidence
    assert "(in 1 of 5 trials)" in wrong.evidence


def test_jetstream_limit_refusals_are_flagged() -> None:
    trials = cell_trials(
        "before",
        "Low",
        BASE5,
        sent=500,
        acked=100,
        received=100,
        success_rate=20.0,
        publish_errors={"maximum messages exceeded": 400},
    )
    spec = small_spec(
        brokers={
            "nats": {
                "type": "nats",
                "workers": 48,
                "stream": {"max_msgs": 100, "discard": "new"},
            }
        }
    )
    [a] = anomalies_of(analyse(spec, trials), "limit_reached")
    assert "maximum messages exceeded: 2,000" in a.evidence
    assert "stream max_msgs 100," in a.evidence and "discard new" in a.evidence


def test_jetstream_discard_old_shortfall_is_flagged(tmp_path: Path) -> None:
    text = (ROOT / "experiments" / "jetstream_limits.yaml").read_text()
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(text.replace("discard: new", "discard: old"))
    loaded = load_spec(spec_path)
    trials = cell_trials(
        "small-limits", "High", BASE5, sent=5000, acked=5000, received=1000, success_rate=20.0
    )
    report = analyse(loaded.spec, trials, cells=loaded.cells)
    [a] = anomalies_of(report, "limit_reached")
    assert "received 1,000 of 5,000 sent" in a.evidence
    assert "max_msgs 1,000" in a.evidence and "discard old" in a.evidence


def test_leaks_surviving_settle_vs_lingering_threads() -> None:
    trials = cell_trials("before", "Low", BASE5, leaked_threads=1, lingering_threads=133)
    trials += cell_trials("after", "Low", BASE5, leaked_threads=0, lingering_threads=10)
    report = analyse(small_spec(), trials)
    [leak] = anomalies_of(report, "leak")
    assert str(leak.cell) == "nats/before/Low"
    assert "after the 2s settle time" in leak.evidence
    assert "another 133 lingered" in leak.evidence
    [lingering] = anomalies_of(report, "lingering")
    assert str(lingering.cell) == "nats/after/Low"
    assert lingering.severity == "info"


def test_clock_uncertainty_beyond_a_tenth_of_p50_is_a_warning() -> None:
    """p50 is 5 ms: 0.4 ms of clock uncertainty is fine, 0.8 ms is not."""
    trials = cell_trials("before", "Low", BASE5, clock_uncertainty_ms=0.4)
    trials += cell_trials("after", "Low", BASE5, clock_uncertainty_ms=0.8)
    [warning] = anomalies_of(analyse(small_spec(), trials), "clock_uncertainty")
    assert str(warning.cell) == "nats/after/Low" and warning.severity == "warning"
    assert "0.8 ms" in warning.evidence and "p50 of 5 ms" in warning.evidence


def test_load_hosts_with_different_client_versions_are_a_warning() -> None:
    trials = cell_trials("before", "Low", BASE5) + cell_trials("after", "Low", BASE5)

    def host(worker: str, nats_py: str) -> dict[str, object]:
        clients = {"nats-py": nats_py, "confluent-kafka": "2.16.1"}
        return {"worker": worker, "machine": {"hostname": worker[6:13]}, "clients": clients}

    same = {
        "clients": {"nats-py": "2.16.0", "confluent-kafka": "2.16.1"},
        "machine": {"hostname": "coord"},
        "load_generators": {"hosts": 2, "machines": [host("tcp://load-01:1", "2.16.0")]},
    }
    assert anomalies_of(analyse(small_spec(), trials, environment=same), "client_versions") == []
    machines = [host("tcp://load-01:1", "2.16.0"), host("tcp://load-02:1", "2.15.0")]
    differing = {**same, "load_generators": {"hosts": 2, "machines": machines}}
    report = analyse(small_spec(), trials, environment=differing)
    [warning] = anomalies_of(report, "client_versions")
    assert "nats-py: 2.16.0 on coord (coordinator), load-01" in warning.evidence
    assert "2.15.0 on load-02 (tcp://load-02:1)" in warning.evidence
    assert "confluent-kafka" not in warning.evidence


def test_clean_run_has_no_anomalies() -> None:
    trials = cell_trials("before", "Low", BASE5) + cell_trials("after", "Low", BASE5)
    assert analyse(small_spec(), trials).anomalies == []


# --------------------------------------------------------------------------- many comparisons


def with_correction(correction: str) -> Experiment:
    spec = load_spec(SPEC).spec
    return spec.model_copy(
        update={"statistics": spec.statistics.model_copy(update={"correction": correction})}
    )


def test_without_correction_p_values_are_not_adjusted_and_the_method_says_so() -> None:
    report = analyse(load_spec(SPEC).spec, source_like_trials())
    assert report.statistics.correction == "none"
    assert all(c.p_adjusted is None for c in report.variant_comparisons)
    method = render_markdown(report).split("## Method", 1)[1]
    compared = [*report.variant_comparisons, *report.broker_comparisons]
    tests = sum(c.test is not None for c in compared)
    assert 0 < tests < len(compared)  # constant sides (e.g. no leaks anywhere) are no test
    assert f"of {tests} tests, about {tests * 0.05:.0f} would be called significant" in method


def test_bh_decides_on_adjusted_p_and_targets_follow_the_tables() -> None:
    report = analyse(with_correction("bh"), source_like_trials())
    tested = [c for c in report.variant_comparisons if c.test is not None]
    assert tested and all(
        c.p_adjusted is not None and c.p_value is not None and c.p_adjusted >= c.p_value
        for c in tested
    )
    for c in tested:
        assert c.significant == (
            c.p_adjusted is not None and c.p_adjusted < 0.05 and c.verdict != "~"
        )
    # The planted NATS gains hold across the family (80 tests, half of them real changes).
    nats = [c for c in tested if c.candidate.broker == "nats" and c.metric == "throughput"]
    assert [c.verdict for c in nats] == ["better", "better", "worse", "better"]
    by_cell = {(str(c.candidate), c.metric): c for c in report.variant_comparisons}
    for score in report.targets.scores:
        if score.kind == "change":
            shown = by_cell[str(score.cell), score.metric]
            assert (score.verdict, score.p_value) == (shown.verdict, shown.p_adjusted)


def test_holm_at_five_repetitions_is_too_strict_for_a_large_family_and_says_so() -> None:
    """80 tests: Holm needs p < 0.05/80, but the exact U test stops at 2/252 = 0.0079."""
    report = analyse(with_correction("holm"), source_like_trials())
    assert not any(c.significant for c in report.variant_comparisons)
    method = render_markdown(report).split("## Method", 1)[1]
    assert "Holm-adjusted" in method
    assert "not significant after the adjustment" in method


# --------------------------------------------------------------------------- targets


def test_target_scored_as_in_the_source_report() -> None:
    """Low: ~143 -> 361.30 msg/s is +152.7% against +400%: 38.2% achieved, fail."""
    spec = load_spec(SPEC).spec
    trials = cell_trials("before", "Low", [142.0, 143.0, 143.0, 144.0, 143.5])
    trials += cell_trials("after", "Low", [360.0, 361.3, 362.0, 361.3, 359.9])
    report = analyse(spec, trials)
    [score] = [s for s in report.targets.scores if s.metric == "throughput"]
    assert str(score.cell) == "nats/after/Low"
    assert score.actual is not None and f"{score.actual:+.1f}%" == "+152.7%"
    assert score.achievement_pct is not None and f"{score.achievement_pct:.1f}%" == "38.2%"
    assert not score.passed
    assert score.verdict == "better"


def test_overall_score_and_value_targets() -> None:
    report = analyse(load_spec(SPEC).spec, source_like_trials())
    targets = report.targets
    # 4 scenarios x NATS for the +400% target; 4 x 2 brokers for each value target.
    assert targets.total == 4 + 8 + 8
    throughput = [s for s in targets.scores if s.metric == "throughput"]
    assert [s.passed for s in throughput] == [False, False, False, True]  # only Extreme +563%
    assert all(s.cell.variant == "after" for s in targets.scores)
    assert targets.passed == 17
    assert targets.overall == "17/20 (85.0%)"
    leaks = [s for s in targets.scores if s.metric == "leaked_threads"]
    assert all(s.passed and s.kind == "value" for s in leaks)


def test_change_target_defaults_to_every_non_baseline_variant() -> None:
    spec = small_spec(
        variants={"a": {}, "b": {}, "c": {}},
        baseline="a",
        targets=[{"metric": "throughput", "scenario": "Low", "change": ">= +50%"}],
    )
    trials = cell_trials("a", "Low", BASE5)
    trials += cell_trials("b", "Low", [2 * v for v in BASE5])
    trials += cell_trials("c", "Low", [1.1 * v for v in BASE5])
    scores = analyse(spec, trials).targets.scores
    assert [(s.cell.variant, s.passed) for s in scores] == [("b", True), ("c", False)]
    assert scores[0].achievement_pct == pytest.approx(200.0)


# --------------------------------------------------------------------------- the model


def test_secrets_are_redacted_from_the_report() -> None:
    trials = cell_trials("before", "Low", BASE5)
    trials[0].config["producer"] = {"sasl.password": "hunter2-secret"}
    report = analyse(
        small_spec(description="pw hunter2-secret"), trials, secrets=["hunter2-secret"]
    )
    dumped = report.model_dump_json()
    assert "hunter2-secret" not in dumped
    assert "***" in dumped


def test_report_round_trips_through_json() -> None:
    loaded = load_spec(SPEC)
    report = analyse(loaded.spec, source_like_trials(), environment(), cells=loaded.cells)
    again = Report.model_validate_json(report.model_dump_json())
    assert again == report
    assert json.loads(report.model_dump_json())["schema_version"] == 1


def test_published_schema_is_the_generated_one() -> None:
    committed = (ROOT / "schemas" / "results.schema.json").read_text()
    assert committed == json.dumps(report_schema(), indent=2) + "\n", (
        "regenerate: python -m schemas.report > schemas/results.schema.json"
    )


def test_trials_in_the_report_are_the_trials() -> None:
    trials = source_like_trials(repetitions=3)
    report = analyse(load_spec(SPEC).spec, trials)
    assert [t.index for t in report.trials] == [t.index for t in trials]
    assert all(isinstance(t, TrialResult) for t in report.trials)
