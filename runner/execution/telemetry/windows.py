"""The broker's readings put on the trial's per-second windows, and summed up (pure).

Readings are taken on the windows' own ticks, so a window's edges each have the reading taken
nearest them; a counter's growth between its edges is divided by the time between the two
readings, not the window's nominal length.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import Literal

from runner.execution.telemetry.samples import Sample, SourceKind
from schemas.results import TimeSeries
from schemas.telemetry import (
    BrokerTelemetry,
    NodeTelemetry,
    TelemetryEvent,
    signal_info,
)

NS_PER_S = 1_000_000_000
MATCH_NS = 600_000_000  # a reading further than this from a window's edge is not its reading
LEADER_NOUN = {"nats": "stream leader", "prometheus": "partition 0 leader"}


def broker_telemetry(
    kind: SourceKind, samples: Sequence[Sample], start_ns: int, series: TimeSeries
) -> BrokerTelemetry:
    """Each node's signals on the series' windows, and the leader changes seen."""
    edges = [start_ns + round(s * NS_PER_S) for s in series.start_s]
    if series.start_s:
        edges.append(edges[-1] + round(series.seconds[-1] * NS_PER_S))
    nodes = []
    for node in sorted({s.node for s in samples}):
        readings = sorted(
            ((s.at_ns, s.reading) for s in samples if s.node == node and s.reading is not None),
            key=lambda pair: pair[0],
        )
        times = [at_ns for at_ns, _ in readings]
        at_edges = [_nearest(readings, times, edge) for edge in edges]
        names = sorted({name for _, reading in readings for name in reading})
        signals = {name: _windows(name, at_edges) for name in names}
        nodes.append(NodeTelemetry(node=node, signals=signals))
    return BrokerTelemetry(
        source=kind,
        nodes=nodes,
        events=_leader_events(kind, samples, start_ns),
        samples=len(samples),
        failures=sum(s.reading is None for s in samples),
    )


Reading = tuple[int, dict[str, float]]


def _nearest(readings: Sequence[Reading], times: Sequence[int], edge: int) -> Reading | None:
    """The reading taken nearest the edge (readings in time order, `times` theirs)."""
    after = bisect.bisect_left(times, edge)
    near = [i for i in (after - 1, after) if 0 <= i < len(times)]
    best = min(near, key=lambda i: abs(times[i] - edge), default=None)
    return readings[best] if best is not None and abs(times[best] - edge) <= MATCH_NS else None


def _windows(name: str, at_edges: Sequence[Reading | None]) -> list[float | None]:
    kind = signal_info(name).kind
    values: list[float | None] = []
    for before, after in itertools.pairwise(at_edges):
        end = after[1].get(name) if after is not None else None
        if kind == "gauge":
            values.append(_rounded(end))
            continue
        begin = before[1].get(name) if before is not None else None
        if begin is None or end is None or end < begin or before is None or after is None:
            values.append(None)  # not read at both edges, or a restarted node's counter reset
            continue
        grown, seconds = end - begin, (after[0] - before[0]) / NS_PER_S
        if kind == "count":
            values.append(_rounded(grown))
        elif seconds <= 0:
            values.append(None)
        elif kind == "rate":
            values.append(_rounded(grown / seconds))
        else:  # idle: nanoseconds idle per nanosecond, as a percentage
            values.append(_rounded(min(100.0, 100.0 * grown / (seconds * NS_PER_S))))
    return values


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _leader_events(
    kind: SourceKind, samples: Sequence[Sample], start_ns: int
) -> list[TelemetryEvent]:
    """A leader change each time a round of readings names one other than the last known."""
    rounds: dict[int, list[int]] = {}
    for sample in samples:
        leads = sample.reading is not None and sample.reading.get("topic_leader") == 1.0
        rounds.setdefault(sample.at_ns, [])
        if leads:
            rounds[sample.at_ns].append(sample.node)
    events, last = [], None
    for at_ns in sorted(rounds):
        leaders = rounds[at_ns]
        if len(leaders) != 1:
            continue  # an election (none) or a stale claim beside the new one (two)
        if last is not None and leaders[0] != last:
            events.append(
                TelemetryEvent(
                    at_s=round((at_ns - start_ns) / NS_PER_S, 3),
                    kind="leader",
                    text=f"{LEADER_NOUN[kind]} moved from node {last} to node {leaders[0]}",
                )
            )
        last = leaders[0]
    return events


# --- trial metrics ---------------------------------------------------------------------------


Summary = Callable[[list[float]], float]
# (metric, signal, read per node or for the cluster (the nodes summed per window), summary)
SUMMARIES: tuple[tuple[str, str, Literal["node", "cluster"], Summary], ...] = (
    ("broker_gc_pause_ms", "gc_pause_ms", "node", sum),
    ("broker_gc_pause_max_ms", "gc_pause_ms", "node", max),
    ("broker_handler_idle_min_pct", "handler_idle_ns", "node", min),
    ("broker_network_idle_min_pct", "network_idle_pct", "node", min),
    ("broker_produce_p99_ms", "produce_p99_ms", "node", max),
    ("broker_fetch_p99_ms", "fetch_p99_ms", "node", max),
    ("broker_request_queue_p99_ms", "request_queue_p99_ms", "node", max),
    ("broker_heap_peak_mb", "heap_used_mb", "node", max),
    ("broker_cpu_peak_pct", "cpu_pct", "node", max),
    ("under_replicated_peak", "under_replicated", "cluster", max),
    ("offline_partitions_peak", "offline_partitions", "cluster", max),
    ("isr_shrinks", "isr_shrinks", "node", sum),
    ("consumer_pending_peak", "consumer_pending", "cluster", max),
    ("broker_ack_pending_peak", "ack_pending", "cluster", max),
    ("replica_lag_peak", "replica_lag", "node", max),
    ("slow_consumers", "slow_consumers", "node", sum),
)


def telemetry_metrics(
    telemetry: BrokerTelemetry, series: TimeSeries, ramp_s: float
) -> dict[str, float | int]:
    """The trial metrics the broker's signals give, over the windows after the ramp (counts
    come out as floats: the Metrics model makes them ints)."""
    first = next(
        (i for i, start in enumerate(series.start_s) if start + 1e-6 >= ramp_s),
        len(series.start_s),
    )
    found: dict[str, float | int] = {}
    for metric, signal, over, summary in SUMMARIES:
        judged = [
            node.signals[signal][first:] for node in telemetry.nodes if signal in node.signals
        ]
        if over == "node":
            seen = [v for values in judged for v in values if v is not None]
        else:  # a window where no node was read is skipped, not summed as zero
            seen = [
                sum(known)
                for window in zip(*judged, strict=True)
                if (known := [v for v in window if v is not None])
            ]
        if seen:
            found[metric] = round(summary(seen), 3)
    if any("topic_leader" in node.signals for node in telemetry.nodes):
        found["leader_changes"] = sum(e.kind == "leader" for e in telemetry.events)
    return found
