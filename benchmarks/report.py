"""Comparisons, their medians and ratios, the printed table and the JSON document."""

from __future__ import annotations

import json
import operator
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

GOAL_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
}


@dataclass
class Comparison:
    """exprun's figure against a reference, both as the median of their samples.

    `ratio` is exprun / reference (for a budget: measured / budget); None with `unavailable`
    saying why when either side could not be measured.
    """

    key: str
    title: str
    unit: str
    reference_name: str
    goal: str | None = None  # on the ratio, e.g. ">= 0.8"
    note: str = ""
    exprun_samples: list[float] = field(default_factory=list)
    reference_samples: list[float] = field(default_factory=list)
    unavailable: str | None = None
    bottleneck: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def exprun(self) -> float | None:
        return _median(self.exprun_samples)

    @property
    def reference(self) -> float | None:
        return _median(self.reference_samples)

    @property
    def ratio(self) -> float | None:
        if self.unavailable is not None:
            return None
        exprun, reference = self.exprun, self.reference
        if exprun is None or not reference:
            return None
        return exprun / reference

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if self.goal is None or ratio is None:
            return None
        symbol, threshold = self.goal.split()
        return GOAL_OPERATORS[symbol](round(ratio, 3), float(threshold))

    def fail(self, reason: str) -> None:
        """Mark the comparison unmeasurable (the first reason wins)."""
        if self.unavailable is None:
            self.unavailable = reason

    def document(self) -> dict[str, Any]:
        data = asdict(self)
        if self.unavailable is None and self.ratio is None:
            data["unavailable"] = "no samples"
        data.update(
            exprun=_rounded(self.exprun),
            reference=_rounded(self.reference),
            ratio=_rounded(self.ratio, 3),
            met=self.met,
        )
        return data


def _median(samples: list[float]) -> float | None:
    return statistics.median(samples) if samples else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def table(comparisons: list[Comparison]) -> str:
    """The human summary: one row per comparison."""
    rows = []
    for c in comparisons:
        if c.unavailable is not None or c.ratio is None:
            ratio, verdict = "n/a", f"unavailable: {c.unavailable or 'no samples'}"[:70]
        else:
            ratio = f"{c.ratio:.2f}"
            verdict = "-" if c.met is None else ("met" if c.met else "MISSED")
        rows.append(
            [
                c.title,
                _figure(c.exprun, c.unit),
                f"{_figure(c.reference, c.unit)} {c.reference_name}",
                ratio,
                c.goal or "-",
                verdict,
            ]
        )
    headers = ["comparison", "exprun", "reference", "ratio", "goal", "verdict"]
    return tabulate(rows, headers=headers, disable_numparse=True)


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value:,.0f} msg/s"
    return f"{value:.3g} {unit}"


def write_document(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
