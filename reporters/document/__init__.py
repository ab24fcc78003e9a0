"""The report as a format-neutral document: sections of headings, facts, tables, findings.

Markdown and HTML render the same document, so both carry the same content. Everything
here is pure formatting of a computed Report; no statistics are computed. One module per
part: blocks, formatting, and one per section (overview, comparisons, trends, faults,
the broker's view, targets, anomalies, method).
"""

from __future__ import annotations

from reporters.document.anomalies import KIND_TITLES, anomalies_section, finding, group_anomalies
from reporters.document.blocks import (
    Block,
    Bullets,
    Document,
    Facts,
    Finding,
    Findings,
    Heading,
    Section,
    Table,
    Text,
)
from reporters.document.comparisons import KEY_METRICS, broker_section, variant_section
from reporters.document.faults import faults_section
from reporters.document.formatting import (
    correction_note,
    fmt,
    fmt_change,
    fmt_p,
    metric_title,
    short_test,
    test_legend,
)
from reporters.document.method import environment_section, method_section
from reporters.document.overview import intro, overview
from reporters.document.targets import target_actual, targets_section
from reporters.document.telemetry import telemetry_section
from reporters.document.trends import trend_section
from schemas.report import Report


def build(report: Report) -> Document:
    """The whole report, in the source report's order."""
    sections = [
        overview(report),
        variant_section(report),
        trend_section(report),
        broker_section(report),
        faults_section(report),
        telemetry_section(report),
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


__all__ = [
    "KEY_METRICS",
    "KIND_TITLES",
    "Block",
    "Bullets",
    "Document",
    "Facts",
    "Finding",
    "Findings",
    "Heading",
    "Section",
    "Table",
    "Text",
    "build",
    "correction_note",
    "finding",
    "fmt",
    "fmt_change",
    "fmt_p",
    "group_anomalies",
    "metric_title",
    "overview",
    "short_test",
    "target_actual",
    "test_legend",
]
