"""Tidy CSV: `trials.csv` (one row per trial and metric), `cells.csv`, `comparisons.csv`,
and, when brokers were read, `telemetry.csv` (one row per trial, node, window and signal).

Plain comma-separated text with a header row and empty fields for missing values, so
`pandas.read_csv(path)` loads each without arguments.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from reporters.base import Files
from schemas.report import Report
from schemas.telemetry import signal_info

TRIALS_COLUMNS = (
    "broker",
    "variant",
    "scenario",
    "repetition",
    "warmup",
    "status",
    "metric",
    "value",
    "unit",
    "search_step",
    "offered_rate",
)
CELLS_COLUMNS = (
    "broker",
    "variant",
    "scenario",
    "metric",
    "unit",
    "n",
    "median",
    "mean",
    "stdev",
    "min",
    "max",
    "cv_pct",
    "ci_low",
    "ci_high",
    "ci_level",
    "warmup_excluded",
    "failed_excluded",
)
TELEMETRY_COLUMNS = (
    "broker",
    "variant",
    "scenario",
    "repetition",
    "warmup",
    "node",
    "start_s",
    "seconds",
    "signal",
    "value",
    "unit",
)
COMPARISON_COLUMNS = (
    "kind",
    "metric",
    "unit",
    "baseline_broker",
    "baseline_variant",
    "candidate_broker",
    "candidate_variant",
    "scenario",
    "n_baseline",
    "n_candidate",
    "baseline_median",
    "candidate_median",
    "change_pct",
    "p_value",
    "p_adjusted",
    "test",
    "verdict",
)


def _field(value: object) -> object:
    # Missing values are empty fields (NaN in pandas); booleans as true/false for any reader.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def to_csv(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_field(v) for v in row] for row in rows)
    return out.getvalue()


def trials_csv(report: Report) -> str:
    """Every trial (warm-up and failed ones too, flagged) x every metric it recorded.

    A capacity search's steps carry their step number and offered rate; its result, the rate.
    """
    rows = []
    for trial in report.trials:
        search = trial.search
        step = search.step if search is not None else None
        offered = search.rate if search is not None else None
        for metric, value in trial.metrics.flat().items():
            unit = report.metric(metric).unit
            rows.append(
                (
                    trial.broker,
                    trial.variant,
                    trial.scenario,
                    trial.repetition,
                    trial.warmup,
                    trial.status,
                    metric,
                    value,
                    unit,
                    step,
                    offered,
                )
            )
    return to_csv(TRIALS_COLUMNS, rows)


def cells_csv(report: Report) -> str:
    rows = []
    for cell in report.cells:
        key = cell.cell
        for metric, s in cell.metrics.items():
            rows.append(
                (
                    key.broker,
                    key.variant,
                    key.scenario,
                    metric,
                    report.metric(metric).unit,
                    s.n,
                    s.median,
                    s.mean,
                    s.stdev,
                    s.min,
                    s.max,
                    s.cv_pct,
                    s.ci_low,
                    s.ci_high,
                    s.ci_level,
                    cell.warmup_excluded,
                    cell.failed_excluded,
                )
            )
    return to_csv(CELLS_COLUMNS, rows)


def comparisons_csv(report: Report) -> str:
    rows = []
    for kind, comparisons in (
        ("variant", report.variant_comparisons),
        ("broker", report.broker_comparisons),
    ):
        for c in comparisons:
            rows.append(
                (
                    kind,
                    c.metric,
                    report.metric(c.metric).unit,
                    c.baseline.broker,
                    c.baseline.variant,
                    c.candidate.broker,
                    c.candidate.variant,
                    c.candidate.scenario,
                    c.n_baseline,
                    c.n_candidate,
                    c.baseline_median,
                    c.candidate_median,
                    c.change_pct,
                    c.p_value,
                    c.p_adjusted,
                    c.test,
                    c.verdict,
                )
            )
    return to_csv(COMPARISON_COLUMNS, rows)


def telemetry_csv(report: Report) -> str | None:
    """The brokers' signals of every trial that read them, window by window; None if none."""
    rows = []
    for trial in report.trials:
        telemetry, series = trial.telemetry, trial.series
        if telemetry is None or series is None:
            continue
        lead = (trial.broker, trial.variant, trial.scenario, trial.repetition, trial.warmup)
        for node in telemetry.nodes:
            for signal, values in node.signals.items():
                unit = signal_info(signal).unit
                for start, seconds, value in zip(
                    series.start_s, series.seconds, values, strict=True
                ):
                    rows.append((*lead, node.node, start, seconds, signal, value, unit))
    return to_csv(TELEMETRY_COLUMNS, rows) if rows else None


class CsvReporter:
    name = "csv"

    def render(self, report: Report) -> Files:
        files: Files = {
            "trials.csv": trials_csv(report),
            "cells.csv": cells_csv(report),
            "comparisons.csv": comparisons_csv(report),
        }
        telemetry = telemetry_csv(report)
        if telemetry is not None:
            files["telemetry.csv"] = telemetry
        return files
