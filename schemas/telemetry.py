"""The broker's own signals: what each one is, and how a trial's telemetry record holds them.

A node's reading is raw (counters as the broker keeps them); per window a signal is the value at
the window's end (gauge), what the counter grew by in it (count), that per second (rate), or
the share of the window a counter of idle nanoseconds grew by (idle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SignalKind = Literal["gauge", "count", "rate", "idle"]


@dataclass(frozen=True)
class SignalInfo:
    name: str
    label: str
    unit: str
    kind: SignalKind


def _s(name: str, label: str, unit: str, kind: SignalKind) -> SignalInfo:
    return SignalInfo(name, label, unit, kind)


_ALL: tuple[SignalInfo, ...] = (
    # Both brokers.
    _s("bytes_in", "Bytes in", "B/s", "rate"),
    _s("bytes_out", "Bytes out", "B/s", "rate"),
    # Which node leads the trial's stream / partition 0: 1 on the leader, 0 on the followers.
    _s("topic_leader", "Leads the trial's stream", "", "gauge"),
    # NATS (/varz, /jsz).
    _s("cpu_pct", "CPU", "%", "gauge"),
    _s("memory_mb", "Memory", "MB", "gauge"),
    _s("msgs_in", "Messages in", "msg/s", "rate"),
    _s("msgs_out", "Messages out", "msg/s", "rate"),
    _s("slow_consumers", "Slow consumers", "count", "count"),
    _s("stream_messages", "Stream messages", "msg", "gauge"),
    _s("stream_bytes", "Stream bytes", "B", "gauge"),
    _s("replica_lag", "Replica lag", "msg", "gauge"),
    _s("consumer_pending", "Consumer pending", "msg", "gauge"),
    _s("ack_pending", "Ack pending", "msg", "gauge"),
    _s("redelivered", "Redelivered", "msg", "count"),
    # Kafka (JMX through the Prometheus JMX exporter).
    _s("handler_idle_ns", "Request handler idle", "%", "idle"),
    _s("network_idle_pct", "Network processor idle", "%", "gauge"),
    _s("produce_p99_ms", "Produce p99 (broker)", "ms", "gauge"),
    _s("fetch_p99_ms", "Fetch p99 (broker)", "ms", "gauge"),
    _s("request_queue_p99_ms", "Request queue p99", "ms", "gauge"),
    _s("under_replicated", "Under-replicated partitions", "count", "gauge"),
    _s("offline_partitions", "Offline partitions", "count", "gauge"),
    _s("isr_shrinks", "ISR shrinks", "count", "count"),
    _s("isr_expands", "ISR expands", "count", "count"),
    _s("active_controller", "Active controller", "", "gauge"),
    _s("leader_count", "Partitions led", "count", "gauge"),
    _s("gc_pause_ms", "GC pause", "ms", "count"),
    _s("heap_used_mb", "Heap used", "MB", "gauge"),
)

SIGNALS: dict[str, SignalInfo] = {info.name: info for info in _ALL}


def signal_info(name: str) -> SignalInfo:
    """The signal's entry; an unknown name (a newer record) is a gauge under its own name."""
    return SIGNALS.get(name) or SignalInfo(name, name.replace("_", " ").capitalize(), "", "gauge")


class NodeTelemetry(BaseModel):
    """One node's signals, one value per window of the trial's series (None: not read)."""

    model_config = ConfigDict(extra="forbid")

    node: int = Field(description="the node's number (external: its URL's place in the list)")
    signals: dict[str, list[float | None]]


class TelemetryEvent(BaseModel):
    """Something the broker did at a moment of the phase, e.g. a leader change."""

    model_config = ConfigDict(extra="forbid")

    at_s: float = Field(description="seconds into the phase (the sample that first saw it)")
    kind: Literal["leader"]
    text: str


class BrokerTelemetry(BaseModel):
    """The broker's own view of a trial, on the windows of its `series`."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["nats", "prometheus"]
    nodes: list[NodeTelemetry] = Field(default_factory=list)
    events: list[TelemetryEvent] = Field(default_factory=list)
    samples: int = Field(0, description="readings taken, over all nodes")
    failures: int = Field(0, description="readings that did not answer (a killed node's too)")
