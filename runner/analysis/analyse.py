"""From trials to a Report: cell statistics, comparisons, target scores and anomalies.

Pure functions over pydantic models (no I/O). The statistics themselves live in
`runner.analysis.statistics`; this module decides what is compared with what.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel

from runner.analysis import statistics as st
from runner.analysis.anomalies import TREND_FACTOR, find_anomalies, host_anomalies
from runner.analysis.cells import (
    CellTuple,
    cell_key,
    geomean_change,
    measured,
    metric_meta,
    metric_order,
    positive_pairs,
)
from runner.analysis.context import AnalysisContext
from runner.analysis.policies import policy_anomalies, publish_policies
from runner.analysis.targets import score_targets
from runner.redaction import redact_data
from schemas.report import (
    BrokerInfo,
    CellStats,
    Comparison,
    ComparisonGeomean,
    Report,
    RunSummary,
    ScenarioInfo,
    SpecSummary,
    StatisticsSettings,
    Stats,
)
from schemas.resolve import CellConfig
from schemas.results import TrialResult
from schemas.spec import Experiment
from schemas.units import format_rate_range


def analyse(
    spec: Experiment,
    trials: Sequence[TrialResult],
    environment: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | BaseModel | None = None,
    *,
    cells: Sequence[CellConfig] | None = None,
    spec_sha256: str | None = None,
    secrets: Iterable[str] = (),
    exprun_version: str | None = None,
) -> Report:
    """Build the report of a run from its spec, its trials, environment.json and run.json.

    `cells` (the resolved spec) supplies settings that trial configs lack; `secrets` are
    redacted from everything the report repeats (spec, trial configs and errors).
    """
    secrets = list(secrets)
    if secrets:
        trials = [TrialResult.model_validate(redact_data(t.model_dump(), secrets)) for t in trials]
    ctx = AnalysisContext(spec, trials, cells, _settings(spec))
    run_data = run.model_dump(mode="json") if isinstance(run, BaseModel) else dict(run or {})
    run_summary = _run_summary(run_data, trials)
    names = {n for metrics in ctx.samples.values() for n in metrics}
    variant_comparisons = _variant_comparisons(ctx)
    broker_comparisons = _broker_comparisons(ctx)
    policies = publish_policies(trials)
    return Report(
        exprun_version=exprun_version,
        partial=_partial(spec, run_summary, bool(run_data), len(trials)),
        spec=SpecSummary(
            name=spec.name,
            description=redact_data(spec.description.strip(), secrets),
            sha256=spec_sha256 or run_data.get("spec_sha256"),
            document=redact_data(spec.model_dump(mode="json"), secrets),
        ),
        run=run_summary,
        environment=redact_data(dict(environment or {}), secrets),
        statistics=ctx.settings,
        brokers=[BrokerInfo(name=b, type=_broker_type(ctx, b)) for b in ctx.brokers],
        variants=ctx.variants,
        baseline=spec.baseline if spec.baseline in ctx.variants else None,
        scenarios=[_scenario_info(ctx, s) for s in ctx.scenarios],
        metrics=[metric_meta(n) for n in metric_order(names)],
        cells=[_cell_stats(ctx, key) for key in ctx.cell_keys()],
        variant_comparisons=variant_comparisons,
        broker_comparisons=broker_comparisons,
        geomeans=_geomeans("variant", variant_comparisons)
        + _geomeans("broker", broker_comparisons),
        targets=score_targets(ctx, variant_comparisons),
        anomalies=find_anomalies(ctx)
        + policy_anomalies(ctx, policies)
        + host_anomalies(environment or {}),
        publish_policies=policies,
        trials=list(trials),
    )


def _settings(spec: Experiment) -> StatisticsSettings:
    return StatisticsSettings(
        alpha=spec.statistics.alpha,
        noise_threshold_pct=spec.statistics.noise_threshold,
        correction=spec.statistics.correction,
        cv_threshold_pct=spec.statistics.cv_threshold,
        trend_factor=TREND_FACTOR,
    )


def _partial(spec: Experiment, run: RunSummary, has_run_json: bool, recorded: int) -> bool:
    """Interrupted or incomplete; without run.json, fewer trials than the spec asks for."""
    expected = len(spec.brokers) * len(spec.variant_names) * len(spec.scenarios)
    expected *= spec.repetitions + spec.warmup
    return run.interrupted or not run.complete or (not has_run_json and recorded < expected)


def _scenario_info(ctx: AnalysisContext, scenario: str) -> ScenarioInfo:
    """The scenario's load as the spec resolves it (in the first cell that runs it)."""
    config = next((c for key, c in ctx.configs.items() if key[2] == scenario), None)
    if config is None:
        return ScenarioInfo(name=scenario, messages=ctx.messages(scenario))
    work = config.workload
    search = work.search
    return ScenarioInfo(
        name=scenario,
        messages=work.messages,
        load_shape=work.load_shape(),
        rate=work.rate,
        duration_s=work.duration,
        ramp_s=work.ramp or None,
        backlog=str(work.backlog) if work.backlog is not None else None,
        search_rate=format_rate_range(search.rate) if search is not None else None,
        search_until=search.until if search is not None else None,
        search_steps=search.steps if search is not None else None,
    )


def _broker_type(ctx: AnalysisContext, broker: str) -> str:
    declared = ctx.spec.brokers.get(broker)
    if declared is not None:
        return declared.type
    return next((t.broker_type for t in ctx.trials if t.broker == broker), "unknown")


def _run_summary(run: Mapping[str, Any], trials: Sequence[TrialResult]) -> RunSummary:
    return RunSummary(
        started_at=run.get("started_at"),
        finished_at=run.get("finished_at"),
        # Without run.json nothing says the run finished; the trial count decides `partial`.
        complete=bool(run.get("complete", True)),
        interrupted=bool(run.get("interrupted", False)),
        planned_trials=run.get("planned_trials"),
        recorded_trials=len(trials),
        measured_trials=len(measured(trials)),
        warmup_trials=sum(t.warmup for t in trials),
        failed_trials=sum(not t.warmup and t.status == "failed" for t in trials),
        seed=run.get("seed"),
        filters=dict(run.get("filters") or {}),
    )


def _cell_stats(ctx: AnalysisContext, key: CellTuple) -> CellStats:
    trials = ctx.by_cell[key]
    summaries = ctx.summaries.get(key, {})
    return CellStats(
        cell=cell_key(key),
        broker_type=trials[0].broker_type,
        measured=len(measured(trials)),
        warmup_excluded=sum(t.warmup for t in trials),
        failed_excluded=sum(not t.warmup and t.status == "failed" for t in trials),
        metrics={name: _stats(summaries[name]) for name in metric_order(summaries)},
    )


def _variant_comparisons(ctx: AnalysisContext) -> list[Comparison]:
    """Every non-baseline variant vs the baseline, per broker and scenario."""
    base = ctx.spec.baseline
    if base is None or base not in ctx.variants:
        return []
    return _compare_cells(
        ctx,
        [
            ((broker, base, scenario), (broker, variant, scenario))
            for broker in ctx.brokers
            for variant in ctx.variants
            if variant != base
            for scenario in ctx.scenarios
        ],
    )


def _broker_comparisons(ctx: AnalysisContext) -> list[Comparison]:
    """Within each variant, every broker vs the first one of the spec."""
    if len(ctx.brokers) < 2:
        return []
    first, others = ctx.brokers[0], ctx.brokers[1:]
    return _compare_cells(
        ctx,
        [
            ((first, variant, scenario), (broker, variant, scenario))
            for variant in ctx.variants
            for broker in others
            for scenario in ctx.scenarios
        ],
    )


def _compare_cells(
    ctx: AnalysisContext, cells: Sequence[tuple[CellTuple, CellTuple]]
) -> list[Comparison]:
    """Every compared metric of the cell pairs that both ran, as one family of tests."""
    return ctx.compare(
        [
            (b, c, metric)
            for b, c in cells
            if b in ctx.by_cell and c in ctx.by_cell
            for metric in ctx.compared_metrics(b, c)
        ]
    )


def _geomeans(
    kind: Literal["variant", "broker"], rows: Sequence[Comparison]
) -> list[ComparisonGeomean]:
    """Per metric and pair of sides: geometric means of the medians over the scenarios."""
    groups: dict[tuple[str, str, str, str, str], list[Comparison]] = defaultdict(list)
    for row in rows:
        b, c = row.baseline, row.candidate
        groups[row.metric, b.broker, b.variant, c.broker, c.variant].append(row)
    out = []
    for (metric, bb, bv, cb, cv), group in groups.items():
        both = positive_pairs((r.baseline_median, r.candidate_median) for r in group)
        base, cand, change = geomean_change(both)
        out.append(
            ComparisonGeomean(
                kind=kind,
                metric=metric,
                baseline_broker=bb,
                baseline_variant=bv,
                candidate_broker=cb,
                candidate_variant=cv,
                scenarios=len(both),
                baseline=base,
                candidate=cand,
                change_pct=change,
            )
        )
    return out


def _stats(summary: st.Summary) -> Stats:
    return Stats(**asdict(summary))
