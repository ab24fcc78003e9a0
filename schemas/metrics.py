"""Registry of the per-trial metrics of the results contract: unit, direction and label.

Statistics and reporters look metrics up here to know whether a rise is good news
(`better="higher"`), bad news (`"lower"`) or neither (`None`, e.g. message counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means: its unit, which direction is an improvement, a display label."""

    name: str
    unit: str
    better: Better | None
    label: str


def _m(name: str, unit: str, better: Better | None, label: str) -> MetricInfo:
    return MetricInfo(name=name, unit=unit, better=better, label=label)


_PERCENTILES: tuple[tuple[str, str], ...] = (
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
    ("mean", "mean"),
)

_ALL: tuple[MetricInfo, ...] = (
    # Counts: how many messages were offered is the scenario's choice, not a result.
    _m("sent", "msg", None, "Sent"),
    _m("acked", "msg", None, "Acked"),
    _m("received", "msg", None, "Received"),
    _m("lost", "msg", "lower", "Lost"),
    _m("duplicated", "msg", "lower", "Duplicated"),
    # Deliveries again after an ack wait or a nak: not duplicates, but work done twice.
    _m("redelivered", "msg", "lower", "Redelivered"),
    _m("success_rate", "%", "higher", "Success rate"),
    _m("publish_errors_total", "count", "lower", "Publish errors"),
    # How given-up publishes ended: refused (never stored) or unknown (may be stored).
    _m("publish_failed", "msg", "lower", "Publish failed"),
    _m("publish_unknown", "msg", "lower", "Publish unknown"),
    # The retrying client's work through a fault: more retries is the fault's cost, not a goal.
    _m("publish_retries", "count", None, "Publish retries"),
    _m("duplicate_acks", "count", None, "Duplicate acks"),
    _m("failed_delivered", "msg", "lower", "Failed yet delivered"),
    _m("throughput", "msg/s", "higher", "Throughput"),
    _m("publish_throughput", "msg/s", "higher", "Publish throughput"),
    # Paced trials: what the producers really sent per second of the measured window.
    _m("achieved_rate", "msg/s", "higher", "Achieved rate"),
    # Capacity searches: the highest offered rate at which the search's condition held.
    _m("capacity", "msg/s", "higher", "Capacity"),
    *(_m(f"latency_{key}_ms", "ms", "lower", f"Latency {label}") for key, label in _PERCENTILES),
    *(
        _m(f"publish_latency_{key}_ms", "ms", "lower", f"Publish latency {label}")
        for key, label in _PERCENTILES
    ),
    _m("duration_s", "s", "lower", "Duration"),
    # Backlog scenarios: how long the backlog took to build (set by the rate: no direction),
    # how long consumers took to catch up, and how fast they read while catching up.
    _m("backlog_build_s", "s", None, "Backlog build"),
    _m("drain_s", "s", "lower", "Drain time"),
    _m("drain_throughput", "msg/s", "higher", "Drain throughput"),
    # Trials with faults: what the fault cost the producers and the latency of what was sent
    # in the second after it.
    _m("unavailable_s", "s", "lower", "Unavailable"),
    _m("recovery_s", "s", "lower", "Recovery"),
    *(
        _m(f"fault_latency_{key}_ms", "ms", "lower", f"Latency after fault {label}")
        for key, label in _PERCENTILES
    ),
    # Setup, warm-up and the fixed settle wait dominate it, so it carries no direction.
    _m("trial_duration_s", "s", None, "Trial duration"),
    # The harness's own per-trial fixed costs: lower means more of the trial is measurement.
    _m("spawn_s", "s", "lower", "Trial process spawn"),
    _m("create_s", "s", "lower", "Topic/stream create"),
    _m("connect_s", "s", "lower", "Clients ready"),
    _m("consumers_ready_s", "s", "lower", "Consumers ready (group join)"),
    _m("rebalances", "count", "lower", "Rebalances"),
    *(
        _m(f"commit_latency_{key}_ms", "ms", "lower", f"Commit latency {label}")
        for key, label in _PERCENTILES
    ),
    *(
        _m(f"transaction_commit_{key}_ms", "ms", "lower", f"Transaction commit {label}")
        for key, label in _PERCENTILES
    ),
    _m("transactions_aborted", "count", "lower", "Transactions aborted"),
    # Request-reply: requests unanswered, and answers that came twice.
    _m("timeouts", "count", "lower", "Timeouts"),
    _m("duplicate_replies", "count", "lower", "Duplicate replies"),
    # Key-value: each operation's latency, and gets that missed an acknowledged put.
    *(
        _m(f"kv_put_latency_{key}_ms", "ms", "lower", f"KV put latency {label}")
        for key, label in _PERCENTILES
    ),
    *(
        _m(f"kv_get_latency_{key}_ms", "ms", "lower", f"KV get latency {label}")
        for key, label in _PERCENTILES
    ),
    _m("stale_reads", "count", "lower", "Stale reads"),
    _m("lost_reads", "count", "lower", "Lost reads"),
    _m("kv_misses", "count", None, "KV gets of keys never put"),
    _m("ack_pending_peak", "msg", None, "Ack pending peak"),
    _m("teardown_s", "s", "lower", "Teardown"),
    _m("rss_before_mb", "MB", "lower", "RSS before"),
    _m("rss_peak_mb", "MB", "lower", "RSS peak"),
    _m("rss_after_mb", "MB", "lower", "RSS after"),
    _m("memory_delta_mb", "MB", "lower", "Memory delta"),
    # Thread counts before/after are context; peak and what survives the settle time are results.
    _m("threads_before", "threads", None, "Threads before"),
    _m("threads_peak", "threads", "lower", "Threads peak"),
    _m("threads_after", "threads", None, "Threads after settle"),
    _m("threads_after_immediate", "threads", None, "Threads right after"),
    _m("leaked_threads", "threads", "lower", "Leaked threads"),
    _m("lingering_threads", "threads", "lower", "Lingering threads"),
    _m("tasks_peak", "tasks", "lower", "Tasks peak"),
    _m("leaked_tasks", "tasks", "lower", "Leaked tasks"),
    _m("broker_rss_mb", "MB", "lower", "Broker RSS"),
    _m("broker_cpu_percent", "%", "lower", "Broker CPU"),
    # The broker's own figures (telemetry), over the windows after the ramp.
    _m("broker_gc_pause_ms", "ms", "lower", "Broker GC pause (sum)"),
    _m("broker_gc_pause_max_ms", "ms", "lower", "Broker GC pause (worst second)"),
    _m("broker_handler_idle_min_pct", "%", "higher", "Request handler idle (lowest)"),
    _m("broker_network_idle_min_pct", "%", "higher", "Network processor idle (lowest)"),
    _m("broker_produce_p99_ms", "ms", "lower", "Produce p99, broker side"),
    _m("broker_fetch_p99_ms", "ms", "lower", "Fetch p99, broker side"),
    _m("broker_request_queue_p99_ms", "ms", "lower", "Request queue p99"),
    _m("broker_heap_peak_mb", "MB", "lower", "Broker heap peak"),
    _m("broker_cpu_peak_pct", "%", "lower", "Broker CPU peak (its own figure)"),
    _m("under_replicated_peak", "count", "lower", "Under-replicated peak"),
    _m("offline_partitions_peak", "count", "lower", "Offline partitions peak"),
    _m("isr_shrinks", "count", "lower", "ISR shrinks"),
    # A backlog scenario builds pending on purpose: how much is the scenario's, not a verdict.
    _m("consumer_pending_peak", "msg", None, "Consumer pending peak"),
    _m("broker_ack_pending_peak", "msg", None, "Ack pending peak (broker)"),
    _m("replica_lag_peak", "msg", "lower", "Replica lag peak"),
    _m("slow_consumers", "count", "lower", "Slow consumers"),
    # A failover makes leader changes on purpose.
    _m("leader_changes", "count", None, "Leader changes"),
    # Why a paced trial fell short of its rate: the broker pushing back, or exprun's own CPU.
    _m("publish_blocked_pct", "%", None, "Publish blocked"),
    _m("loadgen_cpu_percent", "%", None, "Load generator CPU"),
    # Load generators on other hosts: the bound on the error of cross-host latencies.
    _m("clock_uncertainty_ms", "ms", None, "Clock uncertainty"),
)

METRICS: dict[str, MetricInfo] = {info.name: info for info in _ALL}

# What a capacity search may steer by: figures of one trial that move with the offered rate.
SEARCHABLE_METRICS: tuple[str, ...] = (
    "throughput",
    "publish_throughput",
    "achieved_rate",
    *(f"latency_{key}_ms" for key, _ in _PERCENTILES),
    *(f"publish_latency_{key}_ms" for key, _ in _PERCENTILES),
    "success_rate",
    "lost",
    "duplicated",
    "publish_errors_total",
    "publish_blocked_pct",
    "loadgen_cpu_percent",
    "broker_rss_mb",
    "broker_cpu_percent",
)
# Measured only where exprun runs the broker itself.
LOCAL_BROKER_METRICS: tuple[str, ...] = ("broker_rss_mb", "broker_cpu_percent")


def metric_info(name: str) -> MetricInfo:
    """Registry entry for `name`; unknown names get a neutral entry (no unit, no direction)."""
    known = METRICS.get(name)
    if known is not None:
        return known
    return MetricInfo(name=name, unit="", better=None, label=name.replace("_", " ").capitalize())
