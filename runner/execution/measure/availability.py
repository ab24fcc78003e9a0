"""What a fault cost the producers: how long no publish was acked, and when throughput came back.

Acks are counted in 10 ms buckets from the start of the measured phase (only in trials with
faults); the figures are pure functions of those counts.
"""

from __future__ import annotations

import statistics
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BUCKET_NS = 10_000_000
# Throughput is judged over sliding windows of this many buckets (1 s).
WINDOW_BUCKETS = 100
# Pre-fault windows are taken every this many buckets (100 ms) for the median.
BASELINE_STEP = 10
RECOVERED_SHARE = 0.9


class AckTimeline:
    """Acks per 10 ms bucket since `origin_ns`."""

    def __init__(self, origin_ns: int, counts: Iterable[int] = ()) -> None:
        self.origin_ns = origin_ns
        self.counts = array("I", counts)

    @classmethod
    def of_bytes(cls, data: bytes, origin_ns: int = 0) -> AckTimeline:
        timeline = cls(origin_ns)
        timeline.counts.frombytes(data)
        return timeline

    def add(self, at_ns: int) -> None:
        index = max(0, (at_ns - self.origin_ns) // BUCKET_NS)
        counts = self.counts
        if index >= len(counts):
            counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1

    def merge(self, counts: Sequence[int]) -> None:
        """Add another producer's buckets (same origin)."""
        if len(counts) > len(self.counts):
            self.counts.extend([0] * (len(counts) - len(self.counts)))
        for index, count in enumerate(counts):
            self.counts[index] += count

    def bucket_of(self, at_ns: int) -> int:
        return max(0, (at_ns - self.origin_ns) // BUCKET_NS)


@dataclass(frozen=True)
class Silence:
    """The longest stretch without a single publish acked."""

    seconds: float
    start_s: float  # into the measured phase


def longest_silence(counts: Sequence[int], until: int | None = None) -> Silence | None:
    """Longest run of empty buckets after the first ack, up to the last ack (or `until`, the
    bucket where publishing ended, when no ack came after a silence)."""
    acked = [index for index, count in enumerate(counts) if count]
    if not acked:
        return None
    end = max(acked[-1], until if until is not None else 0)
    best_length, best_start, run_start = 0, acked[0], None
    for index in range(acked[0], end + 1):
        empty = index >= len(counts) or not counts[index]
        if empty and run_start is None:
            run_start = index
        elif not empty and run_start is not None:
            if index - run_start > best_length:
                best_length, best_start = index - run_start, run_start
            run_start = None
    if run_start is not None and end + 1 - run_start > best_length:
        best_length, best_start = end + 1 - run_start, run_start
    return Silence(best_length * BUCKET_NS / 1e9, best_start * BUCKET_NS / 1e9)


@dataclass(frozen=True)
class Recovery:
    """How long acked throughput took to come back after a fault, or why it cannot be said."""

    seconds: float | None
    why_not: str | None = None


def recovery(
    counts: Sequence[int], fault: int, measured_from: int = 0, end: int | None = None
) -> Recovery:
    """Seconds from the fault's bucket until acked throughput is back to 90% of its median
    before the fault; `end` is the bucket where publishing ended, if after the last ack.

    Back means: the second from that moment carries 90% of the usual acks, and so does its
    first tenth (a window that opens on a silence and holds the catch-up burst after it is
    not back yet: the moment the acks resumed is). No bucket counts for more than the busiest
    one before the fault, so a burst of retried messages cannot make up for a second that is
    not back.
    """
    starts = range(measured_from, fault - WINDOW_BUCKETS + 1, BASELINE_STEP)
    before_fault = counts[measured_from:fault]
    ceiling = max(before_fault, default=0)
    clipped = [min(count, ceiling) for count in counts]
    prefix = [0]
    for count in clipped:
        prefix.append(prefix[-1] + count)

    def acked(start: int, length: int) -> int:
        return prefix[min(start + length, len(clipped))] - prefix[min(start, len(clipped))]

    before = [acked(start, WINDOW_BUCKETS) for start in starts]
    if not before:
        return Recovery(None, "no full second of publishing before the fault to compare with")
    target = RECOVERED_SHARE * statistics.median(before)
    if target <= 0:
        why = "no acked throughput to compare with: most seconds before the fault had none"
        return Recovery(None, why)
    tenth = WINDOW_BUCKETS // 10
    for start in range(fault, len(clipped) - WINDOW_BUCKETS + 1):
        if acked(start, WINDOW_BUCKETS) >= target and acked(start, tenth) * 10 >= target:
            return Recovery((start - fault) * BUCKET_NS / 1e9)
    last = max(len(counts), end or 0)
    span = max(0, last - fault) * BUCKET_NS / 1e9
    return Recovery(None, f"not recovered within {span:.1f} s of the fault (publishing ended)")
