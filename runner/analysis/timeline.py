"""Within one trial: does throughput sag, or does p99 climb steadily? (Pure, over a TimeSeries.)

Only the windows that measure the load are judged: after the ramp, while producers were still
publishing, and whole (a last short window says little). A sag is a run of at least two such
windows below half the trial's median windowed throughput; a climb is p99 rising with time
(rank correlation 0.8 or more) to at least twice where it started.
"""

from __future__ import annotations

import statistics as pystats
from dataclasses import dataclass

from scipy import stats as sps

from schemas.results import TimeSeries

MIN_WINDOWS = 5  # fewer judged windows than this: too short a trial to speak of a trend
SAG_FACTOR = 0.5
SAG_WINDOWS = 2
CLIMB_CORRELATION = 0.8
CLIMB_FACTOR = 2.0
WHOLE_WINDOW_S = 0.9


@dataclass(frozen=True)
class Window:
    start_s: float
    seconds: float
    throughput: float
    p99_ms: float | None


@dataclass(frozen=True)
class Sag:
    start_s: float
    end_s: float
    lowest: float  # msg/s, the lowest window of the run
    median: float  # msg/s, the trial's median window


@dataclass(frozen=True)
class Climb:
    start_s: float
    end_s: float
    first_ms: float
    last_ms: float
    correlation: float


def judged_windows(series: TimeSeries, ramp_s: float) -> list[Window]:
    """Whole windows after the ramp in which producers were publishing."""
    found = []
    for i, start in enumerate(series.start_s):
        seconds = series.seconds[i]
        if start + 1e-6 < ramp_s or seconds < WHOLE_WINDOW_S or series.published[i] == 0:
            continue
        throughput = series.received[i] / seconds
        found.append(Window(start, seconds, throughput, series.latency_p99_ms[i]))
    return found


def find_sag(windows: list[Window]) -> Sag | None:
    """The longest run of windows below half the median throughput (two windows or more)."""
    if len(windows) < MIN_WINDOWS:
        return None
    median = pystats.median(w.throughput for w in windows)
    best: list[Window] = []
    run: list[Window] = []
    for window in windows:
        if window.throughput < SAG_FACTOR * median:
            run.append(window)
            if len(run) > len(best):
                best = list(run)
        else:
            run = []
    if len(best) < SAG_WINDOWS or median <= 0:
        return None
    end = best[-1].start_s + best[-1].seconds
    return Sag(best[0].start_s, end, min(w.throughput for w in best), median)


def find_climb(windows: list[Window]) -> Climb | None:
    """p99 rising steadily through the trial, to at least twice its start."""
    points = [(w.start_s, w.p99_ms) for w in windows if w.p99_ms is not None]
    if len(points) < MIN_WINDOWS:
        return None
    times, values = zip(*points, strict=True)
    if len(set(values)) == 1:
        return None  # a constant p99 does not climb (and has no rank correlation)
    correlation = float(sps.spearmanr(times, values).statistic)
    third = max(1, len(values) // 3)
    first, last = pystats.median(values[:third]), pystats.median(values[-third:])
    if correlation < CLIMB_CORRELATION or first <= 0 or last < CLIMB_FACTOR * first:
        return None
    end = windows[-1].start_s + windows[-1].seconds
    return Climb(times[0], end, first, last, correlation)
