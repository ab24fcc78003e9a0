"""From trials to a Report: cell statistics, comparisons, target scores, anomalies; and diffs.

Pure functions over pydantic models (no I/O). The statistics themselves live in
`runner.statistics`; this module decides what is compared with what.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, Literal

from pydantic import BaseModel

from runner import statistics as st
from runner.errors import BadInputError
from runner.redaction import redact_data
from schemas.goals import Goal, parse_goal
from schemas.metrics import METRICS, metric_info
from schemas.report import (
    Anomaly,
    BrokerInfo,
    CellKey,
    CellStats,
    Comparison,
    ComparisonGeomean,
    Diff,
    DiffGeomean,
    DiffRow,
    EnvironmentDifference,
    MetricMeta,
    Report,
    RunSummary,
    ScenarioInfo,
    SpecSummary,
    StatisticsSettings,
    Stats,
    TargetScore,
    TargetsSummary,
)
from schemas.report import format_number as num
from schemas.resolve import CellConfig, resolve_cells
from schemas.results import TrialResult
from schemas.spec import Experiment

# A middle scenario this many times outside its neighbours' range breaks the trend; 2x is
# far beyond run-to-run noise (usually < 10%) yet catches the source report's NATS High
# case (161.82 msg/s between 830.74 and 1169.39: 5.1x below).
TREND_FACTOR = 2.0
# Metrics that should move smoothly with the message count (trend breaks) and whose
# repeatability matters (high variance). Counts and leaks have rules of their own.
TREND_METRICS = (
    "throughput",
    "publish_throughput",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "publish_latency_p99_ms",
    "duration_s",
)
VARIANCE_METRICS = (
    "throughput",
    "publish_throughput",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "publish_latency_p50_ms",
    "publish_latency_p99_ms",
    "duration_s",
)
# CV from two values says little; three is the fewest for which it is worth a warning.
MIN_SAMPLES_FOR_CV = 3
# Reasons JetStream (and nats-py) give when a stream limit refuses a publish.
LIMIT_REASON = re.compile(r"limit|maximum|max[_ ]?(msgs|bytes)|exceeded|insufficient", re.I)

CellTuple = tuple[str, str, str]
Samples = dict[CellTuple, dict[str, list[float]]]


# --------------------------------------------------------------------------- helpers


def _stats(summary: st.Summary) -> Stats:
    return Stats(**asdict(summary))


def _metric_order(names: Iterable[str]) -> list[str]:
    """Registry order first (a stable, meaningful order), then unknown names sorted."""
    present = set(names)
    known = [name for name in METRICS if name in present]
    return known + sorted(present - set(METRICS))


def metric_meta(name: str) -> MetricMeta:
    info = metric_info(name)
    return MetricMeta(name=name, label=info.label, unit=info.unit, better=info.better)


def measured(trials: Iterable[TrialResult]) -> list[TrialResult]:
    """The trials behind the figures: not warm-up, not failed."""
    return [t for t in trials if not t.warmup and t.status == "ok"]


def cell_samples(trials: Iterable[TrialResult]) -> Samples:
    """Per (broker, variant, scenario): every metric's values over the measured trials."""
    samples: Samples = defaultdict(lambda: defaultdict(list))
    for trial in measured(trials):
        for name, value in trial.metrics.flat().items():
            if math.isfinite(value):
                samples[trial.broker, trial.variant, trial.scenario][name].append(value)
    return samples


def _ordered(seen: Iterable[str], declared: Iterable[str]) -> list[str]:
    """Declared names that occur, in declared order, then undeclared ones as they occur."""
    present = list(dict.fromkeys(seen))
    declared = list(declared)
    return [n for n in declared if n in present] + [n for n in present if n not in declared]


def _find_setting(data: Any, key: str) -> Any:
    """The first value stored under `key` anywhere in nested mappings (trial configs vary)."""
    if isinstance(data, Mapping):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_setting(value, key)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------- the report


class _Context:
    """What every part of the analysis needs: spec, settings lookups, cell figures."""

    def __init__(
        self,
        spec: Experiment,
        trials: Sequence[TrialResult],
        cells: Sequence[CellConfig] | None,
    ) -> None:
        self.spec = spec
        self.trials = trials
        self.settings = StatisticsSettings(
            alpha=spec.statistics.alpha,
            noise_threshold_pct=spec.statistics.noise_threshold,
            cv_threshold_pct=spec.statistics.cv_threshold,
            trend_factor=TREND_FACTOR,
        )
        if cells is None:
            # The spec dumped as JSON validates again (units are written back as text).
            cells = resolve_cells(spec, spec.model_dump(mode="json", exclude_unset=True))
        self.configs = {(c.cell.broker, c.cell.variant, c.cell.scenario): c for c in cells}
        self.brokers = _ordered((t.broker for t in trials), spec.brokers)
        self.variants = _ordered((t.variant for t in trials), spec.variant_names)
        self.scenarios = _ordered((t.scenario for t in trials), spec.scenarios)
        self.samples = cell_samples(trials)
        self.by_cell: dict[CellTuple, list[TrialResult]] = defaultdict(list)
        for trial in trials:
            self.by_cell[trial.broker, trial.variant, trial.scenario].append(trial)
        self.summaries = {
            key: {name: st.summarize(values) for name, values in metrics.items()}
            for key, metrics in self.samples.items()
        }

    def cell_keys(self) -> list[CellTuple]:
        """Cells with at least one recorded trial, in spec order."""
        return [
            (b, v, s)
            for b in self.brokers
            for v in self.variants
            for s in self.scenarios
            if (b, v, s) in self.by_cell
        ]

    def median(self, key: CellTuple, metric: str) -> float | None:
        summary = self.summaries.get(key, {}).get(metric)
        return summary.median if summary else None

    def setting(self, key: CellTuple, name: str) -> Any:
        """An effective setting of the cell: from its trials' configs, else the resolved spec."""
        for trial in self.by_cell.get(key, ()):
            found = _find_setting(trial.config, name)
            if found is not None:
                return found
        config = self.configs.get(key)
        if config is None:
            return None
        dumped = {"broker": config.broker.model_dump(), "workload": config.workload.model_dump()}
        return _find_setting(dumped, name)

    def messages(self, scenario: str) -> int | None:
        known = self.spec.scenarios.get(scenario)
        return known.messages if known else None

    def compare(self, base: CellTuple, cand: CellTuple, metric: str) -> Comparison:
        result = st.compare(
            self.samples.get(base, {}).get(metric, []),
            self.samples.get(cand, {}).get(metric, []),
            better=metric_info(metric).better,
            alpha=self.settings.alpha,
            noise_pct=self.settings.noise_threshold_pct,
        )
        return Comparison(
            metric=metric, baseline=_key(base), candidate=_key(cand), **asdict(result)
        )

    def compared_metrics(self, base: CellTuple, cand: CellTuple) -> list[str]:
        """Metrics with a better direction that either cell measured."""
        names = set(self.samples.get(base, {})) | set(self.samples.get(cand, {}))
        return [n for n in _metric_order(names) if metric_info(n).better is not None]


def _key(cell: CellTuple) -> CellKey:
    return CellKey(broker=cell[0], variant=cell[1], scenario=cell[2])


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
    ctx = _Context(spec, trials, cells)
    run_data = run.model_dump(mode="json") if isinstance(run, BaseModel) else dict(run or {})
    run_summary = _run_summary(run_data, trials)
    expected = len(spec.brokers) * len(spec.variant_names) * len(spec.scenarios)
    expected *= spec.repetitions + spec.warmup
    partial = (
        run_summary.interrupted
        or not run_summary.complete
        or (not run_data and len(trials) < expected)
    )
    names = {n for metrics in ctx.samples.values() for n in metrics}
    variant_comparisons = _variant_comparisons(ctx)
    broker_comparisons = _broker_comparisons(ctx)
    return Report(
        exprun_version=exprun_version,
        partial=partial,
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
        scenarios=[ScenarioInfo(name=s, messages=ctx.messages(s) or 0) for s in ctx.scenarios],
        metrics=[metric_meta(n) for n in _metric_order(names)],
        cells=[_cell_stats(ctx, key) for key in ctx.cell_keys()],
        variant_comparisons=variant_comparisons,
        broker_comparisons=broker_comparisons,
        geomeans=_geomeans("variant", variant_comparisons)
        + _geomeans("broker", broker_comparisons),
        targets=_targets(ctx),
        anomalies=_anomalies(ctx),
        trials=list(trials),
    )


def _broker_type(ctx: _Context, broker: str) -> str:
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


def _cell_stats(ctx: _Context, key: CellTuple) -> CellStats:
    trials = ctx.by_cell[key]
    summaries = ctx.summaries.get(key, {})
    return CellStats(
        cell=_key(key),
        broker_type=trials[0].broker_type,
        measured=len(measured(trials)),
        warmup_excluded=sum(t.warmup for t in trials),
        failed_excluded=sum(not t.warmup and t.status == "failed" for t in trials),
        metrics={name: _stats(summaries[name]) for name in _metric_order(summaries)},
    )


def _variant_comparisons(ctx: _Context) -> list[Comparison]:
    """Every non-baseline variant vs the baseline, per broker and scenario."""
    base = ctx.spec.baseline
    if base is None or base not in ctx.variants:
        return []
    out: list[Comparison] = []
    for broker in ctx.brokers:
        for variant in ctx.variants:
            if variant == base:
                continue
            for scenario in ctx.scenarios:
                b, c = (broker, base, scenario), (broker, variant, scenario)
                if b in ctx.by_cell and c in ctx.by_cell:
                    out.extend(ctx.compare(b, c, m) for m in ctx.compared_metrics(b, c))
    return out


def _broker_comparisons(ctx: _Context) -> list[Comparison]:
    """Within each variant, every broker vs the first one of the spec."""
    if len(ctx.brokers) < 2:
        return []
    first, others = ctx.brokers[0], ctx.brokers[1:]
    out: list[Comparison] = []
    for variant in ctx.variants:
        for broker in others:
            for scenario in ctx.scenarios:
                b, c = (first, variant, scenario), (broker, variant, scenario)
                if b in ctx.by_cell and c in ctx.by_cell:
                    out.extend(ctx.compare(b, c, m) for m in ctx.compared_metrics(b, c))
    return out


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
        both = _positive_pairs((r.baseline_median, r.candidate_median) for r in group)
        base, cand, change = _geomean_change(both)
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


def _positive_pairs(
    pairs: Iterable[tuple[float | None, float | None]],
) -> list[tuple[float, float]]:
    """Pairs with both sides positive: the only ones a ratio, hence a geomean, can use."""
    return [(a, b) for a, b in pairs if a is not None and b is not None and a > 0 and b > 0]


def _geomean_change(
    pairs: Sequence[tuple[float, float]],
) -> tuple[float | None, float | None, float | None]:
    old = st.geometric_mean(a for a, _ in pairs)
    new = st.geometric_mean(b for _, b in pairs)
    change = (new / old - 1) * 100 if old and new else None
    return old, new, change


# --------------------------------------------------------------------------- targets


def _targets(ctx: _Context) -> TargetsSummary:
    scores: list[TargetScore] = []
    for index, target in enumerate(ctx.spec.targets):
        goal = parse_goal(target.change or target.value or "")
        brokers = [target.broker] if target.broker else ctx.brokers
        scenarios = [target.scenario] if target.scenario else ctx.scenarios
        if target.variant:
            variants = [target.variant]
        elif ctx.spec.baseline in ctx.variants and len(ctx.variants) > 1:
            variants = [v for v in ctx.variants if v != ctx.spec.baseline]
        else:
            variants = ctx.variants
        for broker in brokers:
            for variant in variants:
                for scenario in scenarios:
                    cell = (broker, variant, scenario)
                    if cell not in ctx.by_cell:
                        continue  # not run (filtered out): nothing to score
                    if target.change is not None:
                        scores.append(_change_score(ctx, index, goal, cell))
                    else:
                        scores.append(_value_score(ctx, index, goal, cell))
    passed = sum(s.passed for s in scores)
    return TargetsSummary(
        scores=scores,
        passed=passed,
        total=len(scores),
        overall=st.overall_score([st.TargetScore("", None, None, s.passed, None) for s in scores]),
    )


def _change_score(ctx: _Context, index: int, goal: Goal, cell: CellTuple) -> TargetScore:
    target = ctx.spec.targets[index]
    base = (cell[0], ctx.spec.baseline or "", cell[2])
    comparison = ctx.compare(base, cell, target.metric)
    # Goals in % score the relative change of the medians; others the difference itself.
    scored = st.score_target(
        goal,
        actual_change_pct=comparison.change_pct,
        actual_value=comparison.delta,
    )
    notes = [n for n in (scored.note, _significance_note(comparison)) if n]
    return TargetScore(
        target=index,
        title=target.title,
        metric=target.metric,
        kind="change",
        goal=target.change or "",
        cell=_key(cell),
        baseline_variant=ctx.spec.baseline,
        actual=scored.actual,
        achievement_pct=scored.achievement_pct,
        passed=scored.passed,
        verdict=comparison.verdict,
        p_value=comparison.p_value,
        note="; ".join(notes) or None,
    )


def _significance_note(comparison: Comparison) -> str | None:
    if comparison.verdict == "insufficient data":
        return comparison.note
    if not comparison.significant and comparison.change_pct is not None:
        p = f"p={comparison.p_value:.3g}" if comparison.p_value is not None else "no p-value"
        return f"change not significant ({p}): it may be noise"
    return None


def _value_score(ctx: _Context, index: int, goal: Goal, cell: CellTuple) -> TargetScore:
    target = ctx.spec.targets[index]
    # A value goal is in the metric's own unit, even when that unit is %.
    absolute = replace(goal, is_relative=False)
    median = ctx.median(cell, target.metric)
    scored = st.score_target(absolute, actual_value=median)
    summary = ctx.summaries.get(cell, {}).get(target.metric)
    note = scored.note
    if summary is not None and summary.n and summary.min is not None and summary.max is not None:
        every = absolute.holds(summary.min) and absolute.holds(summary.max)
        if scored.passed and not every:
            note = f"median passes, but not every repetition (range {num(summary.min)}.."
            note += f"{num(summary.max)} over n={summary.n})"
    return TargetScore(
        target=index,
        title=target.title,
        metric=target.metric,
        kind="value",
        goal=target.value or "",
        cell=_key(cell),
        actual=scored.actual,
        achievement_pct=scored.achievement_pct,
        passed=scored.passed,
        note=note,
    )


# --------------------------------------------------------------------------- anomalies


def _anomalies(ctx: _Context) -> list[Anomaly]:
    found: list[Anomaly] = []
    found += _trend_anomalies(ctx)
    for key in ctx.cell_keys():
        found += _variance_anomalies(ctx, key)
        found += _delivery_anomalies(ctx, key)
        found += _limit_anomalies(ctx, key)
        found += _leak_anomalies(ctx, key)
        found += _failure_anomalies(ctx, key)
    return found


def _trend_anomalies(ctx: _Context) -> list[Anomaly]:
    out: list[Anomaly] = []
    for broker in ctx.brokers:
        for variant in ctx.variants:
            for metric in TREND_METRICS:
                points = [
                    (s, m)
                    for s in ctx.scenarios
                    if (m := ctx.median((broker, variant, s), metric)) is not None
                ]
                for brk in st.trend_breaks(points, factor=TREND_FACTOR):
                    out.append(_trend_anomaly(ctx, (broker, variant, brk.scenario), metric, brk))
    return out


def _trend_anomaly(ctx: _Context, key: CellTuple, metric: str, brk: st.TrendBreak) -> Anomaly:
    info = metric_info(metric)
    summary = ctx.summaries[key][metric]
    evidence = (
        f"median {num(brk.value)} at {brk.scenario} is {brk.ratio:.1f}x {brk.direction} the "
        f"range of its neighbours {brk.prev_scenario} {num(brk.prev_value)} and "
        f"{brk.next_scenario} {num(brk.next_value)} (threshold {brk.factor:g}x)"
    )
    if summary.n >= 2 and summary.min is not None and summary.max is not None:
        lo, hi = min(brk.prev_value, brk.next_value), max(brk.prev_value, brk.next_value)
        # Whether every repetition misses the neighbours' range tells a one-off from a pattern.
        consistent = summary.max < lo if brk.direction == "below" else summary.min > hi
        evidence += (
            f"; its {summary.n} repetitions range {num(summary.min)}..{num(summary.max)} "
            + ("- every one of them" if consistent else "- not all of them")
            + f" {brk.direction} the neighbours"
        )
    elif summary.n == 1:
        evidence += "; from a single repetition"
    return Anomaly(
        kind="trend_break",
        severity="warning",
        cell=_key(key),
        metric=metric,
        message=(
            f"{info.label} of {key[0]}/{key[1]} at {key[2]} breaks the trend of its "
            f"neighbouring scenarios ({brk.ratio:.1f}x {brk.direction})"
        ),
        evidence=evidence,
        advice=(
            "look at the same cell's latency, duration and publish errors for the cause, and "
            f"re-run it alone (--scenario {key[2]} --broker {key[0]}) to see whether it repeats"
        ),
    )


def _variance_anomalies(ctx: _Context, key: CellTuple) -> list[Anomaly]:
    out: list[Anomaly] = []
    threshold = ctx.settings.cv_threshold_pct
    for metric in VARIANCE_METRICS:
        summary = ctx.summaries.get(key, {}).get(metric)
        if summary is None or summary.n < MIN_SAMPLES_FOR_CV:
            continue
        if not st.high_variance(summary, threshold) or summary.cv_pct is None:
            continue
        out.append(
            Anomaly(
                kind="high_variance",
                severity="warning",
                cell=_key(key),
                metric=metric,
                message=(
                    f"{metric_info(metric).label} of {'/'.join(key)} varies "
                    f"{summary.cv_pct:.1f}% run to run"
                ),
                evidence=(
                    f"CV {summary.cv_pct:.1f}% over n={summary.n} (median {num(summary.median)}, "
                    f"range {num(summary.min)}..{num(summary.max)}), above the "
                    f"{threshold:g}% threshold"
                ),
                advice=(
                    f"add repetitions (now {summary.n}; try {max(2 * summary.n, 10)}) so "
                    "that noise cannot hide or fake a change, and look for other load on "
                    "the machine"
                ),
            )
        )
    return out


def _ok_trials(ctx: _Context, key: CellTuple) -> list[TrialResult]:
    return measured(ctx.by_cell.get(key, ()))


def _delivery_anomalies(ctx: _Context, key: CellTuple) -> list[Anomaly]:
    trials = _ok_trials(ctx, key)
    out: list[Anomaly] = []
    where = "/".join(key)
    lossy = [t for t in trials if t.metrics.lost > 0]
    short = [
        t
        for t in trials
        if t.metrics.lost == 0
        and t.metrics.sent > 0
        and t.metrics.received < t.metrics.sent
        and not t.metrics.publish_errors
    ]
    if lossy or short:
        worst = max(lossy or short, key=lambda t: t.metrics.sent - t.metrics.received)
        m = worst.metrics
        lost = sum(t.metrics.lost for t in lossy)
        evidence = (
            f"{lost:,} acked messages never received in {len(lossy)} of {len(trials)} trials"
            if lossy
            else f"received fewer than sent without publish errors in {len(short)} of "
            f"{len(trials)} trials"
        )
        evidence += (
            f"; worst: repetition {worst.repetition}, sent {m.sent:,}, acked {m.acked:,}, "
            f"received {m.received:,} (success {m.success_rate:.2f}%)"
        )
        out.append(
            Anomaly(
                kind="loss",
                severity="warning",
                cell=_key(key),
                metric="lost",
                message=f"messages lost in {where}",
                evidence=evidence,
                advice="check the drain timeout and the stream/topic limits of this cell",
            )
        )
    duplicated = [t for t in trials if t.metrics.duplicated > 0]
    if duplicated:
        total = sum(t.metrics.duplicated for t in duplicated)
        out.append(
            Anomaly(
                kind="duplicates",
                severity="warning",
                cell=_key(key),
                metric="duplicated",
                message=f"duplicate deliveries in {where}",
                evidence=(
                    f"{total:,} deliveries beyond the first in {len(duplicated)} of "
                    f"{len(trials)} trials (max {max(t.metrics.duplicated for t in duplicated):,})"
                ),
                advice="redeliveries point at ack timeouts or consumer restarts",
            )
        )
    reasons: dict[str, int] = defaultdict(int)
    erring = 0
    for trial in trials:
        if trial.metrics.publish_errors:
            erring += 1
        for reason, count in trial.metrics.publish_errors.items():
            reasons[reason] += count
    if reasons:
        by_reason = ", ".join(f"{r}: {c:,}" for r, c in sorted(reasons.items()))
        out.append(
            Anomaly(
                kind="publish_errors",
                severity="warning",
                cell=_key(key),
                metric="publish_errors_total",
                message=f"publish errors in {where}",
                evidence=f"{by_reason} (in {erring} of {len(trials)} trials)",
            )
        )
    return out


def _limit_anomalies(ctx: _Context, key: CellTuple) -> list[Anomaly]:
    """JetStream stream limits reached: refused publishes, or old messages discarded."""
    trials = _ok_trials(ctx, key)
    if not trials or trials[0].broker_type != "nats":
        return []
    max_msgs, max_bytes = ctx.setting(key, "max_msgs"), ctx.setting(key, "max_bytes")
    discard, size = ctx.setting(key, "discard"), ctx.setting(key, "message_size")
    limits = f"stream max_msgs {_limit(max_msgs)}, max_bytes {_limit(max_bytes)}, discard {discard}"
    refused: dict[str, int] = defaultdict(int)
    for trial in trials:
        for reason, count in trial.metrics.publish_errors.items():
            if LIMIT_REASON.search(reason):
                refused[reason] += count

    def binds(sent: int) -> bool:
        # With discard old a full stream drops its oldest messages silently: suspect it only
        # when the trial's volume exceeds a declared limit.
        by_msgs = isinstance(max_msgs, int) and max_msgs < sent
        by_bytes = isinstance(max_bytes, int) and isinstance(size, int) and max_bytes < sent * size
        return by_msgs or by_bytes

    dropped = [
        t
        for t in trials
        if discard == "old" and 0 < t.metrics.received < t.metrics.sent and binds(t.metrics.sent)
    ]
    if not refused and not dropped:
        return []
    if refused:
        what = ", ".join(f"{r}: {c:,}" for r, c in sorted(refused.items()))
        evidence = f"publishes refused at a limit ({what}); {limits}"
    else:
        worst = min(dropped, key=lambda t: t.metrics.received)
        evidence = (
            f"received {worst.metrics.received:,} of {worst.metrics.sent:,} sent "
            f"(repetition {worst.repetition}; {len(dropped)} of {len(trials)} trials short) "
            f"- more than the stream holds, so its oldest messages were discarded; {limits}"
        )
    return [
        Anomaly(
            kind="limit_reached",
            severity="warning",
            cell=_key(key),
            message=f"JetStream stream limit reached in {'/'.join(key)}",
            evidence=evidence,
            advice="raise max_msgs/max_bytes above the scenario's volume if the limit is not "
            "what the experiment is about",
        )
    ]


def _limit(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _leak_anomalies(ctx: _Context, key: CellTuple) -> list[Anomaly]:
    trials = _ok_trials(ctx, key)
    if not trials:
        return []
    settle = ctx.setting(key, "settle_time")
    after = f"after the {_seconds(settle)} settle time" if settle is not None else "after settle"
    out: list[Anomaly] = []
    for metric, what in (("leaked_threads", "threads"), ("leaked_tasks", "tasks")):
        values = [v for t in trials if (v := getattr(t.metrics, metric)) is not None]
        leaking = [v for v in values if v > 0]
        if not leaking:
            continue
        summary = st.summarize(values)
        evidence = (
            f"{metric} median {num(summary.median)} (max {num(summary.max)}) {after}, "
            f"in {len(leaking)} of {len(values)} trials"
        )
        if metric == "leaked_threads":
            before = ctx.median(key, "threads_before")
            left = ctx.median(key, "threads_after")
            evidence += f"; threads before {num(before)}, after settle {num(left)} (medians)"
            lingered = ctx.median(key, "lingering_threads")
            if lingered:
                # The source report's case: 134 "leaks" at 100 ms, of which 133 just lingered.
                evidence += f"; another {num(lingered)} lingered but exited within the settle time"
        out.append(
            Anomaly(
                kind="leak",
                severity="warning",
                cell=_key(key),
                metric=metric,
                message=f"{what} leaked in {'/'.join(key)}: they survive the settle time",
                evidence=evidence,
                advice="a real leak: these outlive the declared settle time",
            )
        )
    lingering = [v for t in trials if (v := t.metrics.lingering_threads) is not None and v > 0]
    leaked = [v for t in trials if (v := t.metrics.leaked_threads) is not None and v > 0]
    if lingering and not leaked:
        out.append(
            Anomaly(
                kind="lingering",
                severity="info",
                cell=_key(key),
                metric="lingering_threads",
                message=f"threads lingered in {'/'.join(key)} but exited within the settle time",
                evidence=(
                    f"up to {max(lingering):,} threads were alive right after the measured phase "
                    f"in {len(lingering)} of {len(trials)} trials; none was left {after}"
                ),
                advice="not a leak; a shorter settle time would have counted them as leaked",
            )
        )
    return out


def _seconds(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"
    return str(value)


def _failure_anomalies(ctx: _Context, key: CellTuple) -> list[Anomaly]:
    trials = ctx.by_cell.get(key, [])
    failed = [t for t in trials if t.status == "failed"]
    if not failed:
        return []
    errors = list(dict.fromkeys((t.error or "no reason recorded").splitlines()[0] for t in failed))
    shown = "; ".join(e[:160] for e in errors[:3]) + ("; ..." if len(errors) > 3 else "")
    warmups = sum(t.warmup for t in failed)
    counted = f"{len(failed)} of {len(trials)} trials failed"
    if warmups:
        counted += f" ({warmups} of them warm-up)"
    return [
        Anomaly(
            kind="failed_trials",
            severity="warning",
            cell=_key(key),
            message=f"failed trials in {'/'.join(key)} (excluded from the figures)",
            evidence=f"{counted}: {shown}",
        )
    ]


# --------------------------------------------------------------------------- diff

# What can make two runs' figures differ besides the spec (keys of environment.json).
_RELEVANT_ENVIRONMENT = re.compile(
    r"^(exprun(_version)?|python|clients\..+|brokers\.[^.]+\.(version|type)"
    r"|(machine\.)?(cpu\w*|memory\w*))$"
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def environment_differences(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[EnvironmentDifference]:
    """Differences in what matters: CPU, memory, broker/client/Python/exprun versions."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if not _RELEVANT_ENVIRONMENT.match(key) or a.get(key) == b.get(key):
            continue
        if key not in a or key not in b:
            continue  # a field one side did not record is not evidence of a difference
        out.append(
            EnvironmentDifference(
                key=key,
                old=None if a[key] is None else str(a[key]),
                new=None if b[key] is None else str(b[key]),
            )
        )
    return out


def diff(
    old: Report,
    new: Report,
    *,
    old_label: str,
    new_label: str,
    variants: tuple[str, str] | None = None,
    metrics: Sequence[str] = (),
    fail_on_regression_pct: float | None = None,
) -> Diff:
    """Compare two runs cell by cell (or, with `variants`, two variants of `old` == `new`).

    Raises BadInputError when nothing can be matched, or a chosen metric/variant is unknown.
    """
    old_samples, new_samples = cell_samples(old.trials), cell_samples(new.trials)
    warnings: list[str] = []
    pairs = _match_cells(old, new, old_samples, new_samples, variants, warnings)
    available = {n for o, w in pairs for n in (*old_samples[o], *new_samples[w])}
    if metrics:
        unknown = [m for m in metrics if m not in available]
        if unknown:
            close = difflib.get_close_matches(unknown[0], available, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see results.json for the names"
            raise BadInputError(
                f"--metric {', '.join(unknown)}: not measured in these runs; {hint}"
            )
        chosen = list(dict.fromkeys(metrics))
    else:
        chosen = [n for n in _metric_order(available) if metric_info(n).better is not None]
    settings = new.statistics
    rows: list[DiffRow] = []
    for metric in chosen:
        for o, w in pairs:
            a, b = old_samples[o].get(metric, []), new_samples[w].get(metric, [])
            if not a and not b:
                continue
            result = st.compare(
                a,
                b,
                better=metric_info(metric).better,
                alpha=settings.alpha,
                noise_pct=settings.noise_threshold_pct,
            )
            rows.append(
                DiffRow(
                    metric=metric,
                    old=_key(o),
                    new=_key(w),
                    n_old=result.n_baseline,
                    n_new=result.n_candidate,
                    old_median=result.baseline_median,
                    new_median=result.candidate_median,
                    change_pct=result.change_pct,
                    delta=result.delta,
                    test=result.test,
                    p_value=result.p_value,
                    significant=result.significant,
                    verdict=result.verdict,
                    note=result.note,
                )
            )
    if old.spec.name != new.spec.name:
        warnings.append(f"different specs: {old.spec.name!r} vs {new.spec.name!r}")
    for label, report in ((old_label, old), (new_label, new)):
        if report.partial and (variants is None or report is old):
            warnings.append(f"{label} is a partial run (interrupted or incomplete)")
    regressions = []
    if fail_on_regression_pct is not None:
        regressions = [r for r in rows if _regression(r, fail_on_regression_pct)]
    return Diff(
        old=old_label,
        new=new_label,
        metrics=[metric_meta(m) for m in chosen],
        rows=rows,
        geomeans=[_geomean(metric, rows) for metric in chosen],
        environment_differences=(
            [] if variants else environment_differences(old.environment, new.environment)
        ),
        warnings=warnings,
        statistics=settings,
        fail_on_regression_pct=fail_on_regression_pct,
        regressions=regressions,
    )


def _regression(row: DiffRow, pct: float) -> bool:
    if not row.significant or row.verdict != "worse":
        return False
    # From a zero baseline (e.g. 0 -> 2 leaked threads) any significant rise is beyond PCT.
    return row.change_pct is None or abs(row.change_pct) > pct


def _geomean(metric: str, rows: Sequence[DiffRow]) -> DiffGeomean:
    both = _positive_pairs((r.old_median, r.new_median) for r in rows if r.metric == metric)
    old, new, change = _geomean_change(both)
    return DiffGeomean(metric=metric, cells=len(both), old=old, new=new, change_pct=change)


def _match_cells(
    old: Report,
    new: Report,
    old_samples: Samples,
    new_samples: Samples,
    variants: tuple[str, str] | None,
    warnings: list[str],
) -> list[tuple[CellTuple, CellTuple]]:
    old_cells = [c for c in _cells(old) if c in old_samples]
    new_cells = [c for c in _cells(new) if c in new_samples]
    if variants is not None:
        a, b = variants
        for name in (a, b):
            if name not in new.variants:
                raise BadInputError(
                    f"--variants: no variant {name!r} in the run "
                    f"(it has: {', '.join(new.variants)})"
                )
        pairs = [
            (o, (o[0], b, o[2])) for o in old_cells if o[1] == a and (o[0], b, o[2]) in new_cells
        ]
        if not pairs:
            raise BadInputError(f"variants {a!r} and {b!r} share no measured broker/scenario cell")
        return pairs
    pairs = [(c, c) for c in old_cells if c in new_cells]
    if not pairs and len(old.variants) == 1 and len(new.variants) == 1:
        # One variant each under different names (e.g. renamed): match broker and scenario.
        pairs = [(o, w) for o in old_cells for w in new_cells if (o[0], o[2]) == (w[0], w[2])]
        if pairs:
            warnings.append(
                f"variants matched by position: {old.variants[0]!r} (old) vs "
                f"{new.variants[0]!r} (new)"
            )
    if not pairs:
        raise BadInputError(
            "incompatible runs: no measured (broker, variant, scenario) cell in common; old has "
            f"{_describe(old_cells)}, new has {_describe(new_cells)}"
        )
    only_old = [c for c in old_cells if c not in {o for o, _ in pairs}]
    only_new = [c for c in new_cells if c not in {w for _, w in pairs}]
    for label, cells in (("old", only_old), ("new", only_new)):
        if cells:
            warnings.append(
                f"{len(cells)} cell(s) only in the {label} run, not compared: "
                + ", ".join("/".join(c) for c in cells[:6])
                + (", ..." if len(cells) > 6 else "")
            )
    return pairs


def _cells(report: Report) -> list[CellTuple]:
    return [(c.cell.broker, c.cell.variant, c.cell.scenario) for c in report.cells]


def _describe(cells: Sequence[CellTuple]) -> str:
    if not cells:
        return "no measured cells"
    brokers = ", ".join(dict.fromkeys(c[0] for c in cells))
    variants = ", ".join(dict.fromkeys(c[1] for c in cells))
    scenarios = ", ".join(dict.fromkeys(c[2] for c in cells))
    return f"brokers {brokers}; variants {variants}; scenarios {scenarios}"
