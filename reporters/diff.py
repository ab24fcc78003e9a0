"""Rendering of `exprun diff` (benchstat-style): Markdown tables, tidy CSV, or JSON."""

from __future__ import annotations

from collections.abc import Sequence

from reporters import document as doc
from reporters.csv import to_csv
from reporters.markdown import render_blocks
from schemas.report import Diff, DiffRow, MetricMeta, verdict_p

FORMATS = ("markdown", "csv", "json")
DIFF_COLUMNS = (
    "metric",
    "unit",
    "broker",
    "old_variant",
    "new_variant",
    "scenario",
    "n_old",
    "n_new",
    "old_median",
    "new_median",
    "change_pct",
    "p_value",
    "p_adjusted",
    "test",
    "verdict",
    "regression",
)


def _meta(diff: Diff, metric: str) -> MetricMeta:
    return next(
        (m for m in diff.metrics if m.name == metric),
        MetricMeta(name=metric, label=metric, unit="", better=None),
    )


def _variant(row: DiffRow) -> str:
    if row.old.variant == row.new.variant:
        return row.new.variant
    return f"{row.old.variant} -> {row.new.variant}"


def _shown_metrics(diff: Diff, chosen: bool) -> list[str]:
    """Chosen metrics; by default the headline ones plus any that changed significantly."""
    names = [m.name for m in diff.metrics]
    if chosen:
        return names
    significant = {r.metric for r in diff.rows if r.significant}
    key = [n for n in doc.KEY_METRICS if n in names]
    return key + [n for n in names if n not in key and n in significant]


def _metric_blocks(
    diff: Diff, metric: str, rows: Sequence[DiffRow], *, collapse: bool
) -> list[doc.Block]:
    """The metric's table, or one line when nothing changed and it was not asked for."""
    meta = _meta(diff, metric)
    if collapse and all(r.verdict == "~" for r in rows):
        changes = [r.change_pct for r in rows if r.change_pct is not None]
        spread = (
            f" (changes {doc.fmt_change(min(changes))} to {doc.fmt_change(max(changes))})"
            if changes
            else ""
        )
        return [doc.Text(f"{doc.metric_title(meta)}: ~ in all {len(rows)} cells{spread}.")]
    headers = ["Broker", "Variant", "Scenario", "old", "new", "Change", "p", "Verdict", "Test"]
    body = [
        [
            r.new.broker,
            _variant(r),
            r.new.scenario,
            doc.fmt(r.old_median),
            doc.fmt(r.new_median),
            doc.fmt_change(r.change_pct),
            doc.fmt_p(verdict_p(r)),
            r.verdict + (" (regression)" if r in diff.regressions else ""),
            doc.short_test(r.test),
        ]
        for r in rows
    ]
    geomean = next((g for g in diff.geomeans if g.metric == metric), None)
    if geomean is not None and geomean.cells > 1:
        body.append(
            [
                "geomean",
                "",
                f"{geomean.cells} cells",
                doc.fmt(geomean.old),
                doc.fmt(geomean.new),
                doc.fmt_change(geomean.change_pct),
                "",
                "",
                "",
            ]
        )
    numeric = [False, False, False, True, True, True, True, False, False]
    table = doc.Table(headers, body, numeric, doc.test_legend(r.test for r in rows))
    return [doc.Heading(3, doc.metric_title(meta)), table]


def diff_blocks(diff: Diff, *, chosen_metrics: bool = False) -> list[doc.Block]:
    blocks: list[doc.Block] = []
    if diff.environment_differences:
        changes = "; ".join(f"{d.key}: {d.old} -> {d.new}" for d in diff.environment_differences)
        blocks.append(
            doc.Text(
                f"The environments differ, so part of any change may be theirs: {changes}",
                "warning",
            )
        )
    blocks += [doc.Text(w, "warning") for w in diff.warnings]
    s = diff.statistics
    blocks.append(
        doc.Text(
            f"Medians per cell, old vs new. better/worse: p < {s.alpha:g} and a change of at "
            f"least {s.noise_threshold_pct:g}%; ~: no significant change"
            f"{doc.correction_note(s, diff.rows)}.",
            "note",
        )
    )
    for metric in _shown_metrics(diff, chosen_metrics):
        rows = [r for r in diff.rows if r.metric == metric]
        if rows:
            blocks += _metric_blocks(diff, metric, rows, collapse=not chosen_metrics)
    if diff.fail_on_regression_pct is not None:
        pct = diff.fail_on_regression_pct
        if diff.regressions:
            items = [
                f"{_meta(diff, r.metric).label} {r.new.broker}/{_variant(r)}/{r.new.scenario}: "
                f"{doc.fmt_change(r.change_pct)} (p={doc.fmt_p(verdict_p(r))})"
                for r in diff.regressions
            ]
            blocks += [
                doc.Text(f"{len(items)} significant regression(s) beyond {pct:g}%:", "strong"),
                doc.Bullets(items),
            ]
        else:
            blocks.append(doc.Text(f"No significant regression beyond {pct:g}%.", "strong"))
    return blocks


def render_diff_markdown(diff: Diff, *, chosen_metrics: bool = False) -> str:
    title = f"# exprun diff: {diff.old} -> {diff.new}"
    return title + "\n\n" + render_blocks(diff_blocks(diff, chosen_metrics=chosen_metrics)) + "\n"


def render_diff_csv(diff: Diff) -> str:
    rows = [
        (
            r.metric,
            _meta(diff, r.metric).unit,
            r.new.broker,
            r.old.variant,
            r.new.variant,
            r.new.scenario,
            r.n_old,
            r.n_new,
            r.old_median,
            r.new_median,
            r.change_pct,
            r.p_value,
            r.p_adjusted,
            r.test,
            r.verdict,
            r in diff.regressions,
        )
        for r in diff.rows
    ]
    return to_csv(DIFF_COLUMNS, rows)


def render_diff_json(diff: Diff) -> str:
    return diff.model_dump_json(indent=2) + "\n"


def render_diff(diff: Diff, fmt: str, *, chosen_metrics: bool = False) -> str:
    if fmt == "csv":
        return render_diff_csv(diff)
    if fmt == "json":
        return render_diff_json(diff)
    return render_diff_markdown(diff, chosen_metrics=chosen_metrics)
