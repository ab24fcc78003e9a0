"""The report as a format-neutral document: sections of headings, facts, tables, findings.

Markdown and HTML render the same document, so both carry the same content. Everything
here is pure formatting of a computed Report; no statistics are computed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.report import (
    Anomaly,
    CellStats,
    Comparison,
    ComparisonGeomean,
    DiffRow,
    Report,
    StatisticsSettings,
    Stats,
    TargetScore,
    format_number,
    verdict_p,
)

# The source report's overview columns: what a reader looks at first.
OVERVIEW_METRICS = (
    "throughput",
    "latency_p50_ms",
    "latency_p99_ms",
    "success_rate",
    "memory_delta_mb",
    "leaked_threads",
)
# Metrics that get a table of their own in the comparisons; others appear when significant.
KEY_METRICS = (
    "throughput",
    "latency_p50_ms",
    "latency_p99_ms",
    "success_rate",
    "memory_delta_mb",
    "threads_peak",
    "leaked_threads",
)
BROKER_METRICS = (
    "throughput",
    "latency_p50_ms",
    "latency_p99_ms",
    "threads_peak",
    "memory_delta_mb",
)
TREND_TABLE_METRICS = ("throughput", "latency_p50_ms", "latency_p99_ms")
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
KIND_TITLES = {
    "trend_break": "Trend break",
    "high_variance": "High run-to-run variance",
    "loss": "Message loss",
    "duplicates": "Duplicate deliveries",
    "publish_errors": "Publish errors",
    "limit_reached": "JetStream limit reached",
    "leak": "Leak surviving the settle time",
    "lingering": "Lingering threads (exited within the settle time: not leaks)",
    "failed_trials": "Failed trials",
}


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Text:
    text: str
    style: Literal["plain", "strong", "note", "warning"] = "plain"


@dataclass(frozen=True)
class Facts:
    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    legend: str | None = None


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Finding:
    title: str
    severity: Literal["warning", "info"]
    lines: list[tuple[str, str]]


@dataclass(frozen=True)
class Findings:
    items: list[Finding]


Block = Heading | Text | Facts | Bullets | Table | Findings


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Document:
    title: str
    intro: list[Block]
    sections: list[Section]


# --------------------------------------------------------------------------- formatting


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


def metric_title(report: Report, metric: str) -> str:
    meta = report.metric(metric)
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


def _median(cell: CellStats | None, metric: str) -> float | None:
    if cell is None or metric not in cell.metrics:
        return None
    return cell.metrics[metric].median


def _scenario_label(report: Report, name: str) -> str:
    messages = next((s.messages for s in report.scenarios if s.name == name), 0)
    return f"{name} ({messages:,})" if messages else name


# --------------------------------------------------------------------------- document


def build(report: Report) -> Document:
    """The whole report, in the source report's order."""
    sections = [
        overview(report),
        variant_section(report),
        trend_section(report),
        broker_section(report),
        targets_section(report),
        anomalies_section(report),
        environment_section(report),
        method_section(report),
    ]
    return Document(
        title=f"{report.spec.name}: experiment report",
        intro=intro(report),
        sections=[s for s in sections if s is not None],
    )


def intro(report: Report) -> list[Block]:
    blocks: list[Block] = []
    if report.spec.description:
        blocks.append(Text(report.spec.description))
    if report.partial:
        run = report.run
        planned = f" of {run.planned_trials}" if run.planned_trials else ""
        blocks.append(
            Text(
                f"Partial run: {run.recorded_trials}{planned} trials recorded "
                f"({'interrupted' if run.interrupted else 'incomplete'}); the figures cover "
                "only what finished.",
                "warning",
            )
        )
    return blocks


def _anomaly_count(report: Report) -> str:
    warnings = sum(a.severity == "warning" for a in report.anomalies)
    infos = len(report.anomalies) - warnings
    return f"{warnings} warning(s), {infos} note(s)" if report.anomalies else "none"


def overview(report: Report) -> Section:
    run = report.run
    when = " to ".join(t for t in (run.started_at, run.finished_at) if t) or "unknown"
    variants = ", ".join(f"{v} (baseline)" if v == report.baseline else v for v in report.variants)
    reps = sorted({c.measured for c in report.cells})
    per_cell = "/".join(map(str, reps)) if reps else "0"
    facts = [
        (
            "Spec",
            report.spec.name
            + (f" (sha256 {report.spec.sha256[:12]})" if report.spec.sha256 else ""),
        ),
        ("Run", when),
        (
            "Trials",
            f"{run.measured_trials} measured ({per_cell} per cell), {run.warmup_trials} warm-up, "
            f"{run.failed_trials} failed",
        ),
        ("Brokers", ", ".join(f"{b.name} ({b.type})" for b in report.brokers)),
        ("Variants", variants),
        (
            "Scenarios",
            ", ".join(f"{s.name} {s.messages:,} msgs" for s in report.scenarios),
        ),
        ("Targets", report.targets.overall if report.targets.total else "none declared"),
        ("Anomalies", _anomaly_count(report)),
    ]
    return Section(
        "overview",
        "Overview",
        [Facts(facts), Heading(3, "Results by scenario"), overview_table(report)],
    )


def overview_table(report: Report) -> Table:
    """Scenario x broker x variant: medians of the headline metrics, throughput's CI."""
    headers = ["Scenario", "Broker", "Variant", "n", column(report, "throughput"), "CI (median)"]
    headers += [column(report, m) for m in OVERVIEW_METRICS[1:]]
    rows = []
    levels = set()
    for scenario in report.scenarios:
        for broker in report.brokers:
            for variant in report.variants:
                cell = report.cell(broker.name, variant, scenario.name)
                if cell is None:
                    continue
                tp = cell.metrics.get("throughput")
                if tp is not None and tp.ci_level is not None:
                    levels.add((tp.n, tp.ci_level))
                rows.append(
                    [
                        scenario.name,
                        broker.name,
                        variant,
                        str(cell.measured),
                        fmt(_median(cell, "throughput")),
                        fmt_ci(tp.ci_low, tp.ci_high) if tp else "-",
                        *(fmt(_median(cell, m)) for m in OVERVIEW_METRICS[1:]),
                    ]
                )
    legend = "Medians over the measured repetitions (warm-up and failed trials excluded)."
    if levels:
        shown = ", ".join(f"{level * 100:.1f}% at n={n}" for n, level in sorted(levels))
        legend += f" CI: distribution-free interval of the median ({shown})."
    return Table(headers, rows, [False] * 3 + [True] * (len(headers) - 3), legend)


def _comparison_row(c: Comparison, *lead: str) -> list[str]:
    return [
        *lead,
        fmt(c.baseline_median),
        fmt(c.candidate_median),
        fmt_change(c.change_pct),
        fmt_p(verdict_p(c)),
        c.verdict,
        short_test(c.test),
    ]


def _verdict_legend(report: Report, family: Sequence[Comparison]) -> str:
    s = report.statistics
    return (
        f"better/worse: p < {s.alpha:g} and a change of at least {s.noise_threshold_pct:g}%; "
        "~: no significant change (or one below that noise threshold)" + correction_note(s, family)
    )


def variant_section(report: Report) -> Section | None:
    if not report.variant_comparisons or report.baseline is None:
        return None
    base = report.baseline
    blocks: list[Block] = []
    candidates = list(dict.fromkeys(c.candidate.variant for c in report.variant_comparisons))
    level = 4 if len(candidates) > 1 else 3
    for variant in candidates:
        rows = [c for c in report.variant_comparisons if c.candidate.variant == variant]
        if len(candidates) > 1:
            blocks.append(Heading(3, f"{variant} vs {base}"))
        blocks.append(
            Text(
                f"Median of each cell, {variant} against the baseline {base}, same broker and "
                f"scenario. {_verdict_legend(report, report.variant_comparisons)}.",
                "note",
            )
        )
        for metric in KEY_METRICS:
            chosen = [c for c in rows if c.metric == metric]
            if chosen:
                blocks += _metric_comparison(report, chosen, level, base, variant)
        other = [c for c in rows if c.metric not in KEY_METRICS and c.significant]
        if other:
            blocks.append(Heading(level, "Other metrics with a significant change"))
            headers = ["Metric", "Broker", "Scenario", base, variant, "Change", "p", "Verdict"]
            headers.append("Test")
            body = [
                _comparison_row(
                    c, report.metric(c.metric).label, c.candidate.broker, c.candidate.scenario
                )
                for c in other
            ]
            blocks.append(
                Table(headers, body, _numeric(headers), test_legend(c.test for c in other))
            )
    return Section("variants", f"Variant comparison: against {base}", blocks)


def _numeric(headers: Sequence[str], text_columns: int = 3) -> list[bool]:
    flags = [i >= text_columns for i in range(len(headers))]
    for i, header in enumerate(headers):
        if header in ("Verdict", "Test", "Result", "Significance"):
            flags[i] = False
    return flags


def _metric_comparison(
    report: Report, rows: Sequence[Comparison], level: int, base: str, variant: str
) -> list[Block]:
    """A metric's table; a single line when no cell changed significantly."""
    metric = rows[0].metric
    title = metric_title(report, metric)
    if all(c.verdict == "~" for c in rows):
        changes = [c.change_pct for c in rows if c.change_pct is not None]
        spread = (
            f" (changes {fmt_change(min(changes))} to {fmt_change(max(changes))})"
            if changes
            else ""
        )
        text = f"{title}: ~ in all {len(rows)} cells, no significant change{spread}."
        return [Text(text)]
    headers = ["Broker", "Scenario", base, variant, "Change", "p", "Verdict", "Test"]
    body = []
    geomeans = {g.candidate_broker: g for g in _geomeans(report, "variant", metric, variant)}
    brokers = list(dict.fromkeys(c.candidate.broker for c in rows))
    for broker in brokers:
        body += [
            _comparison_row(c, broker, c.candidate.scenario)
            for c in rows
            if c.candidate.broker == broker
        ]
        if broker in geomeans:
            body.append(_geomean_row(geomeans[broker], broker, "geomean"))
    notes = [f"{c.candidate}: {c.note}" for c in rows if c.verdict == "insufficient data"]
    legend = "; ".join(filter(None, [test_legend(c.test for c in rows), *notes[:1]])) or None
    return [Heading(level, title), Table(headers, body, _numeric(headers, 2), legend)]


def _geomean_row(g: ComparisonGeomean, *lead: str) -> list[str]:
    cells = [fmt(g.baseline), fmt(g.candidate), fmt_change(g.change_pct), "", "", ""]
    return [*lead, *cells]


def _geomeans(
    report: Report, kind: str, metric: str, variant: str | None = None, broker: str | None = None
) -> list[ComparisonGeomean]:
    return [
        g
        for g in report.geomeans
        if g.kind == kind
        and g.metric == metric
        and g.scenarios > 1
        and (variant is None or g.candidate_variant == variant)
        and (broker is None or g.candidate_broker == broker)
    ]


def trend_section(report: Report) -> Section | None:
    if len(report.scenarios) < 2:
        return None
    breaks = {
        (a.cell.broker, a.cell.variant, a.metric): a
        for a in report.anomalies
        if a.kind == "trend_break" and a.cell is not None
    }
    blocks: list[Block] = [
        Text(
            "Medians as the message count grows. A scenario more than "
            f"{report.statistics.trend_factor:g}x outside the range of its two neighbours "
            "breaks the trend (see Anomalies).",
            "note",
        )
    ]
    for metric in TREND_TABLE_METRICS:
        if not any(metric in c.metrics for c in report.cells):
            continue
        headers = [
            "Broker",
            "Variant",
            *(_scenario_label(report, s.name) for s in report.scenarios),
        ]
        headers += ["Shape", "Trend"]
        rows = []
        for broker in report.brokers:
            for variant in report.variants:
                values = [
                    _median(report.cell(broker.name, variant, s.name), metric)
                    for s in report.scenarios
                ]
                if all(v is None for v in values):
                    continue
                found = [
                    a
                    for (b, v, m), a in breaks.items()
                    if (b, v, m) == (broker.name, variant, metric)
                ]
                trend = trend_word([v for v in values if v is not None])
                for anomaly in found:
                    assert anomaly.cell is not None
                    trend = f"break at {anomaly.cell.scenario}"
                rows.append([broker.name, variant, *map(fmt, values), sparkline(values), trend])
        blocks += [
            Heading(3, metric_title(report, metric)),
            Table(headers, rows, [*_numeric(headers, 2)[:-2], False, False]),
        ]
    return Section("trends", "Trends across scenarios", blocks)


def broker_section(report: Report) -> Section | None:
    if not report.broker_comparisons:
        return None
    first = report.brokers[0].name
    blocks: list[Block] = []
    others = list(dict.fromkeys(c.candidate.broker for c in report.broker_comparisons))
    for other in others:
        rows = [c for c in report.broker_comparisons if c.candidate.broker == other]
        blocks.append(
            Text(
                f"{other} against {first} within each variant; verdicts are for {other}. "
                f"{_verdict_legend(report, report.broker_comparisons)}.",
                "note",
            )
        )
        for metric in BROKER_METRICS:
            chosen = [c for c in rows if c.metric == metric]
            if not chosen:
                continue
            headers = ["Variant", "Scenario", first, other, f"{other} vs {first}", "p"]
            headers += ["Verdict", "Test"]
            geomeans = {
                g.candidate_variant: g for g in _geomeans(report, "broker", metric, None, other)
            }
            body = []
            for variant in dict.fromkeys(c.candidate.variant for c in chosen):
                body += [
                    _comparison_row(c, variant, c.candidate.scenario)
                    for c in chosen
                    if c.candidate.variant == variant
                ]
                if variant in geomeans:
                    body.append(_geomean_row(geomeans[variant], variant, "geomean"))
            blocks += [
                Heading(3, metric_title(report, metric)),
                Table(headers, body, _numeric(headers, 2), test_legend(c.test for c in chosen)),
            ]
    title = f"Broker comparison: {', '.join(others)} vs {first}"
    return Section("brokers", title, blocks)


def target_actual(report: Report, score: TargetScore) -> str:
    if score.actual is None:
        return "n/a"
    if score.kind == "change":
        return fmt_change(score.actual) if "%" in score.goal else f"{score.actual:+g}"
    # The goal is in the metric's own unit; only % is worth repeating next to the figure.
    return fmt(score.actual) + ("%" if report.metric(score.metric).unit == "%" else "")


def _significance(score: TargetScore) -> str:
    if score.kind != "change" or score.verdict is None:
        return ""
    if score.verdict == "insufficient data":
        return "insufficient data"
    return f"{score.verdict}, p={fmt_p(score.p_value)}"


def targets_section(report: Report) -> Section | None:
    targets = report.targets
    if not report.spec.document.get("targets"):
        return None
    headers = [
        "Target",
        "Broker",
        "Variant",
        "Scenario",
        "Goal",
        "Actual",
        "Achievement",
        "Significance",
        "Result",
    ]
    rows = []
    notes = []
    for score in targets.scores:
        goal = score.goal + (f" vs {score.baseline_variant}" if score.baseline_variant else "")
        rows.append(
            [
                score.title,
                score.cell.broker,
                score.cell.variant,
                score.cell.scenario,
                goal,
                target_actual(report, score),
                f"{score.achievement_pct:.1f}%" if score.achievement_pct is not None else "n/a",
                _significance(score),
                "pass" if score.passed else "FAIL",
            ]
        )
        if score.note:
            notes.append(f"{score.title}, {score.cell}: {score.note}")
    numeric = [False] * 5 + [True, True, False, False]
    blocks: list[Block] = [
        Text(
            "Change goals compare the variant's median with the baseline's (achievement = "
            "actual change / goal change); value goals check the cell's median.",
            "note",
        ),
        Table(headers, rows, numeric),
        Text(f"Overall score: {targets.overall}", "strong"),
    ]
    if notes:
        blocks.append(Facts([("Note", n) for n in notes]))
    return Section("targets", "Targets", blocks)


def group_anomalies(anomalies: Sequence[Anomaly]) -> list[list[Anomaly]]:
    """Trend breaks per cell, variance in one group, the rest per broker, variant and metric."""
    groups: dict[tuple[Any, ...], list[Anomaly]] = {}
    for a in anomalies:
        cell = a.cell
        broker, variant = (cell.broker, cell.variant) if cell else (None, None)
        if a.kind == "trend_break" and cell is not None:
            key: tuple[Any, ...] = (a.kind, broker, variant, cell.scenario)
        elif a.kind == "high_variance":
            # Noise is a property of the machine and the metric more than of one cell.
            key = (a.kind,)
        else:
            key = (a.kind, broker, variant, a.metric)
        groups.setdefault(key, []).append(a)
    order = {kind: i for i, kind in enumerate(KIND_TITLES)}
    return sorted(
        groups.values(), key=lambda g: (g[0].severity != "warning", order.get(g[0].kind, 99))
    )


def finding(report: Report, group: Sequence[Anomaly]) -> Finding:
    first = group[0]
    cell = first.cell
    title = KIND_TITLES.get(first.kind, first.kind)
    if first.kind == "trend_break" and cell is not None:
        title += f": {cell.broker}/{cell.variant} at {cell.scenario}"
        lines = [(report.metric(a.metric or "").label, a.evidence) for a in group]
    elif first.kind == "high_variance":
        return _variance_finding(report, group)
    else:
        if cell is not None:
            title += f": {cell.broker}/{cell.variant}"
        if first.metric and first.kind == "leak":
            title += f", {report.metric(first.metric).label.lower()}"
        lines = [(a.cell.scenario if a.cell else "run", a.evidence) for a in group]
    if first.advice:
        lines.append(("Advice", first.advice))
    return Finding(title, first.severity, lines)


def _variance_finding(report: Report, group: Sequence[Anomaly]) -> Finding:
    """All noisy cells in one finding, a line per metric: how many cells, CV range, worst."""
    by_metric: dict[str, list[tuple[Stats, Anomaly]]] = {}
    for a in group:
        stats = report.cell(a.cell.broker, a.cell.variant, a.cell.scenario) if a.cell else None
        summary = stats.metrics.get(a.metric or "") if stats else None
        if summary is not None and summary.cv_pct is not None:
            by_metric.setdefault(a.metric or "", []).append((summary, a))
    lines = []
    for meta in report.metrics:
        found = by_metric.get(meta.name)
        if not found:
            continue
        measured = sum(meta.name in c.metrics for c in report.cells)
        cvs = sorted(summary.cv_pct or 0.0 for summary, _ in found)
        sizes = sorted({summary.n for summary, _ in found})
        n = f"n={sizes[0]}" if len(sizes) == 1 else f"n={sizes[0]}..{sizes[-1]}"
        worst, where = max(found, key=lambda f: f[0].cv_pct or 0.0)
        lines.append(
            (
                meta.label,
                f"{len(found)} of {measured} cells, CV "
                + (f"{cvs[0]:.1f}%" if len(cvs) == 1 else f"{cvs[0]:.1f}..{cvs[-1]:.1f}%")
                + f" ({n}); {'worst' if len(found) > 1 else 'in'} {where.cell}: median "
                f"{fmt(worst.median)}, range {fmt(worst.min)}..{fmt(worst.max)}",
            )
        )
    if group[0].advice:
        lines.append(("Advice", group[0].advice))
    threshold = report.statistics.cv_threshold_pct
    metrics = f"{len(by_metric)} metric" + ("s" if len(by_metric) > 1 else "")
    title = f"{KIND_TITLES['high_variance']}: {metrics} with a CV above {threshold:g}%"
    return Finding(title, group[0].severity, lines)


def anomalies_section(report: Report) -> Section:
    if not report.anomalies:
        s = report.statistics
        text = (
            "None: no scenario breaks its trend, run-to-run CV stays under "
            f"{s.cv_threshold_pct:g}%, and there was no loss, duplicate, publish error, "
            "stream limit, leak or failed trial."
        )
        return Section("anomalies", "Anomalies", [Text(text)])
    findings = [finding(report, g) for g in group_anomalies(report.anomalies)]
    return Section("anomalies", "Anomalies", [Findings(findings)])


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict):
        out: list[tuple[str, str]] = []
        for key, value in data.items():
            out += flatten(value, f"{prefix}{key}.")
        return out
    if data is None:
        return []
    if isinstance(data, list):
        data = ", ".join(map(str, data))
    return [(prefix.rstrip("."), str(data))]


def environment_section(report: Report) -> Section:
    items = flatten(report.environment)
    if not items:
        made_by = f" (this report: exprun {report.exprun_version})" if report.exprun_version else ""
        text = f"environment.json was not recorded{made_by}."
        return Section("environment", "Environment", [Text(text)])
    table = Table(["Key", "Value"], [list(i) for i in items], [False, False])
    return Section("environment", "Environment", [table])


def _multiplicity(report: Report) -> str:
    s = report.statistics
    if s.correction == "none":
        tests = tests_in((*report.variant_comparisons, *report.broker_comparisons))
        # Said plainly: with many tests at alpha, a few "significant" ones are chance.
        return (
            f"Each comparison is tested alone (statistics.correction: none): of {tests} tests, "
            f"about {tests * s.alpha:.0f} would be called significant by chance if none had a "
            "real change behind it; statistics.correction holm or bh adjusts for that."
        )
    text = (
        f"p-values are {CORRECTIONS[s.correction]}-adjusted (statistics.correction: "
        f"{s.correction}) within each family: the {tests_in(report.variant_comparisons)} tests "
        f"of variants, the {tests_in(report.broker_comparisons)} tests of brokers; targets use "
        "the variant comparisons' verdicts."
    )
    lost = [
        c
        for c in (*report.variant_comparisons, *report.broker_comparisons)
        if c.p_value is not None
        and c.p_value < s.alpha
        and (adjusted := verdict_p(c)) is not None
        and adjusted >= s.alpha
    ]
    if lost:
        # The exact U test cannot go below 2/C(2n, n): few repetitions and a large family
        # can make every adjusted p miss alpha, which is worth saying outright.
        text += (
            f" {len(lost)} comparisons with p < {s.alpha:g} on their own are not significant "
            "after the adjustment: more repetitions"
            + (" (or bh instead of holm)" if s.correction == "holm" else "")
            + " give the family a chance to decide."
        )
    return text


def method_section(report: Report) -> Section:
    s = report.statistics
    text = (
        "Each cell (broker, variant, scenario) is summarised over its measured repetitions: "
        "median, mean, stdev, min/max, coefficient of variation, and a distribution-free "
        "confidence interval of the median. Changes are changes of the medians. Significance: "
        "exact Mann-Whitney U with 5 or more repetitions per side, Welch's t-test on log values "
        "with 3-4, no verdict below 3. "
        f"Alpha {s.alpha:g}; changes under {s.noise_threshold_pct:g}% are reported as ~; "
        f"cells with a CV above {s.cv_threshold_pct:g}% are flagged. " + _multiplicity(report)
    )
    return Section("method", "Method", [Text(text)])
