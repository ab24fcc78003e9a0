"""Where and how the figures were made: the environment, and the statistical method."""

from __future__ import annotations

from typing import Any

from reporters.document.blocks import (
    Block,
    Section,
    Table,
    Text,
)
from reporters.document.formatting import (
    CORRECTIONS,
    tests_in,
)
from schemas.report import (
    Report,
    verdict_p,
)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict):
        out: list[tuple[str, str]] = []
        for key, value in data.items():
            out += flatten(value, f"{prefix}{key}.")
        return out
    if data is None:
        return []
    if isinstance(data, list) and any(isinstance(item, dict) for item in data):
        # e.g. the load-generator hosts: one numbered group of rows each
        return [row for n, item in enumerate(data, 1) for row in flatten(item, f"{prefix}{n}.")]
    if isinstance(data, list):
        data = ", ".join(map(str, data))
    return [(prefix.rstrip("."), str(data))]


def environment_section(report: Report) -> Section:
    items = flatten(report.environment)
    if not items:
        made_by = f" (this report: exprun {report.exprun_version})" if report.exprun_version else ""
        text = f"environment.json was not recorded{made_by}."
        return Section("environment", "Environment", [Text(text)])
    table = Table(["Key", "Value"], [list(i) for i in items], [False, False])
    return Section("environment", "Environment", [table])


def _multiplicity(report: Report) -> str:
    s = report.statistics
    if s.correction == "none":
        tests = tests_in((*report.variant_comparisons, *report.broker_comparisons))
        # Said plainly: with many tests at alpha, a few "significant" ones are chance.
        return (
            f"Each comparison is tested alone (statistics.correction: none): of {tests} tests, "
            f"about {tests * s.alpha:.0f} would be called significant by chance if none had a "
            "real change behind it; statistics.correction holm or bh adjusts for that."
        )
    text = (
        f"p-values are {CORRECTIONS[s.correction]}-adjusted (statistics.correction: "
        f"{s.correction}) within each family: the {tests_in(report.variant_comparisons)} tests "
        f"of variants, the {tests_in(report.broker_comparisons)} tests of brokers; targets use "
        "the variant comparisons' verdicts."
    )
    lost = [
        c
        for c in (*report.variant_comparisons, *report.broker_comparisons)
        if c.p_value is not None
        and c.p_value < s.alpha
        and (adjusted := verdict_p(c)) is not None
        and adjusted >= s.alpha
    ]
    if lost:
        # The exact U test cannot go below 2/C(2n, n): few repetitions and a large family
        # can make every adjusted p miss alpha, which is worth saying outright.
        text += (
            f" {len(lost)} comparisons with p < {s.alpha:g} on their own are not significant "
            "after the adjustment: more repetitions"
            + (" (or bh instead of holm)" if s.correction == "holm" else "")
            + " give the family a chance to decide."
        )
    return text


def method_section(report: Report) -> Section:
    s = report.statistics
    text = (
        "Each cell (broker, variant, scenario) is summarised over its measured repetitions: "
        "median, mean, stdev, min/max, coefficient of variation, and a distribution-free "
        "confidence interval of the median. Changes are changes of the medians. Significance: "
        "exact Mann-Whitney U with 5 or more repetitions per side, Welch's t-test on log values "
        "with 3-4, no verdict below 3. "
        f"Alpha {s.alpha:g}; changes under {s.noise_threshold_pct:g}% are reported as ~; "
        f"cells with a CV above {s.cv_threshold_pct:g}% are flagged. " + _multiplicity(report)
    )
    blocks: list[Block] = [Text(text)]
    if report.publish_policies:
        rows = [[p.broker, p.variant, p.policy.describe()] for p in report.publish_policies]
        blocks.append(
            Table(
                ["Broker", "Variant", "On a failed publish"],
                rows,
                [False, False, False],
                legend="what each side's producers do when a publish fails: the client policy "
                "every fault meets (Faults says whether the sides compared share it)",
            )
        )
    return Section("method", "Method", blocks)
