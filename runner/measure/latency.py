"""Latency histograms (HdrHistogram, microsecond resolution) summarised in milliseconds."""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

from schemas.results import LatencySummary

LOWEST_US = 1
HIGHEST_US = 3600 * 1_000_000  # one hour: anything slower is clamped, never dropped
SIGNIFICANT_DIGITS = 3


class LatencyRecorder:
    """Fixed-size histogram: recording costs the same at message 10 and message 10 million."""

    def __init__(self) -> None:
        self.histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_ns(self, elapsed_ns: int) -> None:
        micros = elapsed_ns // 1000
        self.histogram.record_value(min(max(micros, LOWEST_US), HIGHEST_US))

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())


def summarise(recorders: Iterable[LatencyRecorder]) -> LatencySummary:
    """One summary over several recorders (e.g. one per producer)."""
    merged = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for recorder in recorders:
        merged.add(recorder.histogram)
    count = int(merged.get_total_count())
    if count == 0:
        return LatencySummary()

    def ms(micros: float) -> float:
        return round(micros / 1000.0, 4)

    return LatencySummary(
        p50=ms(merged.get_value_at_percentile(50.0)),
        p90=ms(merged.get_value_at_percentile(90.0)),
        p99=ms(merged.get_value_at_percentile(99.0)),
        p999=ms(merged.get_value_at_percentile(99.9)),
        max=ms(merged.get_max_value()),
        mean=ms(merged.get_mean_value()),
        count=count,
    )
