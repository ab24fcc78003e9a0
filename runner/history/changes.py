"""Change points of a series: where its level stepped, tested with every trial's value.

Each run counts by the mean of its measured trials (on a log scale when every value is
positive, so that a step is a ratio whatever the level): the mean of five trials keeps what a
median of five throws away. Runs, not trials, are the independent units: trials of one run
share its machine, broker start and hour, so pooling them as if independent would call run-
to-run noise a change. A step is found by the scan that is the statistical limit for one step
in Gaussian noise: the split that maximises the two-sample t statistic of the run means on its
two sides. Its p-value is the tail probability of that maximum with no step, simulated per
series length (the statistic does not depend on the noise level), so the many splits a scan
tries cost it no false alarms. Binary segmentation looks for further steps on either side.

Pure functions over numbers; the null distributions are cached per shape, with a fixed seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MIN_SIZE = 3  # runs on each side of a step: fewer cannot tell a step from one bad run
SIMULATIONS = 20_000  # per null distribution: p-values down to 5e-5
SIM_CELLS = 4_000_000  # simulated values per batch (memory bound)
SEED = 20_260_101


@dataclass(frozen=True)
class Step:
    """A change point: the first run after it, its significance, and the runs it was tested
    between (start to end, the step at index)."""

    index: int
    p_value: float
    before: float  # mean of the runs' levels on each side (the series' own scale)
    after: float
    start: int
    end: int


def run_levels(trials_per_run: Sequence[Sequence[float]]) -> tuple[np.ndarray, bool]:
    """Each run's level: the mean of its trials, as logs when every value is positive."""
    means = np.array([math.fsum(trials) / len(trials) for trials in trials_per_run], dtype=float)
    logged = bool(len(means)) and bool(np.all(means > 0))
    return (np.log(means) if logged else means), logged


def change_points(
    trials_per_run: Sequence[Sequence[float]], alpha: float = 0.01, min_size: int = MIN_SIZE
) -> list[Step]:
    """Every step found at `alpha` (binary segmentation), oldest first."""
    levels, logged = run_levels(trials_per_run)
    found: list[Step] = []
    _segment(levels, 0, len(levels), alpha, min_size, logged, found)
    return sorted(found, key=lambda step: step.index)


def _segment(
    levels: np.ndarray,
    start: int,
    end: int,
    alpha: float,
    min_size: int,
    logged: bool,
    found: list[Step],
) -> None:
    step = best_split(levels[start:end], min_size, logged)
    if step is None or step.p_value >= alpha:
        return
    index = start + step.index
    found.append(Step(index, step.p_value, step.before, step.after, start, end))
    _segment(levels, start, index, alpha, min_size, logged, found)
    _segment(levels, index, end, alpha, min_size, logged, found)


def recent_step(
    trials_per_run: Sequence[Sequence[float]],
    window: int,
    min_size: int = MIN_SIZE,
    alpha: float = 0.01,
) -> Step | None:
    """The most significant step among the newest `window` runs, against the runs since the
    last step before them (found at `alpha`); its p-value counts only the splits it could have
    been, so a CI gate that asks about the newest runs alone gets the power of asking that."""
    levels, logged = run_levels(trials_per_run)
    n = len(levels)
    since = 0
    segments: list[Step] = []
    _segment(levels, 0, n, alpha, min_size, logged, segments)
    for step in segments:
        if step.index <= n - window:
            since = max(since, step.index)
    tail = levels[since:]
    found = best_split(tail, min_size, logged, first=max(min_size, len(tail) - window))
    if found is None:
        return None
    return Step(since + found.index, found.p_value, found.before, found.after, since, n)


def best_split(
    levels: np.ndarray, min_size: int, logged: bool, first: int | None = None
) -> Step | None:
    """The split with the largest |t| (from `first` on), with its scan p-value."""
    n = len(levels)
    lowest = max(min_size, first or 0)
    highest = n - min_size
    if highest < lowest or n < 2 * min_size:
        return None
    t = _split_t(levels[np.newaxis, :], lowest, highest)[0]
    if not np.all(np.isfinite(t)):
        t = np.nan_to_num(t, nan=0.0, posinf=np.inf)
    best = int(np.argmax(np.abs(t)))
    observed = float(abs(t[best]))
    null = _null_maxima(n, lowest, highest)
    p_value = (1 + int(np.searchsorted(-null, -observed, side="right"))) / (len(null) + 1)
    if math.isinf(observed):
        p_value = 1 / (len(null) + 1)
    index = lowest + best
    before, after = float(levels[:index].mean()), float(levels[index:].mean())
    if logged:
        before, after = math.exp(before), math.exp(after)
    return Step(index, p_value, before, after, 0, n)


def _split_t(x: np.ndarray, lowest: int, highest: int) -> np.ndarray:
    """Pooled two-sample t of every split k in [lowest, highest], for each row of x."""
    n = x.shape[1]
    # Measured from each row's first value (t does not change): a constant row is all zeros,
    # with no rounding left to read as a step.
    x = x - x[:, :1]
    cumsum = np.cumsum(x, axis=1)
    cumsq = np.cumsum(x * x, axis=1)
    total, total_sq = cumsum[:, -1:], cumsq[:, -1:]
    k = np.arange(lowest, highest + 1)
    left_sum, left_sq = cumsum[:, k - 1], cumsq[:, k - 1]
    right_sum, right_sq = total - left_sum, total_sq - left_sq
    left_mean, right_mean = left_sum / k, right_sum / (n - k)
    residual = (left_sq - k * left_mean**2) + (right_sq - (n - k) * right_mean**2)
    variance = np.maximum(residual, 0.0) / (n - 2)
    scale = np.sqrt(variance * (1.0 / k + 1.0 / (n - k)))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (right_mean - left_mean) / scale
    # A flat segment (no variance at all) with a different level is as clear as it gets.
    return np.where(scale > 0, t, np.where(right_mean != left_mean, np.inf, 0.0))


@lru_cache(maxsize=256)
def _null_maxima(n: int, lowest: int, highest: int) -> np.ndarray:
    """max |t| over the same splits of `n` independent Gaussian values, sorted descending."""
    rng = np.random.default_rng(SEED + n * 1_000_003 + lowest * 1009 + highest)
    batch = max(1, SIM_CELLS // n)
    maxima = []
    left = SIMULATIONS
    while left > 0:
        size = min(batch, left)
        x = rng.standard_normal((size, n))
        maxima.append(np.max(np.abs(_split_t(x, lowest, highest)), axis=1))
        left -= size
    return -np.sort(-np.concatenate(maxima))
