"""Runs remembered across commits: the series a results store keeps, and their change points.

`runner.history` builds these from the store; reporters (the trend page) only render them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.metrics import Better

HISTORY_SCHEMA_VERSION: Literal[1] = 1


class HistoryModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordedRun(HistoryModel):
    """One run as the store keeps it."""

    run_key: str = Field(description="the run's identity in the store (spec sha + start time)")
    spec_name: str
    spec_sha256: str | None = None
    spec_commit: str | None = Field(None, description="git commit of the spec's repository")
    spec_branch: str | None = None
    spec_dirty: bool | None = Field(None, description="the spec's repository had changes")
    label: str | None = None
    commit: str | None = Field(None, description="the system under test's revision (--commit)")
    testbed: str
    started_at: str | None = None
    finished_at: str | None = None
    recorded_at: str | None = None
    run_folder: str | None = None


class Point(HistoryModel):
    """One run's figure in a series: its median, CI, n and every measured trial's value."""

    run_key: str
    started_at: str | None = None
    spec_commit: str | None = None
    commit: str | None = None
    label: str | None = None
    median: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    trials: list[float] = Field(default_factory=list)
    settings_changed: bool = Field(
        False, description="the cell's resolved settings differ from the previous point's"
    )
    report: str | None = Field(None, description="the run's HTML report, when its folder is known")


class ChangePoint(HistoryModel):
    """A step in a series, confirmed with the per-trial values on both sides."""

    index: int = Field(description="position of the first point after the step")
    run_before: str
    run_after: str
    commit_before: str | None = None
    commit_after: str | None = None
    median_before: float
    median_after: float
    change_pct: float | None
    p_value: float
    p_adjusted: float = Field(description="corrected for every candidate tested with it")
    regression: bool = Field(description="a step in the metric's bad direction")
    settings_changed: bool = Field(
        False, description="the cell's settings changed at the step (the spec was edited)"
    )


class Series(HistoryModel):
    """spec x scenario x variant x broker x metric, on one testbed."""

    spec: str
    testbed: str
    broker: str
    variant: str
    scenario: str
    metric: str
    label: str = Field(description="the metric's label, from the registry")
    unit: str = ""
    better: Better | None = None
    points: list[Point]
    changes: list[ChangePoint] = Field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.spec}: {self.broker}/{self.variant}/{self.scenario} {self.metric}"


class History(HistoryModel):
    """What `exprun history` shows: the series asked for, oldest point first."""

    schema_version: Literal[1] = HISTORY_SCHEMA_VERSION
    store: str = Field(description="the store, its password hidden")
    series: list[Series]
