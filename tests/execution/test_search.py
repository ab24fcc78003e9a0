"""The capacity search's bisection and its verdicts, on made-up step results (no broker)."""

from __future__ import annotations

from typing import Any

from synthetic_runs import make_trial

from runner.execution.search import Search, judge, result_record, step_record
from schemas.goals import parse_condition

CONDITION = parse_condition("latency_p99_ms <= 50")


def step(rate: float, p99: float, **metrics: Any) -> Any:
    values = {"sent": 100, "acked": 100, "received": 100, "success_rate": 100.0}
    values |= {"latency_ms": {"p99": p99, "count": 100}, "achieved_rate": rate, **metrics}
    return make_trial("kafka", "v", "S", 1, values)


def run(limit: float, steps: int = 8) -> Search:
    """A search against a broker whose p99 crosses 50 ms above `limit` msg/s."""
    search = Search(1000.0, 200000.0, steps, CONDITION)
    while (rate := search.next_rate()) is not None:
        search.record(rate, step(rate, 10.0 if rate <= limit else 80.0))
    return search


def test_bisection_closes_in_on_the_limit_on_a_log_scale() -> None:
    search = run(limit=30_000)
    rates = [s.rate for s in search.done]
    assert rates[:3] == [1000.0, 200000.0, 14142.0]  # bounds, then the geometric middle
    assert len(rates) == 8
    assert search.capacity <= 30_000 < min(s.rate for s in search.done if not s.passed)
    # 6 bisections of a 200x range: the interval left is within 200 ** (1/64) ~ 8.6%.
    above = min(s.rate for s in search.done if not s.passed and s.rate > search.capacity)
    assert above / search.capacity <= 200 ** (1 / 64) + 1e-3


def test_same_broker_same_answer() -> None:
    assert run(limit=45_000).done == run(limit=45_000).done


def test_edges_stop_early() -> None:
    everything = run(limit=1e9)
    assert [s.rate for s in everything.done] == [1000.0, 200000.0]
    assert everything.capacity == 200000.0
    nothing = run(limit=10)
    assert [s.rate for s in nothing.done] == [1000.0] and nothing.capacity == 0.0
    summary = nothing.summary()
    assert summary.passed is False and "no offered rate held" in (summary.reason or "")


def test_a_step_holds_only_when_everything_holds() -> None:
    assert judge(step(5000, 10.0), 5000, CONDITION) == (True, None)
    assert judge(step(5000, 60.0), 5000, CONDITION)[1] == "latency_p99_ms 60 (needs <= 50)"
    lossy = judge(step(5000, 10.0, success_rate=99.5), 5000, CONDITION)
    assert lossy == (False, "success rate 99.5% (below 100%)")
    short = judge(step(5000, 10.0, achieved_rate=4000.0), 5000, CONDITION)
    assert short == (False, "offered only 4,000 msg/s of 5,000")
    failed = step(5000, 10.0).model_copy(update={"status": "failed", "error": "broker died"})
    assert judge(failed, 5000, CONDITION) == (False, "the trial failed: broker died")


def test_result_record_carries_the_figures_at_capacity() -> None:
    search = Search(1000.0, 8000.0, 4, CONDITION)
    steps = []
    for number, p99 in enumerate((5.0, 90.0, 20.0, 70.0), 1):
        rate = search.next_rate()
        assert rate is not None
        result = step(rate, p99)
        steps.append(step_record(result, number, search.record(rate, result)))
    record = result_record(search, steps)
    assert record.search is not None and record.search.step is None
    assert record.metrics.capacity == search.capacity == 2828.0
    assert record.metrics.latency_ms.p99 == 20.0  # the step at 2,828 msg/s
    assert [s.rate for s in record.search.steps] == [1000.0, 8000.0, 2828.0, 4756.0]
    assert not record.search_step and all(s.search_step for s in steps)
