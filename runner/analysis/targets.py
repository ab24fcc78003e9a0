"""Targets of the spec scored per cell: actual, goal, achievement and pass/fail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from runner.analysis import statistics as st
from runner.analysis.cells import CellTuple, cell_key, cell_tuple
from runner.analysis.context import AnalysisContext
from schemas.goals import Goal, parse_goal
from schemas.report import Comparison, TargetScore, TargetsSummary, verdict_p
from schemas.report import format_number as num


def score_targets(ctx: AnalysisContext, comparisons: Sequence[Comparison]) -> TargetsSummary:
    """Each target in each cell it names; change goals reuse the variant `comparisons`."""
    # The verdict of a target is the one the comparison tables show, adjusted as they are.
    known = {(cell_tuple(c.baseline), cell_tuple(c.candidate), c.metric): c for c in comparisons}
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
                        scores.append(_change_score(ctx, index, goal, cell, known))
                    else:
                        scores.append(_value_score(ctx, index, goal, cell))
    passed = sum(s.passed for s in scores)
    return TargetsSummary(
        scores=scores,
        passed=passed,
        total=len(scores),
        overall=st.overall_score([s.passed for s in scores]),
    )


def _change_score(
    ctx: AnalysisContext,
    index: int,
    goal: Goal,
    cell: CellTuple,
    known: Mapping[tuple[CellTuple, CellTuple, str], Comparison],
) -> TargetScore:
    target = ctx.spec.targets[index]
    base = (cell[0], ctx.spec.baseline or "", cell[2])
    pair = (base, cell, target.metric)
    comparison = known.get(pair) or ctx.compare([pair])[0]
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
        cell=cell_key(cell),
        baseline_variant=ctx.spec.baseline,
        actual=scored.actual,
        achievement_pct=scored.achievement_pct,
        passed=scored.passed,
        verdict=comparison.verdict,
        p_value=verdict_p(comparison),
        note="; ".join(notes) or None,
    )


def _significance_note(comparison: Comparison) -> str | None:
    if comparison.verdict == "insufficient data":
        return comparison.note
    if not comparison.significant and comparison.change_pct is not None:
        decisive = verdict_p(comparison)
        p = f"p={decisive:.3g}" if decisive is not None else "no p-value"
        return f"change not significant ({p}): it may be noise"
    return None


def _value_score(ctx: AnalysisContext, index: int, goal: Goal, cell: CellTuple) -> TargetScore:
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
        cell=cell_key(cell),
        actual=scored.actual,
        achievement_pct=scored.achievement_pct,
        passed=scored.passed,
        note=note,
    )
