"""The series a store holds, as `exprun history` asks for them: filtered, with change points, and
the CI gate's verdict on the newest runs."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from runner.analysis.statistics import adjust_p_values
from runner.errors import BadInputError
from runner.history.changes import Step, change_points, recent_step
from runner.history.store import SERIES_KEY, SeriesKey, Store
from schemas.history import ChangePoint, History, Point, Series
from schemas.metrics import metric_info
from schemas.spec import Correction


@dataclass(frozen=True)
class SeriesFilter:
    """Which series: each field equal to its value (None: any); metrics: any of them."""

    spec_name: str | None = None
    testbed: str | None = None
    broker: str | None = None
    variant: str | None = None
    scenario: str | None = None
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateFinding:
    """A series whose newest runs stepped: what the CI gate looks at."""

    series: Series
    change: ChangePoint


def matching_series(store: Store, chosen: SeriesFilter) -> list[SeriesKey]:
    """The store's series that match; an unknown name is a BadInputError with a did-you-mean."""
    every = store.series_keys()
    found = list(every)
    for field in SERIES_KEY:
        wanted = chosen.metrics if field == "metric" else (getattr(chosen, field),)
        wanted = tuple(w for w in wanted if w is not None)
        if not wanted:
            continue
        known = list(dict.fromkeys(getattr(key, field) for key in found))
        for value in wanted:
            if value not in known:
                raise BadInputError(_unknown(field, value, known, store))
        found = [key for key in found if getattr(key, field) in wanted]
    return found


def _unknown(field: str, value: str, known: Sequence[str], store: Store) -> str:
    what = {"spec_name": "spec"}.get(field, field)
    close = difflib.get_close_matches(value, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(map(repr, known[:8])) + (", ..." if len(known) > 8 else "")
    where = f" (known: {listed})" if known else " (the store has no runs yet)"
    return f"no {what} {value!r} in the store {store.location.shown}{hint}{where}"


def load_history(
    store: Store, keys: Sequence[SeriesKey], *, last: int | None = None, alpha: float = 0.01
) -> History:
    """The series with the change points found in each at `alpha` (per series)."""
    series = []
    for key in keys:
        points = store.points(key, last)
        trials = _trials(points)
        found = change_points(trials, alpha=alpha)
        # Each step shown between its neighbours: the segments the series falls into.
        edges = [0, *(step.index for step in found), len(trials)]
        shown = _series(key, points, [])
        changes = [
            _change_of(shown, replace(step, start=edges[i], end=edges[i + 2]), step.p_value)
            for i, step in enumerate(found)
        ]
        series.append(shown.model_copy(update={"changes": changes}))
    return History(store=store.location.shown, series=series)


def gate(
    store: Store,
    keys: Sequence[SeriesKey],
    *,
    threshold_pct: float,
    window: int,
    last: int | None = None,
    alpha: float = 0.05,
    correction: Correction = "holm",
) -> tuple[list[GateFinding], int]:
    """Regressions of at least `threshold_pct` among the newest `window` runs of each series,
    significant after correcting across every series looked at; and how many were looked at."""
    tested: list[tuple[Series, Step]] = []
    for key in keys:
        points = store.points(key, last)
        step = recent_step(_trials(points), window)
        if step is not None:
            tested.append((_series(key, points, []), step))
    adjusted = adjust_p_values([step.p_value for _, step in tested], correction)
    findings = []
    for (series, step), p_adjusted in zip(tested, adjusted, strict=True):
        assert p_adjusted is not None
        change = _change_of(series, step, p_adjusted)
        big = change.change_pct is not None and abs(change.change_pct) >= threshold_pct
        if p_adjusted < alpha and change.regression and big:
            findings.append(GateFinding(series, change))
    return findings, len(keys)


def _trials(points: Sequence[Point]) -> list[list[float]]:
    """Each point's trial values (its median alone where trials were not kept)."""
    return [
        list(p.trials) if p.trials else ([p.median] if p.median is not None else [])
        for p in points
        if p.trials or p.median is not None
    ]


def _series(key: SeriesKey, points: list[Point], changes: list[ChangePoint]) -> Series:
    info = metric_info(key.metric)
    return Series(
        spec=key.spec_name,
        testbed=key.testbed,
        broker=key.broker,
        variant=key.variant,
        scenario=key.scenario,
        metric=key.metric,
        label=info.label,
        unit=info.unit,
        better=info.better,
        points=points,
        changes=changes,
    )


def _change_of(series: Series, step: Step, p_adjusted: float) -> ChangePoint:
    """A step as the report shows it: the runs around it, medians and direction."""
    usable = [p for p in series.points if p.trials or p.median is not None]
    before, after = usable[step.index - 1], usable[step.index]
    # The medians on either side, between the steps next to this one.
    medians_before = [p.median for p in usable[step.start : step.index] if p.median is not None]
    medians_after = [p.median for p in usable[step.index : step.end] if p.median is not None]
    median_before = _median(medians_before) if medians_before else step.before
    median_after = _median(medians_after) if medians_after else step.after
    change = (median_after / median_before - 1) * 100 if median_before else None
    worse = {"higher": median_after < median_before, "lower": median_after > median_before}
    return ChangePoint(
        index=series.points.index(after),
        run_before=before.run_key,
        run_after=after.run_key,
        commit_before=before.commit or before.spec_commit,
        commit_after=after.commit or after.spec_commit,
        median_before=median_before,
        median_after=median_after,
        change_pct=round(change, 3) if change is not None else None,
        p_value=step.p_value,
        p_adjusted=p_adjusted,
        regression=worse.get(series.better or "", False),
        settings_changed=after.settings_changed,
    )


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
