"""Trial results grouped per (broker, variant, scenario) cell: what every comparison starts from."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from runner.analysis import statistics as st
from schemas.metrics import METRICS, metric_info
from schemas.report import CellKey, MetricMeta
from schemas.results import TrialResult

CellTuple = tuple[str, str, str]
Samples = dict[CellTuple, dict[str, list[float]]]


def cell_key(cell: CellTuple) -> CellKey:
    return CellKey(broker=cell[0], variant=cell[1], scenario=cell[2])


def cell_tuple(key: CellKey) -> CellTuple:
    return key.broker, key.variant, key.scenario


def metric_order(names: Iterable[str]) -> list[str]:
    """Registry order first (a stable, meaningful order), then unknown names sorted."""
    present = set(names)
    known = [name for name in METRICS if name in present]
    return known + sorted(present - set(METRICS))


def metric_meta(name: str) -> MetricMeta:
    info = metric_info(name)
    return MetricMeta(name=name, label=info.label, unit=info.unit, better=info.better)


def measured(trials: Iterable[TrialResult]) -> list[TrialResult]:
    """The trials behind the figures: not warm-up, not failed, not a step of a capacity search
    (a search counts once per repetition, by its result record)."""
    return [t for t in trials if not t.warmup and t.status == "ok" and not t.search_step]


def cell_samples(trials: Iterable[TrialResult]) -> Samples:
    """Per (broker, variant, scenario): every metric's values over the measured trials."""
    samples: Samples = defaultdict(lambda: defaultdict(list))
    for trial in measured(trials):
        for name, value in trial.metrics.flat().items():
            if math.isfinite(value):
                samples[trial.broker, trial.variant, trial.scenario][name].append(value)
    return samples


def positive_pairs(
    pairs: Iterable[tuple[float | None, float | None]],
) -> list[tuple[float, float]]:
    """Pairs with both sides positive: the only ones a ratio, hence a geomean, can use."""
    return [(a, b) for a, b in pairs if a is not None and b is not None and a > 0 and b > 0]


def geomean_change(
    pairs: Sequence[tuple[float, float]],
) -> tuple[float | None, float | None, float | None]:
    old = st.geometric_mean(a for a, _ in pairs)
    new = st.geometric_mean(b for _, b in pairs)
    change = (new / old - 1) * 100 if old and new else None
    return old, new, change
