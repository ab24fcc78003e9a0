"""Latency histograms (HdrHistogram, microsecond resolution) summarised in milliseconds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hdrh.histogram import HdrHistogram

from schemas.results import LatencySummary

LOWEST_US = 1
HIGHEST_US = 3600 * 1_000_000  # one hour: anything slower is clamped, never dropped
SIGNIFICANT_DIGITS = 3
# An HdrHistogram of 3 significant digits has 2048 sub-buckets: a value of n > 11 bits shares its
# bucket with every value equal to it in the top 11 bits.
SUB_BUCKET_BITS = 11


class LatencyRecorder:
    """Counts per HdrHistogram bucket, in a dict keyed by the bucket's lowest value.

    Recording costs ~0.2 us (hdrh's pure-Python record_value: ~1-3 us, twice per message, on
    the same event loop as the clients it measures); memory stays bounded by the bucket count.
    `histogram()` gives exactly the HdrHistogram that recording each value would have built.
    """

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def record_ns(self, elapsed_ns: int) -> None:
        micros = elapsed_ns // 1000
        if micros < LOWEST_US:
            micros = LOWEST_US
        elif micros > HIGHEST_US:
            micros = HIGHEST_US
        shift = micros.bit_length() - SUB_BUCKET_BITS
        if shift > 0:
            micros = micros >> shift << shift
        counts = self.counts
        counts[micros] = counts.get(micros, 0) + 1

    def record_all_ns(self, elapsed: Iterable[int]) -> None:
        """record_ns of each value, its rule inlined: a call per value would cost what a
        batch saves."""
        counts = self.counts
        for elapsed_ns in elapsed:
            micros = elapsed_ns // 1000
            if micros < LOWEST_US:
                micros = LOWEST_US
            elif micros > HIGHEST_US:
                micros = HIGHEST_US
            shift = micros.bit_length() - SUB_BUCKET_BITS
            if shift > 0:
                micros = micros >> shift << shift
            counts[micros] = counts.get(micros, 0) + 1

    def add_counts(self, counts: dict[int, int]) -> None:
        """Fold in another recorder's counts (e.g. kept in another process)."""
        mine = self.counts
        for value, count in counts.items():
            mine[value] = mine.get(value, 0) + count

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def histogram(self) -> HdrHistogram:
        return _histogram([self])


def record_by_send_time(
    stamps: Sequence[tuple[int, int]],
    answered_ns: Sequence[int],
    start_ns: int,
    measured: LatencyRecorder,
    ramp: LatencyRecorder,
) -> int:
    """The latency of each (seq, send ns), answered at its time in `answered_ns`: in `measured`
    if it was sent at `start_ns` or later, else in `ramp`; returns how many went to `measured`."""
    pairs = zip(stamps, answered_ns, strict=True)
    elapsed = [now - send_ns for (_, send_ns), now in pairs if send_ns >= start_ns]
    measured.record_all_ns(elapsed)
    if len(elapsed) < len(stamps):
        pairs = zip(stamps, answered_ns, strict=True)
        ramp.record_all_ns([now - send_ns for (_, send_ns), now in pairs if send_ns < start_ns])
    return len(elapsed)


def _histogram(recorders: Iterable[LatencyRecorder]) -> HdrHistogram:
    merged = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for recorder in recorders:
        for value, count in recorder.counts.items():
            merged.record_value(value, count)
    return merged


def summarise(recorders: Iterable[LatencyRecorder]) -> LatencySummary:
    """One summary over several recorders (e.g. one per producer)."""
    merged = _histogram(recorders)
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


def percentile_ms(counts: dict[int, int], percentile: float) -> float | None:
    """The value at `percentile` of bucket counts, in ms, as HdrHistogram computes it.

    HdrHistogram's own lookup walks every one of its ~23,000 buckets in Python (milliseconds
    per call); the time series needs two percentiles a second on the trial's event loop, so
    this walks only the buckets in use. Same rule: the first bucket whose running count
    reaches the target, reported as the highest value equivalent to it.
    """
    total = sum(counts.values())
    if total == 0:
        return None
    target = max(int(min(percentile, 100.0) * total / 100 + 0.5), 1)
    running = 0
    for lowest in sorted(counts):
        running += counts[lowest]
        if running >= target:
            width = 1 << max(0, lowest.bit_length() - SUB_BUCKET_BITS)
            value = lowest + width - 1 if percentile else lowest
            return round(value / 1000.0, 4)
    return None
