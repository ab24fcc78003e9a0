"""Per-trial results: one JSON object per line of a run's `trials.jsonl`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.telemetry import BrokerTelemetry
from schemas.units import format_duration

RESULTS_SCHEMA_VERSION: Literal[1] = 1
# (broker, variant, scenario, warm-up, repetition, search step or None)
TrialKey = tuple[str, str, str, bool, int, int | None]


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
    publish_errors: dict[str, int] = Field(
        default_factory=dict, description="publishes given up, by the last try's reason"
    )
    publish_failed: int | None = Field(
        None, description="given up, the broker having refused every try: never stored"
    )
    publish_unknown: int | None = Field(
        None,
        description="given up with a try unanswered (or unanswered when publishing ended): "
        "may be stored",
    )
    publish_retries: int | None = Field(
        None, description="tries beyond the first, where exprun retries (JetStream)"
    )
    duplicate_acks: int | None = Field(
        None, description="retries the broker recognised as already stored (JetStream)"
    )
    failed_delivered: int | None = Field(
        None, description="messages reported failed that were delivered all the same (must be 0)"
    )
    throughput: float | None = Field(
        None, description="unique received msg/s, first send -> last receive"
    )
    publish_throughput: float | None = Field(
        None, description="acked msg/s, first send -> last ack"
    )
    achieved_rate: float | None = Field(
        None, description="paced trials: msg/s the producers really sent in the measured window"
    )
    capacity: float | None = Field(
        None, description="capacity searches: the highest offered rate at which `until` held"
    )
    latency_ms: LatencySummary = Field(default_factory=LatencySummary, description="end to end")
    publish_latency_ms: LatencySummary = Field(
        default_factory=LatencySummary, description="publish -> broker ack"
    )
    redelivered: int | None = Field(
        None,
        description="deliveries again after an ack wait or a nak (JetStream consumers that "
        "ack): not duplicates",
    )
    duration_s: float | None = Field(None, description="measured phase")
    backlog_build_s: float | None = Field(
        None, description="backlog scenarios: phase start until the backlog was stored"
    )
    drain_s: float | None = Field(
        None, description="consumers' start until they caught up with the producers"
    )
    drain_throughput: float | None = Field(None, description="msg/s consumed while catching up")
    unavailable_s: float | None = Field(
        None, description="trials with faults: the longest stretch with no publish acked"
    )
    recovery_s: float | None = Field(
        None,
        description="trials with faults: the longest time from a fault until acked throughput "
        "was back to 90% of its median before it",
    )
    fault_latency_ms: LatencySummary = Field(
        default_factory=LatencySummary,
        description="end to end, of the messages sent in the second after each fault",
    )
    trial_duration_s: float | None = Field(None, description="whole trial, setup to teardown")
    # Per-trial fixed costs, outside the measured phase (what a whole run spends besides it).
    spawn_s: float | None = Field(None, description="starting the trial process")
    create_s: float | None = Field(None, description="creating the topic / stream")
    connect_s: float | None = Field(None, description="consumers ready and producers connected")
    consumers_ready_s: float | None = Field(
        None, description="consumers started until every partition was assigned (group join)"
    )
    rebalances: int | None = Field(
        None, description="consumer group rebalances during the measured phase"
    )
    commit_latency_ms: LatencySummary = Field(
        default_factory=LatencySummary, description="offset commits (consumer groups, sync/async)"
    )
    transaction_commit_ms: LatencySummary = Field(
        default_factory=LatencySummary,
        description="Kafka transactions: each successful commit_transaction call (its flush "
        "of the transaction's last messages included)",
    )
    transactions_aborted: int | None = Field(
        None,
        description="Kafka transactions aborted (their messages failed, never to be delivered); "
        "None without transactions",
    )
    timeouts: int | None = Field(
        None, description="request_reply: requests not answered within the scenario's timeout"
    )
    duplicate_replies: int | None = Field(
        None, description="request_reply: replies to a request already answered (must be 0)"
    )
    kv_put_latency_ms: LatencySummary = Field(
        default_factory=LatencySummary, description="kv: put -> the bucket's ack"
    )
    kv_get_latency_ms: LatencySummary = Field(
        default_factory=LatencySummary, description="kv: get -> its value"
    )
    stale_reads: int | None = Field(
        None,
        description="kv: gets that returned an older revision than one acked before they were "
        "sent (must be 0)",
    )
    lost_reads: int | None = Field(
        None,
        description="kv: gets that found no value although a put of the key was acked before "
        "they were sent (must be 0)",
    )
    kv_misses: int | None = Field(
        None, description="kv: gets of a key no put had reached yet (no error; see preload)"
    )
    ack_pending_peak: int | None = Field(
        None, description="most deliveries waiting at once for their handler's ack (JetStream)"
    )
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
    # The broker's own figures over the measured windows (telemetry): absent where the broker
    # has no such figure or nothing was read.
    broker_gc_pause_ms: float | None = Field(None, description="GC pause time, all nodes, sum")
    broker_gc_pause_max_ms: float | None = Field(
        None, description="GC pause time of one node in its worst second"
    )
    broker_handler_idle_min_pct: float | None = Field(
        None, description="request handlers' idle share, lowest second of any node"
    )
    broker_network_idle_min_pct: float | None = Field(
        None, description="network processors' idle share, lowest second of any node"
    )
    broker_produce_p99_ms: float | None = Field(
        None, description="produce request time p99 as the broker measures it, highest second"
    )
    broker_fetch_p99_ms: float | None = Field(
        None, description="consumer fetch request time p99 (broker side), highest second"
    )
    broker_request_queue_p99_ms: float | None = Field(
        None, description="produce requests' queue time p99, highest second"
    )
    broker_heap_peak_mb: float | None = Field(None, description="JVM heap used, highest node")
    broker_cpu_peak_pct: float | None = Field(
        None, description="the broker's own CPU figure, busiest node's highest second"
    )
    under_replicated_peak: int | None = Field(
        None, description="under-replicated partitions, the cluster's highest second"
    )
    offline_partitions_peak: int | None = None
    isr_shrinks: int | None = Field(None, description="in-sync replica sets shrunk, all nodes")
    consumer_pending_peak: int | None = Field(
        None, description="messages the trial's consumers had still to get, highest second"
    )
    broker_ack_pending_peak: int | None = Field(
        None, description="deliveries awaiting an ack as the broker counts them, highest second"
    )
    replica_lag_peak: int | None = Field(
        None, description="messages a stream replica was behind its leader, highest second"
    )
    slow_consumers: int | None = Field(
        None, description="clients the server marked slow consumers during the phase"
    )
    leader_changes: int | None = Field(
        None, description="times the trial's stream / partition 0 got a new leader"
    )
    publish_blocked_pct: float | None = Field(
        None, description="share of the publishing time producers waited for the broker, %"
    )
    loadgen_cpu_percent: float | None = Field(
        None, description="CPU of exprun's busiest load-generator process while publishing, %"
    )
    clock_uncertainty_ms: float | None = Field(
        None,
        description="load generators on other hosts: how far their clocks may still be off the "
        "coordinator's after correction (half the best round trip), the worst host's",
    )

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


class SubscriptionFigures(BaseModel):
    """One subscription's own books (a trial with several topics or subscriptions)."""

    model_config = ConfigDict(extra="forbid")

    topic: int
    subscription: int = Field(description="numbered over the trial, topic by topic")
    sent: int = Field(description="published to its topic")
    received: int
    lost: int
    duplicated: int
    redelivered: int
    success_rate: float


class FaultFigures(BaseModel):
    """One fault of a trial: what the run did, and what it cost."""

    model_config = ConfigDict(extra="forbid")

    action: str
    at: str = Field(description="its point as the spec writes it (40%, 10s)")
    at_s: float | None = Field(None, description="when it was done, seconds into the phase")
    node: int | None = Field(None, description="the node it hit")
    error: str | None = Field(None, description="why it could not be done")
    recovery_s: float | None = Field(
        None, description="until acked throughput was back to 90% of its pre-fault median"
    )
    not_recovered: str | None = Field(None, description="why recovery_s is missing")
    latency_p99_ms: float | None = Field(None, description="sent in the second after it")
    latency_max_ms: float | None = None


class PublishPolicy(BaseModel):
    """What a trial's producers do when a publish fails: the client policy a fault meets."""

    model_config = ConfigDict(extra="forbid")

    retried_by: Literal["exprun", "librdkafka"] | None = Field(
        description="who retries a failed publish; None: nobody (one try)"
    )
    delivery_timeout_s: float | None = Field(
        description="retries stop this long after the first try; None: never (or one try)"
    )
    idempotent: bool = Field(description="a retry of a stored message is not stored again")
    at_most_once: bool = Field(
        False,
        description="the broker stores nothing (core NATS): an ack is the server's having read "
        "the message, and what a subscriber cannot take is dropped",
    )
    settings: dict[str, str] = Field(
        default_factory=dict, description="the settings behind the policy, as the client has them"
    )

    @property
    def retrying(self) -> bool:
        return self.retried_by is not None

    def describe(self) -> str:
        """The policy in words, e.g. 'librdkafka retries until 300s, idempotent (acks all, ...)'."""
        if self.at_most_once:
            what = "at most once: nothing stored, nothing retried"
        elif self.retried_by is None:
            what = "one try"
        else:
            how = " by message id" if self.retried_by == "exprun" else ""
            limit = self.delivery_timeout_s
            until = f"until {format_duration(limit)} after the first try" if limit else "forever"
            what = f"{self.retried_by} retries{how} {until}"
            what += ", idempotent" if self.idempotent else ", not idempotent"
        settings = ", ".join(f"{key} {value}" for key, value in self.settings.items())
        return f"{what} ({settings})" if settings else what

    def unlike(self, other: PublishPolicy) -> list[str]:
        """How the two differ in kind: what a fault would make of the same broker behaviour."""
        found = []
        if self.at_most_once != other.at_most_once:
            found.append("one stores what it acks, the other delivers at most once")
        elif self.retrying != other.retrying:
            found.append("one retries a failed publish, the other gives up after one try")
        elif self.retrying and self.idempotent != other.idempotent:
            found.append("one retries idempotently, the other may store a retried message twice")
        return found


class NodeFigures(BaseModel):
    """One broker node over the measured phase."""

    model_config = ConfigDict(extra="forbid")

    node: int
    rss_peak_mb: float | None = None
    cpu_percent: float | None = None
    exited: bool = Field(False, description="the node's process ended during the phase")


class LoadGeneratorFigures(BaseModel):
    """One load-generator process of a trial spread over several (its share of the clients)."""

    model_config = ConfigDict(extra="forbid")

    process: int
    host: str | None = Field(
        None, description="the Dask worker it ran on (engine: dask); none: the trial's machine"
    )
    clock_offset_ms: float | None = Field(
        None, description="its host's clock minus the coordinator's, measured at the trial start"
    )
    clock_uncertainty_ms: float | None = Field(
        None, description="half the best round trip of that measurement"
    )
    rss_peak_mb: float | None = None
    threads_peak: int | None = None
    cpu_percent: float | None = Field(None, description="over the measured phase, % of one core")
    leaked_threads: int | None = Field(
        None, description="threads alive after its clients closed that were not there before"
    )


class TimeSeries(BaseModel):
    """Per-second windows of a trial's measured phase (the last one may be shorter).

    Windows are aligned on the end of the ramp, so the figures (after the ramp) are exactly the
    windows from the first one starting at or after 0 s + ramp.
    """

    model_config = ConfigDict(extra="forbid")

    start_s: list[float] = Field(description="each window's start, seconds into the phase")
    seconds: list[float] = Field(description="each window's length")
    published: list[int]
    acked: list[int]
    received: list[int] = Field(description="unique messages first received in the window")
    latency_p50_ms: list[float | None] = Field(description="end to end, received in the window")
    latency_p99_ms: list[float | None]
    in_flight: list[int] = Field(description="published, not yet acked or failed, at its end")
    loadgen_rss_mb: list[float | None] | None = Field(
        None, description="peak RSS of this machine's load generator (trial and helper processes)"
    )


class SearchStep(BaseModel):
    """One step of a capacity search, as its result record lists them."""

    model_config = ConfigDict(extra="forbid")

    rate: float
    passed: bool
    reason: str | None = None


class SearchRecord(BaseModel):
    """A trial of a capacity search: one step, or (step None) the search's result."""

    model_config = ConfigDict(extra="forbid")

    step: int | None = Field(description="this trial's step, from 1; None on the search result")
    rate: float | None = Field(description="offered rate of the step (result: the capacity)")
    passed: bool | None = Field(description="whether the search's condition held at this rate")
    reason: str | None = Field(None, description="why it did not hold")
    steps: list[SearchStep] = Field(default_factory=list, description="on the result: all steps")


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
    publish_policy: PublishPolicy | None = Field(
        None, description="what the producers do on a failed publish"
    )
    metrics: Metrics = Field(default_factory=Metrics)
    notes: list[str] = Field(
        default_factory=list, description="what the trial saw that its figures alone do not say"
    )
    series: TimeSeries | None = Field(None, description="per-second windows of the phase")
    subscriptions: list[SubscriptionFigures] = Field(
        default_factory=list, description="with several topics or subscriptions: each one's"
    )
    search: SearchRecord | None = Field(None, description="capacity searches only")
    faults: list[FaultFigures] = Field(
        default_factory=list, description="trials with faults: each one, in the spec's order"
    )
    broker_nodes: list[NodeFigures] = Field(
        default_factory=list, description="embedded clusters (nodes > 1): each node's figures"
    )
    load_generators: list[LoadGeneratorFigures] = Field(
        default_factory=list,
        description="trials spread over load-generator processes (execution.processes > 1): "
        "each process's own figures (the trial's resource metrics sum them)",
    )
    telemetry: BrokerTelemetry | None = Field(
        None, description="the broker's own signals, per node, on the windows of `series`"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what went wrong beside the trial without costing its figures",
    )

    @property
    def key(self) -> TrialKey:
        """Identifies the trial across runs of the same spec (used to resume)."""
        step = self.search.step if self.search is not None else None
        return (self.broker, self.variant, self.scenario, self.warmup, self.repetition, step)

    @property
    def search_step(self) -> bool:
        """A step of a capacity search: its figures are the search's, not the cell's."""
        return self.search is not None and self.search.step is not None
