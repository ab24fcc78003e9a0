"""Markdown report (`report.md`): the source report's structure, computed.

Pipe tables padded to aligned columns read well in a terminal and render on code-hosting sites.
"""

from __future__ import annotations

from collections.abc import Sequence

from tabulate import tabulate

from reporters import document as doc
from reporters.base import Files
from schemas.report import Report, verdict_p

FILE_NAME = "report.md"
SEVERITY_MARK = {"warning": "⚠️", "info": "ℹ️"}  # noqa: RUF001 (the information sign is meant)


def _cell(text: str) -> str:
    # A pipe would end the table cell early; newlines would end the row.
    return text.replace("|", "\\|").replace("\n", " ")


def table(block: doc.Table) -> str:
    align = ["right" if numeric else "left" for numeric in block.numeric]
    body = tabulate(
        [[_cell(c) for c in row] for row in block.rows],
        headers=[_cell(h) for h in block.headers],
        tablefmt="pipe",
        disable_numparse=True,
        colalign=align,
    )
    if block.legend:
        body += f"\n\n_{block.legend}_"
    return body


def _text(block: doc.Text) -> str:
    if block.style == "strong":
        return f"**{block.text}**"
    if block.style == "warning":
        return f"> **Warning:** {block.text}"
    if block.style == "note":
        return f"_{block.text}_"
    return block.text


def _findings(block: doc.Findings) -> str:
    items = []
    for item in block.items:
        lines = [f"- {SEVERITY_MARK[item.severity]} **{item.title}**"]
        lines += [f"  - {label}: {text}" for label, text in item.lines]
        items.append("\n".join(lines))
    return "\n".join(items)


def render_block(block: doc.Block) -> str:
    if isinstance(block, doc.Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, doc.Text):
        return _text(block)
    if isinstance(block, doc.Facts):
        return "\n".join(f"- **{key}**: {value}" for key, value in block.items)
    if isinstance(block, doc.Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, doc.Table):
        return table(block)
    return _findings(block)


def render_blocks(blocks: Sequence[doc.Block]) -> str:
    return "\n\n".join(render_block(b) for b in blocks)


def render_markdown(report: Report) -> str:
    """The full report."""
    document = doc.build(report)
    parts = [f"# {document.title}"]
    if document.intro:
        parts.append(render_blocks(document.intro))
    for section in document.sections:
        parts.append(f"## {section.title}")
        parts.append(render_blocks(section.blocks))
    return "\n\n".join(parts) + "\n"


def render_summary(report: Report) -> str:
    """What `exprun run` prints at the end: overview, significant changes, targets, anomalies."""
    document = doc.build(report)
    overview = doc.overview(report)
    blocks: list[doc.Block] = [*document.intro, *overview.blocks]
    changes = [
        c for c in report.variant_comparisons if c.significant and c.metric in doc.KEY_METRICS
    ]
    if changes:
        headers = ["Metric", "Scenario", "Broker", "Variant", "Change", "p", "Verdict"]
        rows = [
            [
                report.metric(c.metric).label,
                c.candidate.scenario,
                c.candidate.broker,
                c.candidate.variant,
                doc.fmt_change(c.change_pct),
                doc.fmt_p(verdict_p(c)),
                c.verdict,
            ]
            for c in changes
        ]
        blocks += [
            doc.Heading(3, f"Significant changes against {report.baseline}"),
            doc.Table(headers, rows, [False] * 4 + [True, True, False]),
        ]
    if report.targets.total:
        blocks.append(doc.Text(f"Targets: {report.targets.overall}", "strong"))
        failed = [
            f"FAIL {s.title}, {s.cell}: {doc.target_actual(report, s)} against {s.goal}"
            for s in report.targets.scores
            if not s.passed
        ]
        if failed:
            blocks.append(doc.Bullets(failed))
    if report.anomalies:
        items = [doc.finding(report, g) for g in doc.group_anomalies(report.anomalies)]
        blocks.append(doc.Text("Anomalies (evidence in report.md):", "strong"))
        blocks.append(doc.Bullets([f"{SEVERITY_MARK[f.severity]} {f.title}" for f in items]))
    return f"# {document.title}\n\n" + render_blocks(blocks) + "\n"


class MarkdownReporter:
    name = "markdown"

    def render(self, report: Report) -> Files:
        return {FILE_NAME: render_markdown(report)}
