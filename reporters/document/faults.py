"""Faults: per cell, what killing or pausing broker nodes cost (availability, loss, latency),
and whether the sides compared met their faults with the same client policy."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from reporters.document.blocks import Block, Heading, Section, Table, Text, numeric_columns
from reporters.document.formatting import fmt, spread
from schemas.report import ClientPolicy, Report
from schemas.results import FaultFigures, TrialResult
from schemas.units import format_duration

COST_METRICS = (
    ("unavailable_s", "Unavailable s"),
    ("recovery_s", "Recovery s"),
    ("success_rate", "Success %"),
    ("lost", "Lost"),
    ("duplicated", "Duplicated"),
    ("publish_failed", "Failed"),
    ("publish_unknown", "Unknown"),
    ("publish_retries", "Retries"),
    ("duplicate_acks", "Dup acks"),
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
        figures = [spread(stats, m) for m, _ in COST_METRICS]
        if figures[1] == "-" and any(f.not_recovered for t in trials for f in t.faults):
            figures[1] = "not recovered"  # each fault's row below says why
        rows.append([*key, *figures, f"{ok}/{len(trials)}"])
    blocks: list[Block] = [
        Text(
            "Each measured trial had its faults done by the run at their points. Unavailable: "
            "the longest stretch with no publish acked. Recovery: from a fault until acked "
            "throughput was back to 90% of its median before it (the longest of the trial's "
            "faults). Lost and duplicated are counted by sequence number, as always. Failed: "
            "publishes given up that the broker refused every time (never stored); Unknown: "
            "given up with a try unanswered (maybe stored); Retries: tries beyond the first, "
            "and Dup acks: retries the broker knew as stored (where exprun retries). p99 / max "
            "after: end-to-end latency of the messages sent in the second after a fault. "
            "Medians over the cell's ok trials, with their range.",
            "note",
        ),
        *_policy_blocks(report, {(t.broker, t.variant) for t in measured}, measured),
        Table(headers, rows, numeric_columns(headers, 3)),
        Heading(3, "Each fault"),
        _each_fault(cells, measured),
    ]
    return Section("faults", "Faults", blocks)


def _policy_blocks(
    report: Report, sides: set[tuple[str, str]], trials: Sequence[TrialResult]
) -> list[Block]:
    """What each side's producers did on a failed publish, and whether that is alike."""
    policies = [p for p in report.publish_policies if (p.broker, p.variant) in sides]
    if not policies:
        return []
    lines = [f"{p.broker}/{p.variant}: {p.policy.describe()}." for p in policies]
    blocks: list[Block] = [Text("Client policy on a failed publish: " + " ".join(lines))]
    if len(policies) > 1:
        verdict, unlike_brokers = _likeness(policies, trials)
        blocks.append(Text(verdict, "warning" if unlike_brokers else "plain"))
    return blocks


def _likeness(policies: Sequence[ClientPolicy], trials: Sequence[TrialResult]) -> tuple[str, bool]:
    """Like with like, or what makes the comparison one of client policies too; and whether
    sides of different brokers differ (what a reader would misread as the brokers')."""
    first = policies[0]
    unlike = [(p, first.policy.unlike(p.policy)) for p in policies[1:]]
    differences = [
        f"{first.broker}/{first.variant} and {p.broker}/{p.variant}: {difference}"
        for p, found in unlike
        for difference in found
    ]
    if differences:
        text = (
            "Not like with like: "
            + "; ".join(differences)
            + ". Differences in loss, failed publishes and success between these sides come "
            "from the client policy, not from the broker alone."
        )
        return text, any(found and p.broker != first.broker for p, found in unlike)
    return _alike(policies, trials), False


def _alike(policies: Sequence[ClientPolicy], trials: Sequence[TrialResult]) -> str:
    """Policies alike in kind: alike in effect too, unless an outage outlasted a timeout."""
    first = policies[0]
    if not first.policy.retrying:
        return "Like with like: every side gives a failed publish one try."
    limits = [p.policy.delivery_timeout_s for p in policies if p.policy.delivery_timeout_s]
    outage = max((u for t in trials if (u := t.metrics.unavailable_s) is not None), default=0.0)
    if limits and outage >= min(limits):
        return (
            f"Not like with like: every side retries, but the longest outage measured "
            f"({outage:g} s) outlasted the shortest delivery timeout "
            f"({format_duration(min(limits))}): one side gave up where another kept trying."
        )
    return (
        "Like with like: every side retries"
        + (" idempotently" if first.policy.idempotent else "")
        + (
            f", and the longest outage measured ({outage:g} s) ended within every side's "
            "delivery timeout."
            if limits
            else "."
        )
    )


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
                    _recovery(figures),
                    fmt(_median(f.latency_p99_ms for f in figures)),
                    fmt(_median(f.latency_max_ms for f in figures)),
                    "; ".join(errors) or "-",
                ]
            )
    numeric = numeric_columns(headers, 5)
    numeric[headers.index("Recovery s")] = numeric[-1] = False
    return Table(headers, rows, numeric)


def _recovery(figures: Sequence[FaultFigures]) -> str:
    """The median recovery, and why the others have none."""
    missing = [f for f in figures if f.recovery_s is None and f.error is None]
    if not missing:
        return fmt(_median(f.recovery_s for f in figures))
    reasons = "; ".join(sorted({f.not_recovered for f in missing if f.not_recovered}))
    recovered = [f for f in figures if f.recovery_s is not None]
    if not recovered:
        return reasons or "-"
    told = f": {reasons}" if reasons else ""
    median = fmt(_median(f.recovery_s for f in recovered))
    return f"{median} ({len(missing)}/{len(figures)} not{told})"


def _median(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None
