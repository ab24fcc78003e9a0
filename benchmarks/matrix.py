"""The whole worker_pool_256 matrix, run by the `exprun` command as a user runs it, and where
its wall time goes: broker start, per-trial set-up and tear-down, measured phases, the rest.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.run_folder import read_trials
from schemas.resolve import TrialSettings
from schemas.results import TrialResult

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
SPEC = EXPERIMENTS / "worker_pool_256.yaml"
CAPACITY_SPEC = EXPERIMENTS / "capacity.yaml"
BUDGET_S = 120.0
CAPACITY_BUDGET_S = 600.0
MATRIX_TIMEOUT_S = 1800.0
FIXED_COSTS = ("spawn_s", "create_s", "connect_s", "teardown_s")


@dataclass
class MatrixRun:
    """One `exprun run` of the spec: wall time and its breakdown from the run folder."""

    argv: list[str]
    wall_s: float
    exit_code: int
    trials: list[TrialResult] = field(default_factory=list)
    broker_start_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def fixed_costs(self) -> list[float]:
        """Per trial: process spawn + topic/stream create + clients ready + tear-down."""
        return [
            sum(getattr(t.metrics, key) or 0.0 for key in FIXED_COSTS)
            for t in self.trials
            if t.status == "ok"
        ]

    def breakdown(self) -> dict[str, Any]:
        """Seconds of the wall time by kind; settle waits overlap later trials, so they are
        shown but not added up."""
        ok = [t for t in self.trials if t.status == "ok"]

        def total(key: str) -> float:
            return round(sum(getattr(t.metrics, key) or 0.0 for t in ok), 3)

        starts = round(sum(self.broker_start_s.values()), 3)
        measured = total("duration_s")
        fixed = {key: total(key) for key in FIXED_COSTS}
        settle = round(sum(_workload(t).settle_time for t in ok), 3)
        accounted = starts + measured + sum(fixed.values())
        costs = self.fixed_costs
        return {
            "wall_s": round(self.wall_s, 3),
            "trials": len(self.trials),
            "warmups": sum(t.warmup for t in self.trials),
            "failed": sum(t.status != "ok" for t in self.trials),
            "broker_start_s": self.broker_start_s,
            "measured_phases_s": measured,
            "fixed_costs_s": fixed,
            "fixed_cost_per_trial_s": {
                "median": round(statistics.median(costs), 4) if costs else None,
                "max": round(max(costs), 4) if costs else None,
            },
            # Settle waits overlap the next trials: shown, not added up.
            "settle_waits_overlapped_s": settle,
            # CLI start, forkserver, the last settle wait, reports, broker stop.
            "rest_s": round(self.wall_s - accounted, 3),
        }


def _workload(trial: TrialResult) -> TrialSettings:
    return TrialSettings.model_validate(trial.config["workload"])


def run_matrix(extra_args: list[str], spec: Path = SPEC) -> MatrixRun:
    """`exprun run SPEC --out <tmp> [extra_args]` in a subprocess, timed."""
    with tempfile.TemporaryDirectory(prefix="exprun-bench-matrix-") as tmp:
        out = Path(tmp) / "run"
        argv = [sys.executable, "-m", "runner.cli", "run", str(spec)]
        argv += ["--out", str(out), *extra_args]
        # Recorded as a user's run is, but not into their results store.
        env = {**os.environ, "EXPRUN_STORE": str(Path(tmp) / "store.sqlite")}
        started = time.monotonic()
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=MATRIX_TIMEOUT_S,
                cwd=spec.parent.parent,
                env=env,
            )
        except subprocess.TimeoutExpired:
            wall = time.monotonic() - started
            return MatrixRun(argv, wall, -1, error=f"timed out after {MATRIX_TIMEOUT_S:g}s")
        wall = time.monotonic() - started
        run = MatrixRun(argv, wall, done.returncode)
        if (out / "trials.jsonl").is_file():
            run.trials = read_trials(out / "trials.jsonl")
        env_path = out / "environment.json"
        if env_path.is_file():
            brokers = json.loads(env_path.read_text()).get("brokers", {})
            run.broker_start_s = {
                name: round(float(facts["start_seconds"]), 3)
                for name, facts in brokers.items()
                if facts.get("start_seconds") is not None
            }
        if done.returncode not in (0, 1) or not run.trials:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            run.error = f"exprun exit {done.returncode}: {last[:300]}"
    return run
