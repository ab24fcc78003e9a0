"""What the broker's own signals show in a stretch of a trial (pure, over its telemetry).

An anomaly found in the client's figures (a sag, a climbing p99, a fault's outage) cites these:
the broker's side of the same seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from schemas.report import format_number as num
from schemas.results import TimeSeries
from schemas.telemetry import BrokerTelemetry

HANDLERS_BUSY_PCT = 20.0  # Kafka's own guidance: below 20% idle the request handlers saturate
CPU_BUSY_PCT = 90.0
GC_PAUSE_MS = 99.0  # a second with this much GC pause shows in a p99 of a few ms
MARGIN_S = 1.0  # a cause may come a reading before its effect

# (signal, busy when "below" or "above" the threshold, the phrase: VALUE the worst figure)
CITED: tuple[tuple[str, Literal["below", "above"], float, str], ...] = (
    ("handler_idle_ns", "below", HANDLERS_BUSY_PCT, "request handler idle VALUE% on node {node}"),
    ("cpu_pct", "above", CPU_BUSY_PCT, "server CPU VALUE% on node {node}"),
    ("gc_pause_ms", "above", GC_PAUSE_MS, "GC pause VALUE ms in a second on node {node}"),
    ("under_replicated", "above", 0.0, "VALUE under-replicated partition(s) on node {node}"),
    ("slow_consumers", "above", 0.0, "VALUE slow consumer(s) marked by node {node}"),
)


def broker_evidence(
    telemetry: BrokerTelemetry | None, series: TimeSeries, start_s: float, end_s: float
) -> list[str]:
    """Short phrases, worst first, of what the broker did from start_s to end_s."""
    if telemetry is None:
        return []
    windows = [
        i
        for i, begin in enumerate(series.start_s)
        if begin + series.seconds[i] > start_s - MARGIN_S and begin < end_s
    ]
    found: list[str] = []
    for node in telemetry.nodes:
        for signal, side, threshold, what in CITED:
            values = node.signals.get(signal)
            if values is not None:
                phrase = what.format(node=node.node)
                found += _stretch(values, windows, series, side, threshold, phrase)
    found += [
        f"{event.text} at {num(event.at_s)} s"
        for event in telemetry.events
        if start_s - MARGIN_S <= event.at_s <= end_s + MARGIN_S
    ]
    return found


def _stretch(
    values: Sequence[float | None],
    windows: Sequence[int],
    series: TimeSeries,
    side: Literal["below", "above"],
    threshold: float,
    what: str,
) -> list[str]:
    """One phrase for the windows where the signal is past its threshold: the worst figure,
    from when to when."""
    past = [
        (i, v)
        for i in windows
        if i < len(values)
        and (v := values[i]) is not None
        and (v < threshold if side == "below" else v > threshold)
    ]
    if not past:
        return []
    worst = (min if side == "below" else max)(v for _, v in past)
    begin = series.start_s[past[0][0]]
    end = series.start_s[past[-1][0]] + series.seconds[past[-1][0]]
    return [f"{what.replace('VALUE', num(worst))} from {num(begin)} s to {num(end)} s"]
