"""What the store keeps of one run, taken from its Report (pure: no I/O)."""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.history import RecordedRun
from schemas.report import Report
from schemas.results import TrialResult


@dataclass(frozen=True)
class CellFigures:
    """One metric of one cell in one run: its statistics and every measured trial's value."""

    broker: str
    variant: str
    scenario: str
    metric: str
    median: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    trials: list[float]
    settings: str  # a digest of the cell's resolved settings


@dataclass(frozen=True)
class RunRecord:
    run: RecordedRun
    environment: dict[str, Any]  # the machine, and the broker and client versions
    figures: list[CellFigures]


def run_key(report: Report) -> str:
    """A run's identity in any store: its spec's digest and its start, the same on import."""
    digest = (report.spec.sha256 or "unknown")[:16]
    return f"{report.spec.name}@{report.run.started_at or 'unknown'}#{digest}"


def testbed_of(environment: Mapping[str, Any]) -> str:
    """The machine as a testbed: CPU model, cores, memory and OS, never the host's name."""
    machine = environment.get("machine") or {}
    cpu = str(machine.get("cpu") or "unknown CPU")
    cores = machine.get("cpu_count") or "?"
    memory = machine.get("memory_gb")
    memory_text = f"{round(memory)} GB" if isinstance(memory, int | float) else "? GB"
    system = str(machine.get("os") or "unknown OS").split("-", 1)[0]
    return f"{cpu}, {cores} cores, {memory_text}, {system}"


def run_record(
    report: Report,
    run_folder: str | None,
    *,
    label: str | None = None,
    commit: str | None = None,
    testbed: str | None = None,
    recorded_at: str | None = None,
) -> RunRecord:
    """The run as the store records it, with every measured cell's every metric."""
    environment = report.environment
    git = environment.get("spec_git") or {}
    figures = _cell_figures(report)
    run = RecordedRun(
        run_key=run_key(report),
        spec_name=report.spec.name,
        spec_sha256=report.spec.sha256,
        spec_commit=git.get("commit"),
        spec_branch=git.get("branch"),
        spec_dirty=git.get("dirty", git.get("spec_modified")),
        label=label,
        commit=commit,
        testbed=testbed or testbed_of(environment),
        started_at=report.run.started_at,
        finished_at=report.run.finished_at,
        recorded_at=recorded_at,
        run_folder=run_folder,
    )
    kept = {
        "machine": environment.get("machine"),
        "brokers": {
            name: broker.get("version")
            for name, broker in (environment.get("brokers") or {}).items()
            if isinstance(broker, Mapping)
        },
        "clients": environment.get("clients"),
        "exprun": report.exprun_version or environment.get("exprun"),
    }
    return RunRecord(run=run, environment=kept, figures=figures)


def _cell_figures(report: Report) -> list[CellFigures]:
    values: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    settings: dict[tuple[str, str, str], str] = {}
    for trial in report.trials:
        if trial.warmup or trial.status != "ok" or trial.search_step:
            continue
        key = (trial.broker, trial.variant, trial.scenario)
        settings.setdefault(key, settings_digest(trial))
        for metric, value in trial.metrics.flat().items():
            if math.isfinite(value):
                values[key][metric].append(value)
    figures = []
    for stats in report.cells:
        key = (stats.cell.broker, stats.cell.variant, stats.cell.scenario)
        for metric, summary in stats.metrics.items():
            figures.append(
                CellFigures(
                    *key,
                    metric=metric,
                    median=summary.median,
                    ci_low=summary.ci_low,
                    ci_high=summary.ci_high,
                    n=summary.n,
                    trials=values[key][metric],
                    settings=settings.get(key, ""),
                )
            )
    return figures


def settings_digest(trial: TrialResult) -> str:
    """A digest of the trial's effective settings: equal for equal settings, in any run."""
    text = json.dumps(trial.config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
