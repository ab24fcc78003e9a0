"""Trends across scenarios: medians as the message count grows, with sparklines."""

from __future__ import annotations

from reporters.document.blocks import (
    Block,
    Heading,
    Section,
    Table,
    Text,
    numeric_columns,
)
from reporters.document.formatting import (
    fmt,
    median_of,
    metric_title,
    scenario_label,
    sparkline,
    trend_word,
)
from schemas.report import (
    Report,
)

TREND_TABLE_METRICS = ("throughput", "latency_p50_ms", "latency_p99_ms")


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
            *(scenario_label(report, s.name) for s in report.scenarios),
        ]
        headers += ["Shape", "Trend"]
        rows = []
        for broker in report.brokers:
            for variant in report.variants:
                values = [
                    median_of(report.cell(broker.name, variant, s.name), metric)
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
            Heading(3, metric_title(report.metric(metric))),
            Table(headers, rows, [*numeric_columns(headers, 2)[:-2], False, False]),
        ]
    return Section("trends", "Trends across scenarios", blocks)
