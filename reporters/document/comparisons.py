"""Variant and broker comparisons: a table per key metric, geomeans, verdicts and tests."""

from __future__ import annotations

from collections.abc import Sequence

from reporters.document.blocks import (
    Block,
    Heading,
    Section,
    Table,
    Text,
    numeric_columns,
)
from reporters.document.formatting import (
    correction_note,
    fmt,
    fmt_change,
    fmt_p,
    metric_title,
    short_test,
    test_legend,
)
from schemas.report import (
    Comparison,
    ComparisonGeomean,
    Report,
    verdict_p,
)

# Metrics that get a table of their own in the comparisons; others appear when significant.
KEY_METRICS = (
    "throughput",
    "capacity",
    "latency_p50_ms",
    "latency_p99_ms",
    "success_rate",
    "drain_s",
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
                Table(headers, body, numeric_columns(headers), test_legend(c.test for c in other))
            )
    return Section("variants", f"Variant comparison: against {base}", blocks)


def _metric_comparison(
    report: Report, rows: Sequence[Comparison], level: int, base: str, variant: str
) -> list[Block]:
    """A metric's table; a single line when no cell changed significantly."""
    metric = rows[0].metric
    title = metric_title(report.metric(metric))
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
    return [Heading(level, title), Table(headers, body, numeric_columns(headers, 2), legend)]


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
            legend = test_legend(c.test for c in chosen)
            blocks += [
                Heading(3, metric_title(report.metric(metric))),
                Table(headers, body, numeric_columns(headers, 2), legend),
            ]
    title = f"Broker comparison: {', '.join(others)} vs {first}"
    return Section("brokers", title, blocks)
