"""Change points on planted series (pure; every series from a fixed seed)."""

from __future__ import annotations

import numpy as np

from runner.history.changes import change_points, recent_step

RUNS = 60


def series(
    seed: int,
    step: float = 0.0,
    at: int = 40,
    *,
    run_noise: float = 0.05,
    trial_noise: float = 0.0,
    trials: int = 1,
) -> list[list[float]]:
    """RUNS runs of `trials` trials: 1,000 x (1 + step from run `at`), run and trial noise."""
    rng = np.random.default_rng(seed)
    out = []
    for run in range(RUNS):
        level = 1000.0 * (1 + (step if run >= at else 0.0)) * (1 + rng.normal(0, run_noise))
        out.append(list(level * (1 + rng.normal(0, trial_noise, trials))))
    return out


def found_at(found: list[int], at: int) -> bool:
    return any(abs(index - at) <= 2 for index in found)


def test_a_clear_step_is_found_where_it_is() -> None:
    for seed in range(20):
        [step] = change_points(series(seed, step=-0.20))
        assert abs(step.index - 40) <= 1, seed  # 5% noise can blur a run's side
        assert step.after / step.before < 0.85 and step.p_value < 0.001


def test_unchanged_series_raise_false_alarms_at_the_rate_asked() -> None:
    alarms = sum(bool(change_points(series(seed))) for seed in range(300))
    # 1% of 300 is 3; a scan without its simulated calibration would raise dozens.
    assert alarms <= 7, alarms


def test_a_flat_series_has_no_change_and_no_division_by_zero() -> None:
    assert change_points([[9.0]] * 30) == []
    assert change_points([[0.0, 0.0]] * 30) == []
    assert change_points([[5.0]] * 4) == []  # too short for two sides of 3


def test_every_trial_counts_where_trials_vary_more_than_runs() -> None:
    """1% run-to-run, 5% trial-to-trial, 5 trials a run: the mean of each run's trials finds
    a 3% step that the medians alone find less often."""
    with_trials = with_medians = 0
    for seed in range(60):
        runs = series(seed, step=-0.03, run_noise=0.01, trial_noise=0.05, trials=5)
        medians = [[float(np.median(trials))] for trials in runs]
        with_trials += found_at([s.index for s in change_points(runs)], 40)
        with_medians += found_at([s.index for s in change_points(medians)], 40)
    assert with_trials > with_medians + 5, (with_trials, with_medians)


def test_the_gate_looks_at_the_newest_runs_against_the_level_before_them() -> None:
    caught = 0
    for seed in range(40):
        step = recent_step(series(seed, step=-0.10, at=RUNS - 3), window=5)
        assert step is not None
        caught += step.p_value < 0.01 and step.index == RUNS - 3
    assert caught >= 16  # a 10% step with 3 runs after it: about half the time at 1%
    # A step 10 runs ago is the baseline now: the newest runs are level with it.
    settled = [recent_step(series(seed, step=-0.20, at=RUNS - 10), window=5) for seed in range(40)]
    assert sum(s is not None and s.p_value < 0.01 for s in settled) <= 2
