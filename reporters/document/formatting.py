"""Numbers, changes, p-values, tests and metric names as a report prints them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from schemas.report import (
    CellStats,
    Comparison,
    DiffRow,
    MetricMeta,
    Report,
    StatisticsSettings,
    format_number,
)
from schemas.units import format_duration

# Steps within this fraction count as "level" when naming a trend rising or falling.
TREND_TOLERANCE = 0.05
SPARK = "▁▂▃▄▅▆▇█"

SHORT_TESTS = {
    "Mann-Whitney U (exact)": "U",
    "Mann-Whitney U (exact, with ties)": "U ties",
    "Mann-Whitney U (asymptotic, ties)": "U approx",
    "Mann-Whitney U (asymptotic)": "U approx",
    "Welch t-test on log values": "Welch log",
    "Welch t-test on raw values (non-positive data)": "Welch raw",
}


def fmt(value: float | None) -> str:
    return format_number(value)


def fmt_change(pct: float | None) -> str:
    if pct is None:
        return "n/a"
    return f"{pct:+.1f}%"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


CORRECTIONS = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def tests_in(rows: Iterable[Comparison | DiffRow]) -> int:
    """How many of the rows were tested: the size of the family p-values are adjusted for."""
    return sum(row.test is not None for row in rows)


def correction_note(settings: StatisticsSettings, family: Sequence[Comparison | DiffRow]) -> str:
    """What the p column holds, when p-values are adjusted for the family of comparisons."""
    if settings.correction == "none":
        return ""
    name = CORRECTIONS[settings.correction]
    return f"; p is {name}-adjusted over the {tests_in(family)} tests made"


def fmt_ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "-"
    return f"{fmt(low)}..{fmt(high)}"


def short_test(test: str | None) -> str:
    if test is None:
        return "-"
    return SHORT_TESTS.get(test, test)


def test_legend(tests: Iterable[str | None]) -> str | None:
    used = sorted({t for t in tests if t})
    if not used:
        return None
    return "Tests: " + "; ".join(f"{short_test(t)} = {t}" for t in used)


def metric_title(meta: MetricMeta) -> str:
    """ "Latency p99 (ms, lower is better)": label, unit and which direction is an improvement."""
    unit = f"{meta.unit}, " if meta.unit else ""
    better = f"{meta.better} is better" if meta.better else "no better direction"
    return f"{meta.label} ({unit}{better})"


def column(report: Report, metric: str) -> str:
    meta = report.metric(metric)
    return f"{meta.label} ({meta.unit})" if meta.unit else meta.label


def sparkline(values: Sequence[float | None]) -> str:
    """A one-line chart of the medians across scenarios (terminal friendly)."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    # From zero, not from the minimum: a flat line must look flat, not like noise blown up.
    lo, hi = min(0.0, *known), max(known)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif hi == lo:
            out.append(SPARK[len(SPARK) // 2])
        else:
            out.append(SPARK[round((v - lo) / (hi - lo) * (len(SPARK) - 1))])
    return "".join(out)


def trend_word(values: Sequence[float]) -> str:
    """rising, falling, flat or mixed: how a metric moves as scenarios grow."""
    if len(values) < 2:
        return "-"
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo <= 1 + 2 * TREND_TOLERANCE:
        return "flat"
    steps = [(b - a) / abs(a) if a else b - a for a, b in itertools.pairwise(values)]
    if all(s >= -TREND_TOLERANCE for s in steps):
        return "rising"
    if all(s <= TREND_TOLERANCE for s in steps):
        return "falling"
    return "mixed"


def spread(stats: CellStats | None, metric: str) -> str:
    """The cell's median of `metric`, with its range over the trials when they differ."""
    figures = stats.metrics.get(metric) if stats is not None else None
    if figures is None or figures.median is None:
        return "-"
    if figures.min is None or figures.max is None or figures.min == figures.max:
        return fmt(figures.median)
    return f"{fmt(figures.median)} ({fmt(figures.min)}-{fmt(figures.max)})"


def median_of(cell: CellStats | None, metric: str) -> float | None:
    if cell is None or metric not in cell.metrics:
        return None
    return cell.metrics[metric].median


def scenario_label(report: Report, name: str) -> str:
    info = next((s for s in report.scenarios if s.name == name), None)
    if info is not None and info.messages:
        return f"{name} ({info.messages:,})"
    if info is not None and info.duration_s:
        return f"{name} ({format_duration(info.duration_s)})"
    return name
