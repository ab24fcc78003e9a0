"""Anomalies grouped into findings, each with its evidence and advice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reporters.document.blocks import (
    Finding,
    Findings,
    Section,
    Text,
)
from reporters.document.formatting import (
    fmt,
)
from schemas.report import (
    Anomaly,
    Report,
    Stats,
)

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
    "rate_shortfall": "Declared rate not offered",
    "throughput_sag": "Throughput sags within a trial",
    "latency_climb": "p99 latency climbs within a trial",
    "rebalance": "Consumer group rebalances while measuring",
    "redelivered": "Redeliveries (acks too late)",
    "ack_pending_limit": "max_ack_pending reached",
    "broker_in_fault": "What the broker did through the faults",
    "telemetry_missing": "Broker telemetry not read",
}


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
