"""Charts of a trial's course over time: the clients' figures per window, and under them the
broker's own signals on the same axis, with the faults and leader changes marked."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from html import escape

from reporters.charts import Mark, XYSeries, xy_chart
from schemas.report import Report
from schemas.results import TimeSeries, TrialResult
from schemas.telemetry import BrokerTelemetry, signal_info

MIN_SERIES_WINDOWS = 3  # shorter trials have no course over time worth a chart
# The load generator's memory is charted for trials this long: where a leak would show.
MIN_MEMORY_WINDOWS = 60


def median_trial(trials: Sequence[TrialResult]) -> TrialResult | None:
    """The trial of median throughput among those that kept a time series."""
    kept = sorted(
        (t for t in trials if t.series is not None and t.metrics.throughput is not None),
        key=lambda t: t.metrics.throughput or 0.0,
    )
    return kept[len(kept) // 2] if kept else None


def cell_trials(report: Report, broker: str, variant: str, scenario: str) -> list[TrialResult]:
    """Every trial of the cell that ran to its end (search steps included)."""
    return [
        t
        for t in report.trials
        if (t.broker, t.variant, t.scenario) == (broker, variant, scenario)
        and not t.warmup
        and t.status == "ok"
    ]


def over_time(series: TimeSeries) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(received per second, p99) at the middle of each window, thinned for a long trial."""
    throughput, p99 = [], []
    for start, seconds, received, latency in zip(
        series.start_s, series.seconds, series.received, series.latency_p99_ms, strict=True
    ):
        middle = start + seconds / 2
        if seconds > 0:
            throughput.append((middle, received / seconds))
        if latency is not None:
            p99.append((middle, latency))
    return thinned(throughput, statistics.fmean), thinned(p99, max)


MAX_POINTS = 600  # per line: an hour of seconds becomes 6 s a point, a day 144 s


def thinned(
    points: Sequence[tuple[float, float]],
    combine: Callable[[Sequence[float]], float],
    limit: int = MAX_POINTS,
) -> list[tuple[float, float]]:
    """At most `limit` points: runs of consecutive ones combined (a rate averaged, a peak kept
    by `max`), each at its run's middle. The record keeps every window."""
    step = -(-len(points) // limit)
    if step <= 1:
        return list(points)
    out = []
    for first in range(0, len(points), step):
        run = points[first : first + step]
        out.append((statistics.fmean(x for x, _ in run), combine([y for _, y in run])))
    return out


def memory_over_time(series: TimeSeries) -> list[tuple[float, float]]:
    """The load generator's peak RSS at the middle of each window, thinned (peaks kept)."""
    rss = series.loadgen_rss_mb or []
    points = [
        (start + seconds / 2, mb)
        for start, seconds, mb in zip(series.start_s, series.seconds, rss, strict=False)
        if mb is not None
    ]
    return thinned(points, max)


def timeline_charts(report: Report) -> list[str]:
    """Per broker and scenario: throughput and p99 over time, the median trial per variant;
    for long trials also the load generator's memory."""
    svgs = []
    for scenario in report.scenarios:
        for broker in report.brokers:
            throughput, p99, memory = [], [], []
            for variant in report.variants:
                trials = cell_trials(report, broker.name, variant, scenario.name)
                chosen = median_trial([t for t in trials if not t.search_step])
                if chosen is None or chosen.series is None:
                    continue
                if len(chosen.series.start_s) < MIN_SERIES_WINDOWS:
                    continue
                rates, latencies = over_time(chosen.series)
                throughput.append(XYSeries(variant, rates))
                p99.append(XYSeries(variant, latencies))
                if len(chosen.series.start_s) >= MIN_MEMORY_WINDOWS:
                    memory.append(XYSeries(variant, memory_over_time(chosen.series)))
            if throughput:
                where = f"{broker.name}/{scenario.name}, median trial"
                svgs.append(xy_chart(f"Received per second: {where}", "s", "msg/s", throughput))
                svgs.append(xy_chart(f"p99 latency over time: {where}", "s", "ms", p99))
                if any(line.points for line in memory):
                    title = f"Load generator memory (peak RSS): {where}"
                    svgs.append(xy_chart(title, "s", "MB", memory))
    return svgs


# The signals charted under the clients', per source, in the order a reader looks for causes.
PANEL_SIGNALS = {
    "nats": (
        "cpu_pct",
        "msgs_in",
        "consumer_pending",
        "ack_pending",
        "replica_lag",
        "slow_consumers",
        "memory_mb",
    ),
    "prometheus": (
        "handler_idle_ns",
        "network_idle_pct",
        "produce_p99_ms",
        "request_queue_p99_ms",
        "gc_pause_ms",
        "heap_used_mb",
        "under_replicated",
        "isr_shrinks",
        "bytes_in",
    ),
}
FAULT_COLOR, EVENT_COLOR = "#b3261e", "#7a8492"


def broker_panels(report: Report) -> list[str]:
    """Per cell whose median trial read its broker: the clients' throughput and p99, then the
    broker's signals (a line per node), all on one time axis, faults and leader moves marked."""
    panels = []
    for scenario in report.scenarios:
        for broker in report.brokers:
            for variant in report.variants:
                trials = cell_trials(report, broker.name, variant, scenario.name)
                chosen = median_trial([t for t in trials if t.telemetry is not None])
                if chosen is None or chosen.series is None or chosen.telemetry is None:
                    continue
                if len(chosen.series.start_s) < MIN_SERIES_WINDOWS:
                    continue
                where = f"{broker.name}/{variant}/{scenario.name}"
                svgs = _panel(chosen, chosen.series, chosen.telemetry)
                panels.append(
                    f"<details><summary>{escape(where)}: median trial (repetition "
                    f"{chosen.repetition})</summary>"
                    f'<div class="charts">{"".join(svgs)}</div></details>'
                )
    return panels


def _panel(trial: TrialResult, series: TimeSeries, telemetry: BrokerTelemetry) -> list[str]:
    x_max = max(s + d for s, d in zip(series.start_s, series.seconds, strict=True))
    marks = [
        Mark(f.at_s, 0, f"{f.action} at {f.at_s:g} s", FAULT_COLOR)
        for f in trial.faults
        if f.at_s is not None
    ]
    marks += [Mark(e.at_s, 0, f"{e.text} at {e.at_s:g} s", EVENT_COLOR) for e in telemetry.events]
    rates, latencies = over_time(series)
    svgs = [
        xy_chart(
            "Received per second", "s", "msg/s", [XYSeries("clients", rates)], marks, None, x_max
        ),
        xy_chart("p99 latency", "s", "ms", [XYSeries("clients", latencies)], marks, None, x_max),
    ]
    middles = [
        start + seconds / 2 for start, seconds in zip(series.start_s, series.seconds, strict=True)
    ]
    for name in PANEL_SIGNALS[telemetry.source]:
        lines = []
        for node in telemetry.nodes:
            values = node.signals.get(name)
            if values is None:
                continue
            points = [(x, v) for x, v in zip(middles, values, strict=False) if v is not None]
            if points:
                lines.append(XYSeries(f"node {node.node}", thinned(points, max)))
        if not any(v for line in lines for _, v in line.points):
            continue  # never read, or zero throughout: nothing to see
        info = signal_info(name)
        svgs.append(xy_chart(f"Broker: {info.label}", "s", info.unit, lines, marks, None, x_max))
    return svgs
