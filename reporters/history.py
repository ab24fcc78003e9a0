"""Rendering of `exprun history`: the series as tables (newest run last, change points marked),
the change points alone (newest first), as Markdown, tidy CSV or JSON."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from reporters import document as doc
from reporters.csv import to_csv
from reporters.document.blocks import numeric_columns
from reporters.markdown import render_blocks
from schemas.history import ChangePoint, History, Point, Series

FORMATS = ("markdown", "csv", "json")
SERIES_COLUMNS = (
    "spec",
    "testbed",
    "broker",
    "variant",
    "scenario",
    "metric",
    "unit",
    "run",
    "started_at",
    "spec_commit",
    "commit",
    "label",
    "median",
    "ci_low",
    "ci_high",
    "n",
    "settings_changed",
    "change_pct",
    "p_value",
    "regression",
)
CHANGE_COLUMNS = (
    "spec",
    "testbed",
    "scenario",
    "variant",
    "broker",
    "metric",
    "unit",
    "run_before",
    "run_after",
    "commit_before",
    "commit_after",
    "median_before",
    "median_after",
    "change_pct",
    "p_value",
    "p_adjusted",
    "regression",
    "settings_changed",
)


def cell_of(series: Series) -> str:
    return f"{series.broker}/{series.variant}/{series.scenario}"


def run_name(point: Point) -> str:
    """A run as a table shows it: its commit (the system's, else the spec's), or its start."""
    revision = point.commit or (point.spec_commit[:10] if point.spec_commit else None)
    started = (point.started_at or "?")[:16].replace("T", " ")
    return f"{revision} ({started})" if revision else started


def _marked(point: Point, change: ChangePoint | None) -> str:
    text = doc.fmt(point.median)
    if change is not None:
        arrow = "▼" if change.regression else "▲"
        text += f" {arrow} {doc.fmt_change(change.change_pct)}"
    if point.settings_changed:
        text += " (settings changed)"
    return text


def series_blocks(history: History) -> list[doc.Block]:
    """A table per spec, testbed and metric: a row per run, a column per cell."""
    groups: dict[tuple[str, str, str], list[Series]] = defaultdict(list)
    for series in history.series:
        groups[series.spec, series.testbed, series.metric].append(series)
    blocks: list[doc.Block] = []
    for (spec, testbed, _), members in groups.items():
        first = members[0]
        unit = f" ({first.unit})" if first.unit else ""
        blocks.append(doc.Heading(2, f"{spec}: {first.label}{unit}"))
        runs: dict[str, Point] = {}
        for series in members:
            for point in series.points:
                runs.setdefault(point.run_key, point)
        ordered = sorted(runs.values(), key=lambda p: (p.started_at or "", p.run_key))
        headers = ["Run", "Label", *(cell_of(s) for s in members)]
        rows = []
        for point in ordered:
            row = [run_name(point), point.label or ""]
            for series in members:
                mine = next((p for p in series.points if p.run_key == point.run_key), None)
                change = next((c for c in series.changes if c.run_after == point.run_key), None)
                row.append(_marked(mine, change) if mine is not None else "-")
            rows.append(row)
        legend = (
            f"testbed: {testbed}; medians per run, oldest first; ▼ a step for the worse, ▲ for "
            "the better, starting at that run (change of the medians on either side)"
        )
        blocks.append(doc.Table(headers, rows, numeric_columns(headers, 2), legend))
        steps = [(s, c) for s in members for c in s.changes]
        if steps:
            blocks.append(doc.Bullets([_step_line(s, c) for s, c in steps]))
    if not history.series:
        blocks.append(doc.Text("No series matches (the store has none of these runs)."))
    return blocks


def _step_line(series: Series, change: ChangePoint) -> str:
    kind = "regression" if change.regression else "improvement"
    edited = "; the cell's settings changed there (spec edited)" if change.settings_changed else ""
    return (
        f"{cell_of(series)} {series.metric}: {kind} {doc.fmt_change(change.change_pct)} "
        f"({doc.fmt(change.median_before)} -> {doc.fmt(change.median_after)}) between "
        f"{change.commit_before or change.run_before} and {change.commit_after or change.run_after}"
        f", p={doc.fmt_p(change.p_adjusted)}{edited}"
    )


def changes_blocks(history: History) -> list[doc.Block]:
    """Every change point, newest first, each naming its series."""
    found = newest_first(history)
    if not found:
        return [doc.Text(f"No change point in {len(history.series)} series.")]
    headers = ["Spec", "Scenario", "Variant", "Broker", "Metric", "Before", "After"]
    headers += ["Median before", "Median after", "Change", "p", "Kind"]
    rows = [
        [
            s.spec,
            s.scenario,
            s.variant,
            s.broker,
            s.metric,
            c.commit_before or c.run_before,
            c.commit_after or c.run_after,
            doc.fmt(c.median_before),
            doc.fmt(c.median_after),
            doc.fmt_change(c.change_pct),
            doc.fmt_p(c.p_adjusted),
            ("regression" if c.regression else "improvement")
            + (", settings changed" if c.settings_changed else ""),
        ]
        for s, c in found
    ]
    numeric = [False] * 7 + [True] * 4 + [False]
    return [doc.Table(headers, rows, numeric)]


def newest_first(history: History) -> list[tuple[Series, ChangePoint]]:
    found = [(s, c) for s in history.series for c in s.changes]
    return sorted(found, key=lambda sc: sc[1].run_after, reverse=True)


def render_history(history: History, fmt: str, *, changes_only: bool = False) -> str:
    if fmt == "json":
        return history.model_dump_json(indent=2) + "\n"
    if fmt == "csv":
        return _changes_csv(history) if changes_only else _series_csv(history)
    blocks = changes_blocks(history) if changes_only else series_blocks(history)
    title = "# exprun history: change points" if changes_only else "# exprun history"
    return f"{title}\n\n_store: {history.store}_\n\n{render_blocks(blocks)}\n"


def _series_csv(history: History) -> str:
    rows = []
    for s in history.series:
        starts = {c.run_after: c for c in s.changes}
        for p in s.points:
            c = starts.get(p.run_key)
            rows.append(
                (
                    s.spec,
                    s.testbed,
                    s.broker,
                    s.variant,
                    s.scenario,
                    s.metric,
                    s.unit,
                    p.run_key,
                    p.started_at,
                    p.spec_commit,
                    p.commit,
                    p.label,
                    p.median,
                    p.ci_low,
                    p.ci_high,
                    p.n,
                    p.settings_changed,
                    c.change_pct if c else None,
                    c.p_adjusted if c else None,
                    c.regression if c else None,
                )
            )
    return to_csv(SERIES_COLUMNS, rows)


def _changes_csv(history: History) -> str:
    rows: Sequence[Sequence[object]] = [
        (
            s.spec,
            s.testbed,
            s.scenario,
            s.variant,
            s.broker,
            s.metric,
            s.unit,
            c.run_before,
            c.run_after,
            c.commit_before,
            c.commit_after,
            c.median_before,
            c.median_after,
            c.change_pct,
            c.p_value,
            c.p_adjusted,
            c.regression,
            c.settings_changed,
        )
        for s, c in newest_first(history)
    ]
    return to_csv(CHANGE_COLUMNS, rows)
