"""Synthetic runs of one small spec for the store tests: reports with a level per run."""

from __future__ import annotations

import random
from collections.abc import Sequence

from synthetic_runs import cell_trials, environment, small_spec

from runner.analysis.analyse import analyse
from runner.history.record import RunRecord, run_record
from schemas.report import Report

SHA = "ab" * 32


def synthetic_report(
    day: int, level: float, *, seed: int = 0, noise: float = 0.01, workers: int = 48
) -> Report:
    """One run on day `day`: cell nats/before/Low at throughput `level` (5 trials)."""
    rng = random.Random(seed * 1000 + day)
    values = [level * (1 + rng.gauss(0, noise)) for _ in range(5)]
    trials = cell_trials("before", "Low", values)
    spec = small_spec(
        variants={"before": {"brokers": {"nats": {"workers": workers}}}},
        scenarios={"Low": {"messages": 500}},
    )
    for trial in trials:
        trial.config = {"broker": {"workers": workers}, "workload": {"messages": 500}}
    run = {"started_at": f"2026-01-01T00:00:{day:02d}.000Z", "complete": True}
    return analyse(spec, trials, environment(), run, spec_sha256=SHA)


def synthetic_records(levels: Sequence[float], **options: float) -> list[RunRecord]:
    return [
        run_record(synthetic_report(day, level, **options), None, commit=f"rev{day:02d}")
        for day, level in enumerate(levels)
    ]
