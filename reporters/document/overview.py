"""The report's opening: description, partial-run warning, overview facts and results table."""

from __future__ import annotations

from reporters.document.blocks import (
    Block,
    Facts,
    Heading,
    Section,
    Table,
    Text,
)
from reporters.document.formatting import (
    column,
    fmt,
    fmt_ci,
    median_of,
)
from schemas.report import (
    Report,
    ScenarioInfo,
)

# The source report's overview columns: what a reader looks at first.
OVERVIEW_METRICS = (
    "throughput",
    "latency_p50_ms",
    "latency_p99_ms",
    "success_rate",
    "memory_delta_mb",
    "leaked_threads",
)


def intro(report: Report) -> list[Block]:
    blocks: list[Block] = []
    if report.spec.description:
        blocks.append(Text(report.spec.description))
    if report.partial:
        run = report.run
        planned = f" of {run.planned_trials}" if run.planned_trials else ""
        blocks.append(
            Text(
                f"Partial run: {run.recorded_trials}{planned} trials recorded "
                f"({'interrupted' if run.interrupted else 'incomplete'}); the figures cover "
                "only what finished.",
                "warning",
            )
        )
    return blocks


def _anomaly_count(report: Report) -> str:
    warnings = sum(a.severity == "warning" for a in report.anomalies)
    infos = len(report.anomalies) - warnings
    return f"{warnings} warning(s), {infos} note(s)" if report.anomalies else "none"


def overview(report: Report) -> Section:
    run = report.run
    when = " to ".join(t for t in (run.started_at, run.finished_at) if t) or "unknown"
    variants = ", ".join(f"{v} (baseline)" if v == report.baseline else v for v in report.variants)
    reps = sorted({c.measured for c in report.cells})
    per_cell = "/".join(map(str, reps)) if reps else "0"
    facts = [
        (
            "Spec",
            report.spec.name
            + (f" (sha256 {report.spec.sha256[:12]})" if report.spec.sha256 else ""),
        ),
        ("Run", when),
        (
            "Trials",
            f"{run.measured_trials} measured ({per_cell} per cell), {run.warmup_trials} warm-up, "
            f"{run.failed_trials} failed",
        ),
        ("Brokers", ", ".join(f"{b.name} ({b.type})" for b in report.brokers)),
        ("Variants", variants),
        (
            "Scenarios",
            ", ".join(_load_shape(s) for s in report.scenarios),
        ),
        ("Targets", report.targets.overall if report.targets.total else "none declared"),
        ("Anomalies", _anomaly_count(report)),
    ]
    return Section(
        "overview",
        "Overview",
        [Facts(facts), Heading(3, "Results by scenario"), overview_table(report)],
    )


SHAPE_METRICS = (
    "capacity",
    "achieved_rate",
    "drain_s",
    "transaction_commit_p99_ms",
    "transactions_aborted",
    "timeouts",
    "duplicate_replies",
    "kv_put_latency_p99_ms",
    "kv_get_latency_p99_ms",
    "stale_reads",
    "lost_reads",
)


def overview_table(report: Report) -> Table:
    """Scenario x broker x variant: medians of the headline metrics, throughput's CI."""
    headers = ["Scenario", "Broker", "Variant", "n", column(report, "throughput"), "CI (median)"]
    # Capacity searches, backlogs, transactions, requests and key-value operations have
    # headline figures of their own.
    extra = [m for m in SHAPE_METRICS if any(m in c.metrics for c in report.cells)]
    shown = [*OVERVIEW_METRICS[1:], *extra]
    headers += [column(report, m) for m in shown]
    rows = []
    levels = set()
    for scenario in report.scenarios:
        for broker in report.brokers:
            for variant in report.variants:
                cell = report.cell(broker.name, variant, scenario.name)
                if cell is None:
                    continue
                tp = cell.metrics.get("throughput")
                if tp is not None and tp.ci_level is not None:
                    levels.add((tp.n, tp.ci_level))
                rows.append(
                    [
                        scenario.name,
                        broker.name,
                        variant,
                        str(cell.measured),
                        fmt(median_of(cell, "throughput")),
                        fmt_ci(tp.ci_low, tp.ci_high) if tp else "-",
                        *(fmt(median_of(cell, m)) for m in shown),
                    ]
                )
    legend = "Medians over the measured repetitions (warm-up and failed trials excluded)."
    if levels:
        at = ", ".join(f"{level * 100:.1f}% at n={n}" for n, level in sorted(levels))
        legend += f" CI: distribution-free interval of the median ({at})."
    return Table(headers, rows, [False] * 3 + [True] * (len(headers) - 3), legend)


def _load_shape(scenario: ScenarioInfo) -> str:
    """'Low 500 msgs', or 'Steady: 30s at 20000/s, ramp 5s' for other shapes."""
    plain = None if scenario.messages is None else f"{scenario.messages:,} msgs"
    if scenario.load_shape in (None, plain):
        return f"{scenario.name} {scenario.messages or 0:,} msgs"
    return f"{scenario.name}: {scenario.load_shape}"
