"""The trend page (`exprun history --html`): one self-contained HTML file, a chart per metric x
cell over the recorded runs, change points marked; hovering a point shows its commit, label,
time and value, and a click opens its run's report when its folder is known."""

from __future__ import annotations

from collections import defaultdict
from html import escape

from reporters.charts import TrendPoint, trend_chart
from reporters.history import cell_of, changes_blocks
from reporters.html import STYLE, render_block
from schemas.history import ChangePoint, History, Point, Series
from schemas.report import format_number


def _tip(series: Series, point: Point) -> str:
    lines = [
        f"{cell_of(series)}: {format_number(point.median)} {series.unit}".rstrip(),
        f"run {point.started_at or point.run_key}",
    ]
    if point.commit:
        lines.append(f"commit {point.commit}")
    if point.spec_commit:
        lines.append(f"spec at {point.spec_commit[:12]}")
    if point.label:
        lines.append(f"label {point.label}")
    if point.settings_changed:
        lines.append("the cell's settings changed at this run")
    return "\n".join(lines)


def _change_tip(change: ChangePoint) -> str:
    kind = "regression" if change.regression else "improvement"
    return (
        f"{kind} {change.change_pct:+.1f}%: {format_number(change.median_before)} -> "
        f"{format_number(change.median_after)}, p={change.p_adjusted:.2g}"
        if change.change_pct is not None
        else kind
    )


def series_chart(series: Series) -> str:
    points = [
        TrendPoint(
            value=point.median,
            tip=_tip(series, point),
            href=f"file://{point.report}" if point.report else None,
            edited=point.settings_changed,
        )
        for point in series.points
        if point.median is not None
    ]
    changes = [(c.index, _change_tip(c), c.regression) for c in series.changes]
    title = f"{cell_of(series)} {series.label}"
    return trend_chart(title, series.unit, points, changes)


def render_trend_page(history: History) -> str:
    groups: dict[tuple[str, str, str], list[Series]] = defaultdict(list)
    for series in history.series:
        groups[series.spec, series.testbed, series.metric].append(series)
    body = [
        "<h1>exprun history</h1>",
        f'<p class="note">store: {escape(history.store)}; {len(history.series)} series. '
        "Each point is a run's median, oldest left; dashed lines mark change points (red: a "
        "regression); hollow points: the cell's settings changed (the spec was edited).</p>",
    ]
    for (spec, testbed, _), members in groups.items():
        first = members[0]
        body.append(f"<h2>{escape(spec)}: {escape(first.label)}</h2>")
        body.append(f'<p class="note">testbed: {escape(testbed)}</p>')
        body.append('<div class="charts">' + "".join(map(series_chart, members)) + "</div>")
    body.append("<h2>Change points</h2>")
    body += [render_block(block) for block in changes_blocks(history)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>exprun history</title>\n<style>{STYLE}</style>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )
