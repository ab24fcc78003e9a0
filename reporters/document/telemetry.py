"""The broker's view: per cell, what the brokers' own figures said over the measured windows."""

from __future__ import annotations

from reporters.document.blocks import Block, Section, Table, Text, numeric_columns
from reporters.document.formatting import spread
from schemas.report import Report

# Trial metrics from the brokers' telemetry, in the order a reader looks for causes.
TELEMETRY_METRICS = (
    "broker_handler_idle_min_pct",
    "broker_network_idle_min_pct",
    "broker_produce_p99_ms",
    "broker_fetch_p99_ms",
    "broker_request_queue_p99_ms",
    "broker_gc_pause_ms",
    "broker_gc_pause_max_ms",
    "broker_heap_peak_mb",
    "broker_cpu_peak_pct",
    "under_replicated_peak",
    "offline_partitions_peak",
    "isr_shrinks",
    "replica_lag_peak",
    "consumer_pending_peak",
    "broker_ack_pending_peak",
    "slow_consumers",
    "leader_changes",
)


def telemetry_section(report: Report) -> Section | None:
    """A table per broker of its telemetry metrics per cell (medians, with their range)."""
    blocks: list[Block] = []
    for broker in report.brokers:
        cells = [c for c in report.cells if c.cell.broker == broker.name]
        shown = [m for m in TELEMETRY_METRICS if any(m in c.metrics for c in cells)]
        if not shown:
            continue
        headers = ["Variant", "Scenario", *(report.metric(m).label for m in shown)]
        rows = [[c.cell.variant, c.cell.scenario, *(spread(c, m) for m in shown)] for c in cells]
        blocks.append(Text(f"{broker.name} ({broker.type})", "strong"))
        blocks.append(Table(headers, rows, numeric_columns(headers, 2)))
    if not blocks:
        return None
    note = Text(
        "Read by the run from every broker node each second of the measured phase (NATS: its "
        "monitoring port; Kafka: JMX through the Prometheus JMX exporter agent), on the same "
        "windows as the clients' figures, after the ramp. Peaks and floors are a trial's worst "
        "second; medians over the cell's trials, with their range. The HTML report charts them "
        "under the clients' throughput and p99.",
        "note",
    )
    return Section("broker-view", "The broker's view", [note, *blocks])
