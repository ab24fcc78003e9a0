"""Target goals as written in specs: '>= +400%' (change vs baseline) or '<= 1' (value)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, cast

GoalOp = Literal[">=", "<=", ">", "<", "=="]


@dataclass(frozen=True)
class Goal:
    """A parsed target such as ">= +400%" (relative change, in %) or "<= 1" (absolute)."""

    op: GoalOp
    value: float
    is_relative: bool

    def holds(self, actual: float) -> bool:
        """Whether `actual` (a change in % for relative goals) satisfies the goal."""
        if self.op == ">=":
            return actual >= self.value
        if self.op == "<=":
            return actual <= self.value
        if self.op == ">":
            return actual > self.value
        if self.op == "<":
            return actual < self.value
        return math.isclose(actual, self.value, rel_tol=1e-9, abs_tol=1e-12)

    def __str__(self) -> str:
        return f"{self.op} {self.value:+g}%" if self.is_relative else f"{self.op} {self.value:g}"


_GOAL_RE = re.compile(
    r"^\s*(?P<op>>=|<=|==|>|<)\s*"
    r"(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<pct>%)?\s*$"
)
_GOAL_HELP = "expected '<op> <number>[%]' with op one of >=, <=, >, <, == (e.g. '>= +400%', '<= 1')"
_OP_TYPOS = {"=>": ">=", "=<": "<=", "≥": ">=", "≤": "<=", "=": "=="}


def parse_goal(text: str) -> Goal:
    """Parse a target; a trailing % makes it a relative change of the median, in percent."""
    if not isinstance(text, str):
        raise ValueError(f"invalid goal {text!r}: must be a string; {_GOAL_HELP}")
    m = _GOAL_RE.match(text)
    if m is None:
        stripped = text.strip()
        for typo, fix in _OP_TYPOS.items():
            if stripped.startswith(typo) and not stripped.startswith(fix):
                raise ValueError(f"invalid goal {text!r}: did you mean '{fix}'? {_GOAL_HELP}")
        raise ValueError(f"invalid goal {text!r}: {_GOAL_HELP}")
    # The regex admits only GoalOp spellings.
    return Goal(op=cast(GoalOp, m["op"]), value=float(m["num"]), is_relative=m["pct"] is not None)


ConditionOp = Literal["<=", ">="]


@dataclass(frozen=True)
class Condition:
    """A metric bound such as "latency_p99_ms <= 50" (a capacity search's `until`)."""

    metric: str
    op: ConditionOp
    value: float

    def holds(self, actual: float | None) -> bool:
        if actual is None:
            return False
        return actual <= self.value if self.op == "<=" else actual >= self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


_CONDITION_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=)\s*"
    r"(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*$"
)


def parse_condition(text: str) -> Condition:
    """Parse "METRIC <= NUMBER" or "METRIC >= NUMBER" (the metric is checked by the caller)."""
    match = _CONDITION_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"invalid condition {text!r}: expected 'METRIC <= NUMBER' or 'METRIC >= NUMBER', "
            "e.g. 'latency_p99_ms <= 50'"
        )
    op = cast(ConditionOp, match["op"])
    return Condition(metric=match["metric"], op=op, value=float(match["num"]))
