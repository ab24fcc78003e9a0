"""HTML (`report.html`): one self-contained file, the Markdown report's content plus charts.

Styles and SVG charts are inline; nothing is fetched when the file is opened, so it works
offline, as a CI artifact, or attached to a mail.
"""

from __future__ import annotations

from html import escape

from reporters import document as doc
from reporters.base import Files
from reporters.charts import Mark, Point, Series, XYSeries, line_chart, xy_chart
from reporters.timelines import broker_panels, cell_trials, timeline_charts
from schemas.goals import parse_condition
from schemas.report import Report, format_number

FILE_NAME = "report.html"
CHART_METRICS = ("throughput", "latency_p99_ms")
VERDICT_CLASSES = {"better": "better", "worse": "worse", "FAIL": "worse", "pass": "better"}

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;
margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:36px 0 8px;
border-bottom:2px solid #e3e6eb;padding-bottom:4px}h3{font-size:16px;margin:22px 0 6px}
h4{font-size:15px;margin:18px 0 6px}
nav{font-size:13px;margin:6px 0 18px}nav a{margin-right:12px;color:#0b5cad}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border:1px solid #dde1e7;padding:3px 8px;vertical-align:top}
th{background:#f0f2f5;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.better{color:#0a7a34;font-weight:600}td.worse{color:#b3261e;font-weight:600}
p.note,p.legend{color:#5b6675;font-size:13px}p.strong{font-weight:700;font-size:16px}
p.warning{background:#fff4e5;border-left:4px solid #e69f00;padding:8px 12px}
ul.facts{padding-left:18px}ul.findings{padding-left:0;list-style:none}
ul.findings>li{border-left:4px solid #d55e00;padding:4px 12px;margin:10px 0;background:#fcf6f2}
ul.findings>li.info{border-color:#56b4e9;background:#f2f8fc}
ul.findings ul{margin:4px 0;padding-left:18px;font-size:13px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{background:#fff;border:1px solid #e3e6eb}
svg .title{font-size:14px;font-weight:600;fill:#1d2430}
svg .tick,svg .legend,svg .axis{font-size:11px;fill:#3c4655}svg .note{font-size:10px;fill:#7a8492}
svg .grid{stroke:#e8ebef;stroke-width:1}
"""


def _table(block: doc.Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in block.headers)
    rows = []
    for row in block.rows:
        cells = []
        for text, numeric in zip(row, block.numeric, strict=False):
            classes = ["num"] if numeric else []
            verdict = VERDICT_CLASSES.get(text)
            if verdict:
                classes.append(verdict)
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    html = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    if block.legend:
        html += f'<p class="legend">{escape(block.legend)}</p>'
    return html


def _findings(block: doc.Findings) -> str:
    items = []
    for item in block.items:
        lines = "".join(
            f"<li><strong>{escape(label)}</strong>: {escape(text)}</li>"
            for label, text in item.lines
        )
        title = f"<strong>{escape(item.title)}</strong>"
        items.append(f'<li class="{item.severity}">{title}<ul>{lines}</ul></li>')
    return f'<ul class="findings">{"".join(items)}</ul>'


def render_block(block: doc.Block) -> str:
    if isinstance(block, doc.Heading):
        level = min(block.level, 6)
        return f"<h{level}>{escape(block.text)}</h{level}>"
    if isinstance(block, doc.Text):
        return f'<p class="{block.style}">{escape(block.text)}</p>'
    if isinstance(block, doc.Facts):
        items = "".join(
            f"<li><strong>{escape(k)}</strong>: {escape(v)}</li>" for k, v in block.items
        )
        return f'<ul class="facts">{items}</ul>'
    if isinstance(block, doc.Bullets):
        return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, doc.Table):
        return _table(block)
    return _findings(block)


def charts(report: Report) -> list[str]:
    """Per metric and broker: medians by scenario, one line per variant, CI whiskers."""
    svgs = []
    categories = [s.name for s in report.scenarios]
    for metric in CHART_METRICS:
        meta = report.metric(metric)
        for broker in report.brokers:
            series = []
            for variant in report.variants:
                points: list[Point | None] = []
                for scenario in categories:
                    cell = report.cell(broker.name, variant, scenario)
                    stats = cell.metrics.get(metric) if cell else None
                    if stats is None or stats.median is None:
                        points.append(None)
                    else:
                        points.append(Point(stats.median, stats.ci_low, stats.ci_high, stats.n))
                if any(p is not None for p in points):
                    series.append(Series(variant, points))
            if series:
                title = f"{meta.label}: {broker.name}"
                svgs.append(line_chart(title, meta.unit, categories, series))
    return svgs


def capacity_charts(report: Report) -> list[str]:
    """Per broker and capacity scenario: the searched metric against the offered rate, every
    step of every repetition, with each variant's median capacity marked."""
    svgs = []
    for scenario in report.scenarios:
        if scenario.search_until is None:
            continue
        condition = parse_condition(scenario.search_until)
        meta = report.metric(condition.metric)
        for broker in report.brokers:
            series: list[XYSeries] = []
            marks: list[Mark] = []
            for variant in report.variants:
                points = []
                for trial in cell_trials(report, broker.name, variant, scenario.name):
                    value = trial.metrics.flat().get(condition.metric)
                    rate = trial.search.rate if trial.search is not None else None
                    if trial.search_step and rate is not None and value is not None:
                        points.append((rate, value))
                if not points:
                    continue
                series.append(XYSeries(variant, sorted(points), lines=False))
                cell = report.cell(broker.name, variant, scenario.name)
                capacity = cell.metrics.get("capacity") if cell is not None else None
                if capacity is not None and capacity.median is not None:
                    label = f"{variant}: capacity {format_number(capacity.median)} msg/s"
                    marks.append(Mark(capacity.median, len(series) - 1, label))
            if series:
                title = f"{meta.label} vs offered rate: {broker.name}/{scenario.name}"
                svgs.append(
                    xy_chart(title, "msg/s offered", meta.unit, series, marks, condition.value)
                )
    return svgs


def _section(id_: str, title: str, content: list[str]) -> str:
    return f'<section id="{id_}"><h2>{escape(title)}</h2>\n' + "\n".join(content) + "</section>"


def render_html(report: Report) -> str:
    document = doc.build(report)
    rendered = [(s.id, s.title, [render_block(b) for b in s.blocks]) for s in document.sections]
    svgs = charts(report) + capacity_charts(report) + timeline_charts(report)
    if svgs:
        # Right after the overview: the pictures are what a reader looks at next.
        rendered.insert(1, ("charts", "Charts", [f'<div class="charts">{"".join(svgs)}</div>']))
    panels = broker_panels(report)
    if panels:
        title = "Clients and broker over time"
        rendered.insert(2 if svgs else 1, ("over-time", title, panels))
    nav = "".join(f'<a href="#{id_}">{escape(title)}</a>' for id_, title, _ in rendered)
    body = [f"<h1>{escape(document.title)}</h1>", f"<nav>{nav}</nav>"]
    body += [render_block(b) for b in document.intro]
    body += [_section(*parts) for parts in rendered]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(document.title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )


class HtmlReporter:
    name = "html"

    def render(self, report: Report) -> Files:
        return {FILE_NAME: render_html(report)}
