"""Targets: each goal scored per cell, with its achievement and significance."""

from __future__ import annotations

from reporters.document.blocks import (
    Block,
    Facts,
    Section,
    Table,
    Text,
)
from reporters.document.formatting import (
    fmt,
    fmt_change,
    fmt_p,
)
from schemas.report import (
    Report,
    TargetScore,
)


def target_actual(report: Report, score: TargetScore) -> str:
    if score.actual is None:
        return "n/a"
    if score.kind == "change":
        return fmt_change(score.actual) if "%" in score.goal else f"{score.actual:+g}"
    # The goal is in the metric's own unit; only % is worth repeating next to the figure.
    return fmt(score.actual) + ("%" if report.metric(score.metric).unit == "%" else "")


def _significance(score: TargetScore) -> str:
    if score.kind != "change" or score.verdict is None:
        return ""
    if score.verdict == "insufficient data":
        return "insufficient data"
    return f"{score.verdict}, p={fmt_p(score.p_value)}"


def targets_section(report: Report) -> Section | None:
    targets = report.targets
    if not report.spec.document.get("targets"):
        return None
    headers = [
        "Target",
        "Broker",
        "Variant",
        "Scenario",
        "Goal",
        "Actual",
        "Achievement",
        "Significance",
        "Result",
    ]
    rows = []
    notes = []
    for score in targets.scores:
        goal = score.goal + (f" vs {score.baseline_variant}" if score.baseline_variant else "")
        rows.append(
            [
                score.title,
                score.cell.broker,
                score.cell.variant,
                score.cell.scenario,
                goal,
                target_actual(report, score),
                f"{score.achievement_pct:.1f}%" if score.achievement_pct is not None else "n/a",
                _significance(score),
                "pass" if score.passed else "FAIL",
            ]
        )
        if score.note:
            notes.append(f"{score.title}, {score.cell}: {score.note}")
    numeric = [False] * 5 + [True, True, False, False]
    blocks: list[Block] = [
        Text(
            "Change goals compare the variant's median with the baseline's (achievement = "
            "actual change / goal change); value goals check the cell's median.",
            "note",
        ),
        Table(headers, rows, numeric),
        Text(f"Overall score: {targets.overall}", "strong"),
    ]
    if notes:
        blocks.append(Facts([("Note", n) for n in notes]))
    return Section("targets", "Targets", blocks)
