"""A capacity search: the highest offered rate at which a scenario's condition still holds.

Bisection on a log scale between the declared bounds: the lower bound first (if even it fails,
the capacity is below the range), then the upper (if it holds, the capacity is at least that),
then the geometric middle of the highest rate that held and the lowest that did not, until the
steps are used up. Each step is a whole trial; which rate comes next depends only on which
steps held, so the same broker gives the same answer again, within the steps' resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from schemas.goals import Condition
from schemas.report import format_number
from schemas.results import SearchRecord, SearchStep, TrialResult
from schemas.spec import SearchSettings

# A step whose producers fell this far short of the offered rate did not offer it: the rate is
# not shown to hold (the load generator, not the broker, may be the limit there).
RATE_TOLERANCE = 0.05


@dataclass
class Search:
    """The steps of one search so far, and what to try next."""

    low: float
    high: float
    steps: int
    condition: Condition
    done: list[SearchStep] = field(default_factory=list)

    @classmethod
    def of(cls, settings: SearchSettings) -> Search:
        low, high = settings.rate
        return cls(low, high, settings.steps, settings.condition)

    def next_rate(self) -> float | None:
        """The next rate to offer, or None when the search is over."""
        if len(self.done) >= self.steps:
            return None
        if not self.done:
            return self.low
        passed = [s.rate for s in self.done if s.passed]
        failed = [s.rate for s in self.done if not s.passed]
        if not passed:
            return None  # even the lower bound failed
        if len(self.done) == 1:
            return self.high
        if not failed:
            return None  # the upper bound held
        best = max(passed)
        above = min((rate for rate in failed if rate > best), default=None)
        if above is None:
            return None
        middle = float(round(math.sqrt(best * above)))
        return middle if best < middle < above else None

    def record(self, rate: float, result: TrialResult) -> SearchStep:
        passed, reason = judge(result, rate, self.condition)
        step = SearchStep(rate=rate, passed=passed, reason=reason)
        self.done.append(step)
        return step

    @property
    def capacity(self) -> float:
        """The highest rate that held; 0 when none did."""
        return max((s.rate for s in self.done if s.passed), default=0.0)

    def summary(self) -> SearchRecord:
        capacity = self.capacity
        reason = None if capacity else f"no offered rate held {self.condition}"
        return SearchRecord(
            step=None, rate=capacity, passed=bool(capacity), reason=reason, steps=list(self.done)
        )


def judge(result: TrialResult, rate: float, condition: Condition) -> tuple[bool, str | None]:
    """Whether the condition held at this rate (success 100% and the rate offered implied)."""
    if result.status != "ok":
        return False, f"the trial failed: {result.error}"
    metrics = result.metrics
    if metrics.success_rate < 100:
        return False, f"success rate {metrics.success_rate:g}% (below 100%)"
    achieved = metrics.achieved_rate
    if achieved is not None and achieved < rate * (1 - RATE_TOLERANCE):
        return False, f"offered only {format_number(achieved)} msg/s of {format_number(rate)}"
    value = metrics.flat().get(condition.metric)
    if value is None:
        return False, f"{condition.metric} was not measured"
    if not condition.holds(value):
        needs = f"needs {condition.op} {condition.value:g}"
        return False, f"{condition.metric} {format_number(value)} ({needs})"
    return True, None


def step_record(result: TrialResult, number: int, step: SearchStep) -> TrialResult:
    """A step's trial, marked as such (its figures are the search's, not the cell's)."""
    record = SearchRecord(
        step=number, rate=step.rate, passed=step.passed, reason=step.reason, steps=[]
    )
    return result.model_copy(update={"search": record})


def result_record(search: Search, steps: list[TrialResult]) -> TrialResult:
    """The search's result: the figures of the step at the capacity (or of the lowest step
    when none held), with `capacity` among them."""
    if not steps:
        raise ValueError("a search has at least one step")
    capacity = search.capacity
    held = [(s.search.rate or 0.0, s) for s in steps if s.search is not None and s.search.passed]
    chosen = max(held, key=lambda pair: pair[0])[1] if held else steps[0]
    metrics = chosen.metrics.model_copy(update={"capacity": capacity})
    return chosen.model_copy(update={"search": search.summary(), "metrics": metrics})
