"""Per-trial results: one JSON object per line of a run's `trials.jsonl`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RESULTS_SCHEMA_VERSION: Literal[1] = 1


class LatencySummary(BaseModel):
    """Milliseconds, from an HdrHistogram of every message of the trial."""

    model_config = ConfigDict(extra="forbid")

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    mean: float | None = None
    count: int = 0


class Metrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sent: int = 0
    acked: int = 0
    received: int = Field(0, description="unique sequence numbers received")
    lost: int = Field(0, description="acked but never received within the drain timeout")
    duplicated: int = Field(0, description="deliveries beyond the first of a sequence number")
    success_rate: float = Field(0.0, description="unique received / sent, %")
    publish_errors: dict[str, int] = Field(default_factory=dict, description="by reason")
    throughput: float | None = Field(
        None, description="unique received msg/s, first send -> last receive"
    )
    publish_throughput: float | None = Field(
        None, description="acked msg/s, first send -> last ack"
    )
    latency_ms: LatencySummary = Field(default_factory=LatencySummary, description="end to end")
    publish_latency_ms: LatencySummary = Field(
        default_factory=LatencySummary, description="publish -> broker ack"
    )
    duration_s: float | None = Field(None, description="measured phase")
    trial_duration_s: float | None = Field(None, description="whole trial, setup to teardown")
    # Per-trial fixed costs, outside the measured phase (what a whole run spends besides it).
    spawn_s: float | None = Field(None, description="starting the trial process")
    create_s: float | None = Field(None, description="creating the topic / stream")
    connect_s: float | None = Field(None, description="consumers ready and producers connected")
    teardown_s: float | None = Field(
        None, description="closing the clients and deleting the topic (settle time excluded)"
    )
    rss_before_mb: float | None = None
    rss_peak_mb: float | None = Field(
        None, description="trial process, plus the unique memory of its helper processes"
    )
    rss_after_mb: float | None = None
    memory_delta_mb: float | None = Field(None, description="RSS after settle minus before")
    threads_before: int | None = None
    threads_peak: int | None = Field(
        None, description="trial process, plus the threads of its helper processes"
    )
    threads_after_immediate: int | None = Field(None, description="right after the measured phase")
    threads_after: int | None = Field(None, description="after the settle time")
    leaked_threads: int | None = Field(None, description="after settle minus before")
    lingering_threads: int | None = Field(
        None, description="present right after the phase but gone after the settle time"
    )
    tasks_peak: int | None = None
    leaked_tasks: int | None = None
    broker_rss_mb: float | None = Field(None, description="local brokers only")
    broker_cpu_percent: float | None = Field(None, description="local brokers only")

    def flat(self) -> dict[str, float]:
        """Every numeric metric under its registry name (see schemas.metrics)."""
        flat: dict[str, float] = {}
        for name, value in self:
            if isinstance(value, LatencySummary):
                stem = name.removesuffix("_ms")
                for key in ("p50", "p90", "p99", "p999", "max", "mean"):
                    figure = getattr(value, key)
                    if figure is not None:
                        flat[f"{stem}_{key}_ms"] = float(figure)
            elif isinstance(value, dict):
                flat["publish_errors_total"] = float(sum(value.values()))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                flat[name] = float(value)
        return flat


class TrialResult(BaseModel):
    """One trial; failed trials carry their reason and whatever was measured before."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = RESULTS_SCHEMA_VERSION
    index: int = Field(description="position in the run's trial order, from 0")
    broker: str
    broker_type: str
    variant: str
    scenario: str
    repetition: int
    warmup: bool
    status: Literal["ok", "failed"]
    error: str | None = None
    started_at: str = Field(description="UTC, ISO 8601")
    config: dict[str, Any] = Field(description="the effective settings of the trial")
    metrics: Metrics = Field(default_factory=Metrics)

    @property
    def key(self) -> tuple[str, str, str, bool, int]:
        return (self.broker, self.variant, self.scenario, self.warmup, self.repetition)
