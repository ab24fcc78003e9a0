"""Inline SVG line charts with confidence-interval whiskers (no JavaScript, no network).

Scenarios on the x axis (categorical, in spec order), one series per variant; each point is a
cell's median with a whisker over the CI of that median. Hovering a point shows its figures
through the SVG <title> element, which every browser supports natively.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from schemas.report import format_number

# Okabe-Ito: distinguishable with the common forms of colour blindness.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
WIDTH, HEIGHT = 560, 330
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 74
# Series are shifted apart horizontally so that overlapping whiskers stay readable.
DODGE = 8.0


@dataclass(frozen=True)
class Point:
    median: float
    low: float | None = None
    high: float | None = None
    n: int = 0


@dataclass(frozen=True)
class Series:
    name: str
    points: list[Point | None]


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5 or 5 x 10^k) up to at least `top`."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < top * (1 - 1e-9):
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _tick_label(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _frame(title: str, unit: str, ticks: Sequence[float], y: Callable[[float], float]) -> list[str]:
    """An SVG chart's opening, title, horizontal grid with its labels, and the y axis' unit."""
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text class="title" x="{LEFT}" y="22">{escape(title)}</text>',
    ]
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{_tick_label(tick)}</text>"
        )
    parts.append(
        f'<text class="axis" transform="translate(16 {TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(unit)}</text>'
    )
    return parts


def line_chart(title: str, unit: str, categories: Sequence[str], series: Sequence[Series]) -> str:
    """An SVG element (inline in HTML5, so no namespace attribute is needed)."""
    values = [
        v
        for s in series
        for p in s.points
        if p is not None
        for v in (p.median, p.high)
        if v is not None
    ]
    ticks = nice_ticks(max(values) if values else 1.0)
    top = ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int, s: int) -> float:
        slot = plot_w / max(len(categories), 1)
        offset = (s - (len(series) - 1) / 2) * DODGE
        return LEFT + slot * (i + 0.5) + offset

    def y(value: float) -> float:
        return TOP + plot_h - (value / top) * plot_h

    parts = _frame(title, unit, ticks, y)
    for i, name in enumerate(categories):
        parts.append(
            f'<text class="tick" x="{x(i, (len(series) - 1) // 2):.1f}" y="{TOP + plot_h + 18}" '
            f'text-anchor="middle">{escape(name)}</text>'
        )
    for s_index, s in enumerate(series):
        parts.append(_series(s, s_index, x, y, unit))
    parts.append(_legend(series, TOP + plot_h + 44))
    parts.append("</svg>")
    return "".join(parts)


def _series(
    s: Series,
    s_index: int,
    x: Callable[[int, int], float],
    y: Callable[[float], float],
    unit: str,
) -> str:
    color = PALETTE[s_index % len(PALETTE)]
    coords = [(i, p) for i, p in enumerate(s.points) if p is not None]
    out = [f'<g class="series" stroke="{color}" fill="{color}">']
    if len(coords) > 1:
        path = " ".join(f"{x(i, s_index):.1f},{y(p.median):.1f}" for i, p in coords)
        out.append(f'<polyline fill="none" stroke-width="2" points="{path}"/>')
    for i, p in coords:
        cx = x(i, s_index)
        if p.low is not None and p.high is not None:
            lo, hi = y(p.low), y(p.high)
            out.append(
                f'<path stroke-width="1.5" fill="none" d="M{cx:.1f},{lo:.1f}V{hi:.1f}'
                f'M{cx - 4:.1f},{lo:.1f}h8M{cx - 4:.1f},{hi:.1f}h8"/>'
            )
        ci = (
            f", CI {format_number(p.low)}..{format_number(p.high)}"
            if p.low is not None and p.high is not None
            else ""
        )
        tip = f"{s.name}: median {format_number(p.median)} {unit}{ci} (n={p.n})"
        out.append(
            f'<circle cx="{cx:.1f}" cy="{y(p.median):.1f}" r="4">'
            f"<title>{escape(tip)}</title></circle>"
        )
    out.append("</g>")
    return "".join(out)


def _legend(series: Sequence[Series], top: float) -> str:
    out = []
    left = float(LEFT)
    for s_index, s in enumerate(series):
        color = PALETTE[s_index % len(PALETTE)]
        out.append(
            f'<rect x="{left:.1f}" y="{top - 9:.1f}" width="12" height="12" fill="{color}"/>'
            f'<text class="legend" x="{left + 18:.1f}" y="{top + 1:.1f}">{escape(s.name)}</text>'
        )
        left += 30 + 8 * len(s.name)
    out.append(
        f'<text class="note" x="{WIDTH - RIGHT}" y="{top + 1:.1f}" text-anchor="end">'
        "points: median; whiskers: CI of the median</text>"
    )
    return "".join(out)


@dataclass(frozen=True)
class XYSeries:
    name: str
    points: list[tuple[float, float]]
    lines: bool = True  # join the points (a time series) or not (a scatter of steps)


@dataclass(frozen=True)
class Mark:
    """A vertical line at `x` in the colour of series `series` (e.g. a capacity found), or in
    a colour of its own (e.g. a fault)."""

    x: float
    series: int
    label: str
    color: str | None = None


def xy_chart(
    title: str,
    x_unit: str,
    y_unit: str,
    series: Sequence[XYSeries],
    marks: Sequence[Mark] = (),
    limit: float | None = None,
    x_max: float | None = None,
) -> str:
    """An SVG chart with numeric axes: lines per series, optional vertical marks, and an
    optional horizontal line at `limit` (e.g. a search's latency budget); charts given the same
    `x_max` share their x axis."""
    xs = [x for s in series for x, _ in s.points] + [m.x for m in marks]
    xs += [x_max] if x_max is not None else []
    ys = [y for s in series for _, y in s.points] + ([limit] if limit is not None else [])
    x_ticks = nice_ticks(max(xs) if xs else 1.0)
    y_ticks = nice_ticks(max(ys) if ys else 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(value: float) -> float:
        return LEFT + value / x_ticks[-1] * plot_w

    def y(value: float) -> float:
        return TOP + plot_h - value / y_ticks[-1] * plot_h

    parts = _frame(title, y_unit, y_ticks, y)
    for tick in x_ticks:
        parts.append(
            f'<text class="tick" x="{x(tick):.1f}" y="{TOP + plot_h + 18}" '
            f'text-anchor="middle">{_tick_label(tick)}</text>'
        )
    parts.append(
        f'<text class="axis" x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h + 34}" '
        f'text-anchor="middle">{escape(x_unit)}</text>'
    )
    if limit is not None:
        parts.append(
            f'<line stroke="#b3261e" stroke-dasharray="2 3" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
            f'y1="{y(limit):.1f}" y2="{y(limit):.1f}"><title>limit {format_number(limit)} '
            f"{escape(y_unit)}</title></line>"
        )
    for index, s in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        out = [f'<g class="series" stroke="{color}" fill="{color}">']
        if s.lines and len(s.points) > 1:
            path = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in s.points)
            out.append(f'<polyline fill="none" stroke-width="1.5" points="{path}"/>')
        for px, py in s.points:
            tip = f"{s.name}: {format_number(py)} {y_unit} at {format_number(px)} {x_unit}"
            radius = 2 if s.lines else 3.5
            out.append(
                f'<circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="{radius}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        out.append("</g>")
        parts.append("".join(out))
    for mark in marks:
        color = mark.color or PALETTE[mark.series % len(PALETTE)]
        parts.append(
            f'<line stroke="{color}" stroke-width="1.5" stroke-dasharray="5 3" '
            f'x1="{x(mark.x):.1f}" x2="{x(mark.x):.1f}" y1="{TOP}" y2="{TOP + plot_h}">'
            f"<title>{escape(mark.label)}</title></line>"
        )
    parts.append(_xy_legend(series, TOP + plot_h + 56))
    parts.append("</svg>")
    return "".join(parts)


def _xy_legend(series: Sequence[XYSeries], top: float) -> str:
    out = []
    left = float(LEFT)
    for index, s in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        out.append(
            f'<rect x="{left:.1f}" y="{top - 9:.1f}" width="12" height="12" fill="{color}"/>'
            f'<text class="legend" x="{left + 18:.1f}" y="{top + 1:.1f}">{escape(s.name)}</text>'
        )
        left += 30 + 8 * len(s.name)
    return "".join(out)


@dataclass(frozen=True)
class TrendPoint:
    """One run in a trend chart: its value, what hovering shows, and where a click goes."""

    value: float
    tip: str
    href: str | None = None
    edited: bool = False  # the cell's settings changed at this run: drawn hollow


def trend_chart(
    title: str, unit: str, points: Sequence[TrendPoint], changes: Sequence[tuple[int, str, bool]]
) -> str:
    """A series over runs (oldest left): a line through its medians, each point hoverable and
    linked to its run, each change point a vertical line (red: a regression) before its run."""
    ticks = nice_ticks(max((p.value for p in points), default=1.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(len(points), 1)

    def x(index: float) -> float:
        return LEFT + plot_w * (index + 0.5) / count

    def y(value: float) -> float:
        return TOP + plot_h - value / ticks[-1] * plot_h

    parts = _frame(title, unit, ticks, y)
    parts.append(
        f'<text class="axis" x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h + 22}" '
        f'text-anchor="middle">runs, oldest first ({len(points)})</text>'
    )
    for index, tip, regression in changes:
        color = "#b3261e" if regression else "#0a7a34"
        parts.append(
            f'<line class="change" stroke="{color}" stroke-width="2" stroke-dasharray="5 3" '
            f'x1="{x(index - 0.5):.1f}" x2="{x(index - 0.5):.1f}" y1="{TOP}" '
            f'y2="{TOP + plot_h}"><title>{escape(tip)}</title></line>'
        )
    color = PALETTE[0]
    if len(points) > 1:
        path = " ".join(f"{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
    for index, point in enumerate(points):
        fill = "#fff" if point.edited else color
        circle = (
            f'<circle class="point" cx="{x(index):.1f}" cy="{y(point.value):.1f}" r="3" '
            f'fill="{fill}" stroke="{color}"><title>{escape(point.tip)}</title></circle>'
        )
        if point.href is not None:
            circle = f'<a href="{escape(point.href)}">{circle}</a>'
        parts.append(circle)
    parts.append("</svg>")
    return "".join(parts)
