"""The computed report of a run: what the JSON reporter writes and every reporter renders.

`runner.analysis` builds it from the spec and the trials; reporters only format it. Its
JSON Schema is published as `schemas/results.schema.json` (regenerate with
`python -m schemas.report > schemas/results.schema.json`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.metrics import Better
from schemas.results import PublishPolicy, TrialResult
from schemas.spec import Correction

REPORT_SCHEMA_VERSION: Literal[1] = 1
REPORT_SCHEMA_ID = "https://exprun.dev/schemas/results.schema.json"

Verdict = Literal["better", "worse", "changed", "~", "insufficient data"]
AnomalyKind = Literal[
    "trend_break",
    "high_variance",
    "loss",
    "duplicates",
    "publish_errors",
    "limit_reached",
    "leak",
    "lingering",
    "failed_trials",
    "rate_shortfall",
    "throughput_sag",
    "latency_climb",
    "rebalance",
    "redelivered",
    "ack_pending_limit",
    "clock_uncertainty",
    "client_versions",
    "failed_delivered",
    "unlike_policies",
    "broker_in_fault",
    "telemetry_missing",
]


class ReportModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricMeta(ReportModel):
    """A metric as the registry describes it."""

    name: str
    label: str
    unit: str
    better: Better | None = Field(description="which direction is an improvement, if any")


class SpecSummary(ReportModel):
    name: str
    description: str
    sha256: str | None = Field(None, description="of spec.yaml as written")
    document: dict[str, Any] = Field(description="the validated spec (secrets redacted)")


class RunSummary(ReportModel):
    """run.json, plus counts of the trials actually recorded."""

    started_at: str | None = None
    finished_at: str | None = None
    complete: bool
    interrupted: bool
    planned_trials: int | None = None
    recorded_trials: int
    measured_trials: int = Field(description="ok, not warm-up: the trials behind every figure")
    warmup_trials: int
    failed_trials: int = Field(description="failed measured trials (excluded from figures)")
    seed: int | None = None
    filters: dict[str, Any] = Field(default_factory=dict)


class ScenarioInfo(ReportModel):
    name: str
    messages: int | None = Field(description="messages per trial, when a count is declared")
    load_shape: str | None = Field(None, description="e.g. '30s at 20000/s, ramp 5s'")
    rate: float | None = Field(None, description="declared rate, msg/s (None: unpaced)")
    duration_s: float | None = None
    ramp_s: float | None = None
    backlog: str | None = None
    search_rate: str | None = Field(None, description="capacity searches: the rates searched")
    search_until: str | None = Field(None, description="capacity searches: the condition")
    search_steps: int | None = None


class BrokerInfo(ReportModel):
    name: str
    type: str


class StatisticsSettings(ReportModel):
    alpha: float
    noise_threshold_pct: float
    correction: Correction = "none"
    cv_threshold_pct: float
    trend_factor: float = Field(description="a scenario this many times off its neighbours breaks")


class CellKey(ReportModel):
    broker: str
    variant: str
    scenario: str

    def __str__(self) -> str:
        return f"{self.broker}/{self.variant}/{self.scenario}"


class Stats(ReportModel):
    """Descriptive statistics of one metric in one cell (measured, ok trials only)."""

    n: int
    median: float | None
    mean: float | None
    stdev: float | None
    min: float | None
    max: float | None
    cv_pct: float | None = Field(description="coefficient of variation, stdev / |mean|, in %")
    ci_low: float | None = Field(description="confidence interval of the median, low end")
    ci_high: float | None
    ci_level: float | None = Field(
        description="achieved level of that interval (0.95, or lower at n <= 5)"
    )


class CellStats(ReportModel):
    cell: CellKey
    broker_type: str
    measured: int = Field(description="trials behind the figures")
    warmup_excluded: int
    failed_excluded: int
    metrics: dict[str, Stats]


class Comparison(ReportModel):
    """Candidate cell vs baseline cell on one metric: change of the medians and its test."""

    metric: str
    baseline: CellKey
    candidate: CellKey
    n_baseline: int
    n_candidate: int
    baseline_median: float | None
    candidate_median: float | None
    change_pct: float | None
    delta: float | None
    test: str | None
    p_value: float | None
    p_adjusted: float | None = Field(
        None, description="p_value adjusted for the family of comparisons (statistics.correction)"
    )
    significant: bool
    verdict: Verdict
    note: str | None


class ComparisonGeomean(ReportModel):
    """A comparison summarised over scenarios: geometric means of both sides' medians."""

    kind: Literal["variant", "broker"]
    metric: str
    baseline_broker: str
    baseline_variant: str
    candidate_broker: str
    candidate_variant: str
    scenarios: int = Field(description="scenarios where both medians are positive")
    baseline: float | None
    candidate: float | None
    change_pct: float | None


class TargetScore(ReportModel):
    """One target scored in one cell."""

    target: int = Field(description="index in the spec's targets")
    title: str
    metric: str
    kind: Literal["change", "value"]
    goal: str
    cell: CellKey
    baseline_variant: str | None = None
    actual: float | None = Field(description="change in % (or delta) for change goals, else value")
    achievement_pct: float | None
    passed: bool
    verdict: Verdict | None = Field(None, description="significance of the change, for changes")
    p_value: float | None = Field(
        None, description="p-value of the verdict (adjusted when statistics.correction is set)"
    )
    note: str | None = None


class TargetsSummary(ReportModel):
    scores: list[TargetScore]
    passed: int
    total: int
    overall: str = Field(description='"k/n (p%)"')


class Anomaly(ReportModel):
    kind: AnomalyKind
    severity: Literal["warning", "info"]
    cell: CellKey | None = None
    metric: str | None = None
    message: str
    evidence: str
    advice: str | None = None


class ClientPolicy(ReportModel):
    """What one broker's producers do on a failed publish, in one variant."""

    broker: str
    variant: str
    policy: PublishPolicy


class Report(ReportModel):
    """Everything about one run: inputs, figures, comparisons, targets, anomalies."""

    schema_version: Literal[1] = REPORT_SCHEMA_VERSION
    exprun_version: str | None = None
    partial: bool = Field(description="the run was interrupted or not every trial was recorded")
    spec: SpecSummary
    run: RunSummary
    environment: dict[str, Any]
    statistics: StatisticsSettings
    brokers: list[BrokerInfo]
    variants: list[str]
    baseline: str | None
    scenarios: list[ScenarioInfo]
    metrics: list[MetricMeta]
    cells: list[CellStats]
    variant_comparisons: list[Comparison]
    broker_comparisons: list[Comparison]
    geomeans: list[ComparisonGeomean]
    targets: TargetsSummary
    anomalies: list[Anomaly]
    publish_policies: list[ClientPolicy] = Field(
        default_factory=list, description="per broker and variant, as the trials recorded them"
    )
    trials: list[TrialResult]

    def metric(self, name: str) -> MetricMeta:
        """The registry entry of `name` as recorded in this report (neutral if unknown)."""
        for meta in self.metrics:
            if meta.name == name:
                return meta
        return MetricMeta(name=name, label=name, unit="", better=None)

    def cell(self, broker: str, variant: str, scenario: str) -> CellStats | None:
        for stats in self.cells:
            key = stats.cell
            if (key.broker, key.variant, key.scenario) == (broker, variant, scenario):
                return stats
        return None


# --------------------------------------------------------------------------- diff


class DiffRow(ReportModel):
    """One metric of one matched cell: old vs new."""

    metric: str
    old: CellKey
    new: CellKey
    n_old: int
    n_new: int
    old_median: float | None
    new_median: float | None
    change_pct: float | None
    delta: float | None
    test: str | None
    p_value: float | None
    p_adjusted: float | None = Field(
        None, description="p_value adjusted for the family of comparisons (statistics.correction)"
    )
    significant: bool
    verdict: Verdict
    note: str | None


def verdict_p(row: Comparison | DiffRow) -> float | None:
    """The p-value the verdict was decided on: the adjusted one when a correction is set."""
    return row.p_adjusted if row.p_adjusted is not None else row.p_value


class DiffGeomean(ReportModel):
    """Geometric means of the matched cells' medians (positive ones), old and new."""

    metric: str
    cells: int
    old: float | None
    new: float | None
    change_pct: float | None


class EnvironmentDifference(ReportModel):
    key: str
    old: str | None
    new: str | None


class Diff(ReportModel):
    """`exprun diff`: two runs (or two variants of one run) compared cell by cell."""

    schema_version: Literal[1] = REPORT_SCHEMA_VERSION
    old: str = Field(description="what OLD is (path, or path:variant)")
    new: str
    metrics: list[MetricMeta]
    rows: list[DiffRow]
    geomeans: list[DiffGeomean]
    environment_differences: list[EnvironmentDifference]
    warnings: list[str]
    statistics: StatisticsSettings
    fail_on_regression_pct: float | None = None
    regressions: list[DiffRow] = Field(
        default_factory=list, description="significant, worse, beyond fail_on_regression_pct"
    )


def format_number(value: float | None) -> str:
    """A figure for people: about 4 significant digits, thousands separated, n/a for None."""
    if value is None:
        return "n/a"
    if abs(value) >= 1000 or (float(value).is_integer() and abs(value) < 1e15):
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    if abs(value) < 0.001:
        return f"{value:.2e}"
    return f"{value:.4g}"


def report_schema() -> dict[str, Any]:
    """JSON Schema of results.json."""
    schema = Report.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": REPORT_SCHEMA_ID,
        "title": f"exprun results (report schema version {REPORT_SCHEMA_VERSION})",
        **{k: v for k, v in schema.items() if k != "title"},
    }


if __name__ == "__main__":
    print(json.dumps(report_schema(), indent=2))
