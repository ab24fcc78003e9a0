"""Plans: the trials a spec asks for, in the order that spreads machine drift over the cells."""

from __future__ import annotations

import io
from typing import Any

import pytest

from runner.errors import BadInputError
from runner.execution.plan import Plan, make_plan, render_placement
from runner.execution.progress import Progress
from runner.execution.trial.request import PhaseWindow
from schemas.resolve import resolve_cells
from schemas.spec import Experiment

SPEC: dict[str, Any] = {
    "version": 1,
    "name": "order",
    "brokers": {"kafka": {"type": "kafka"}, "nats": {"type": "nats"}},
    "scenarios": {"Small": {"messages": 10}, "Large": {"messages": 20}},
    "variants": {"a": {}, "b": {}},
    "baseline": "a",
    "repetitions": 2,
    "warmup": 1,
}


def plan_of(**changes: Any) -> Plan:
    spec = Experiment.model_validate({**SPEC, **changes})
    return make_plan(spec, resolve_cells(spec, spec.model_dump(mode="json", exclude_unset=True)))


def labels(plan: Plan) -> list[str]:
    return [
        f"{t.cell.broker}/{t.cell.variant}/{t.cell.scenario}/{'w' if t.warmup else t.repetition}"
        for t in plan.trials
    ]


def test_interleaved_alternates_variants_within_each_round() -> None:
    trials = labels(plan_of())
    assert len(trials) == 2 * 2 * 2 * 3
    # Round by round (warm-up first), scenario by scenario, brokers and variants alternating.
    assert trials[:8] == [
        "kafka/a/Small/w",
        "kafka/b/Small/w",
        "nats/a/Small/w",
        "nats/b/Small/w",
        "kafka/a/Large/w",
        "kafka/b/Large/w",
        "nats/a/Large/w",
        "nats/b/Large/w",
    ]
    assert trials[8:16] == [label.replace("/w", "/1") for label in trials[:8]]
    assert trials[16:] == [label.replace("/w", "/2") for label in trials[:8]]


def test_sequential_runs_each_cell_to_the_end() -> None:
    trials = labels(plan_of(order="sequential"))
    assert trials[:3] == ["kafka/a/Small/w", "kafka/a/Small/1", "kafka/a/Small/2"]
    assert trials[3:6] == ["kafka/a/Large/w", "kafka/a/Large/1", "kafka/a/Large/2"]


def test_random_order_is_repeatable_by_seed_and_shuffles_within_rounds() -> None:
    first, again = plan_of(order="random", seed=7), plan_of(order="random", seed=7)
    assert labels(first) == labels(again) and first.seed == 7
    other = plan_of(order="random", seed=8)
    assert labels(other) != labels(first)
    interleaved = labels(plan_of())
    for start in (0, 8, 16):  # every round keeps exactly its own trials
        assert sorted(labels(first)[start : start + 8]) == sorted(interleaved[start : start + 8])


def test_filters_and_repetitions() -> None:
    spec = Experiment.model_validate(SPEC)
    cells = resolve_cells(spec, spec.model_dump(mode="json", exclude_unset=True))
    plan = make_plan(spec, cells, brokers=["nats"], variants=["b"], repetitions=3)
    assert {(t.cell.broker, t.cell.variant) for t in plan.trials} == {("nats", "b")}
    assert plan.measured == 2 * 3 and len(plan.trials) == 2 * 4
    with pytest.raises(BadInputError, match="--scenario Huge: not in the spec"):
        make_plan(spec, cells, scenarios=["Huge"])


def test_trial_keys_identify_trials_for_resume() -> None:
    keys = [t.key for t in plan_of().trials]
    assert len(set(keys)) == len(keys)


def test_placement_is_shown_per_host_with_dask() -> None:
    execution = {"engine": "dask", "hosts": 2, "processes": 1}
    shown = render_placement(plan_of(execution=execution))
    lines = shown.splitlines()
    assert lines[0].startswith("load generators: 2 host(s) x 1 process(es) per trial")
    # One producer and one consumer: sent from one host, received on the other.
    assert "    host 1, process 0: producers 0; no consumer" in lines
    assert "    host 2, process 0: no producer; consumers s0/0" in lines


def test_placement_over_local_processes_and_in_process() -> None:
    assert "its own process" in render_placement(plan_of())
    shown = render_placement(plan_of(execution={"processes": 2}))
    assert shown.splitlines()[0] == "load generators: 2 processes per trial"
    assert "    process 1: no producer; consumers s0/0" in shown.splitlines()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_phase_shows_its_time_rate_p99_and_in_flight_on_the_progress_line() -> None:
    plan = plan_of(scenarios={"Soak": {"duration": "1h", "rate": "20000/s"}}, warmup=0)
    terminal = _Terminal()
    progress = Progress(plan, terminal)
    progress.trial_started(0, plan.trials[0])
    window = PhaseWindow(at_s=754.2, received_per_s=19987.0, p99_ms=4.214, in_flight=312)
    progress.phase_window(window)
    line = terminal.getvalue().split("\r\x1b[2K")[-1]
    assert line.startswith(f"[1/{len(plan.trials)}] ")
    assert "phase 12:34/60:00  19,987 msg/s  p99 4.21 ms  in flight 312  elapsed " in line
    silent = io.StringIO()  # not a terminal: nothing written
    Progress(plan, silent).phase_window(window)
    assert silent.getvalue() == ""
