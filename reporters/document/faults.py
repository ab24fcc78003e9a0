"""Faults: per cell, what killing or pausing broker nodes cost (availability, loss, latency)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from reporters.document.blocks import Block, Heading, Section, Table, Text, numeric_columns
from reporters.document.formatting import fmt
from schemas.report import CellStats, Report
from schemas.results import TrialResult

COST_METRICS = (
    ("unavailable_s", "Unavailable s"),
    ("recovery_s", "Recovery s"),
    ("lost", "Lost"),
    ("duplicated", "Duplicated"),
    ("publish_errors_total", "Publish errors"),
    ("fault_latency_p99_ms", "p99 after ms"),
    ("fault_latency_max_ms", "max after ms"),
)


def faults_section(report: Report) -> Section | None:
    """A row per cell with faults (medians, and the range over its trials), then each fault."""
    measured = [t for t in report.trials if t.faults and not t.warmup and not t.search_step]
    if not measured:
        return None
    cells = list(dict.fromkeys((t.broker, t.variant, t.scenario) for t in measured))
    headers = ["Broker", "Variant", "Scenario", *(title for _, title in COST_METRICS), "Trials"]
    rows = []
    for key in cells:
        stats = report.cell(*key)
        trials = [t for t in measured if (t.broker, t.variant, t.scenario) == key]
        ok = sum(t.status == "ok" for t in trials)
        rows.append([*key, *(_spread(stats, m) for m, _ in COST_METRICS), f"{ok}/{len(trials)}"])
    blocks: list[Block] = [
        Text(
            "Each measured trial had its faults done by the run at their points. Unavailable: "
            "the longest stretch with no publish acked. Recovery: from a fault until acked "
            "throughput was back to 90% of its median before it (the longest of the trial's "
            "faults). Lost and duplicated are counted by sequence number, as always. p99 / max "
            "after: end-to-end latency of the messages sent in the second after a fault. "
            "Medians over the cell's ok trials, with their range.",
            "note",
        ),
        Table(headers, rows, numeric_columns(headers, 3)),
        Heading(3, "Each fault"),
        _each_fault(cells, measured),
    ]
    return Section("faults", "Faults", blocks)


def _spread(stats: CellStats | None, metric: str) -> str:
    figures = stats.metrics.get(metric) if stats is not None else None
    if figures is None or figures.median is None:
        return "-"
    if figures.min is None or figures.max is None or figures.min == figures.max:
        return fmt(figures.median)
    return f"{fmt(figures.median)} ({fmt(figures.min)}-{fmt(figures.max)})"


def _each_fault(cells: Sequence[tuple[str, str, str]], trials: Sequence[TrialResult]) -> Table:
    """A row per fault of each cell: where it hit, when, and what it cost (medians)."""
    headers = ["Broker", "Variant", "Scenario", "Fault", "Nodes hit", "Done at s", "Recovery s"]
    headers += ["p99 after ms", "max after ms", "Not done"]
    rows = []
    for key in cells:
        of_cell = [t for t in trials if (t.broker, t.variant, t.scenario) == key]
        for index, first in enumerate(of_cell[0].faults):
            figures = [t.faults[index] for t in of_cell if len(t.faults) > index]
            nodes = sorted({f.node for f in figures if f.node is not None})
            errors = sorted({f.error for f in figures if f.error})
            rows.append(
                [
                    *key,
                    f"{first.action} at {first.at}",
                    ", ".join(map(str, nodes)) or "-",
                    fmt(_median(f.at_s for f in figures)),
                    fmt(_median(f.recovery_s for f in figures)),
                    fmt(_median(f.latency_p99_ms for f in figures)),
                    fmt(_median(f.latency_max_ms for f in figures)),
                    "; ".join(errors) or "-",
                ]
            )
    return Table(headers, rows, [*numeric_columns(headers, 5)[:-1], False])


def _median(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None
