"""Two runs (or two variants of one run) compared cell by cell, with the environment's changes."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from runner.analysis import statistics as st
from runner.analysis.cells import (
    CellTuple,
    Samples,
    cell_key,
    cell_samples,
    cell_tuple,
    geomean_change,
    metric_meta,
    metric_order,
    positive_pairs,
)
from runner.errors import BadInputError
from schemas.metrics import metric_info
from schemas.report import (
    Diff,
    DiffGeomean,
    DiffRow,
    EnvironmentDifference,
    Report,
    StatisticsSettings,
)

# What can make two runs' figures differ besides the spec (keys of environment.json).
_RELEVANT_ENVIRONMENT = re.compile(
    r"^(exprun(_version)?|python|clients\..+|brokers\.[^.]+\.(version|type)"
    r"|load_generators\.(engine|hosts|processes)|(machine\.)?(cpu\w*|memory\w*))$"
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def environment_differences(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[EnvironmentDifference]:
    """Differences in what matters: CPU, memory, broker/client/Python/exprun versions, and the
    load generators (hosts, processes per trial)."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if not _RELEVANT_ENVIRONMENT.match(key) or a.get(key) == b.get(key):
            continue
        if key not in a or key not in b:
            continue  # a field one side did not record is not evidence of a difference
        out.append(
            EnvironmentDifference(
                key=key,
                old=None if a[key] is None else str(a[key]),
                new=None if b[key] is None else str(b[key]),
            )
        )
    return out


def diff(
    old: Report,
    new: Report,
    *,
    old_label: str,
    new_label: str,
    variants: tuple[str, str] | None = None,
    metrics: Sequence[str] = (),
    fail_on_regression_pct: float | None = None,
    settings: StatisticsSettings | None = None,
) -> Diff:
    """Compare two runs cell by cell (or, with `variants`, two variants of `old` == `new`).

    `settings` (alpha, noise threshold, correction) default to the new run's. Raises
    BadInputError when nothing can be matched, or a chosen metric/variant is unknown.
    """
    old_samples, new_samples = cell_samples(old.trials), cell_samples(new.trials)
    warnings: list[str] = []
    pairs = _match_cells(old, new, old_samples, new_samples, variants, warnings)
    available = {n for o, w in pairs for n in (*old_samples[o], *new_samples[w])}
    chosen = _chosen_metrics(metrics, available)
    settings = settings or new.statistics
    rows = _rows(chosen, pairs, old_samples, new_samples, settings)
    warnings += _run_warnings(old, new, old_label, new_label, variants)
    regressions = []
    if fail_on_regression_pct is not None:
        regressions = [r for r in rows if _regression(r, fail_on_regression_pct)]
    return Diff(
        old=old_label,
        new=new_label,
        metrics=[metric_meta(m) for m in chosen],
        rows=rows,
        geomeans=[_geomean(metric, rows) for metric in chosen],
        environment_differences=(
            [] if variants else environment_differences(old.environment, new.environment)
        ),
        warnings=warnings,
        statistics=settings,
        fail_on_regression_pct=fail_on_regression_pct,
        regressions=regressions,
    )


def _chosen_metrics(metrics: Sequence[str], available: set[str]) -> list[str]:
    """The metrics asked for (each must have been measured), or every one with a direction."""
    if not metrics:
        return [n for n in metric_order(available) if metric_info(n).better is not None]
    unknown = [m for m in metrics if m not in available]
    if unknown:
        close = difflib.get_close_matches(unknown[0], available, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see results.json for the names"
        raise BadInputError(f"--metric {', '.join(unknown)}: not measured in these runs; {hint}")
    return list(dict.fromkeys(metrics))


def _rows(
    metrics: Sequence[str],
    pairs: Sequence[tuple[CellTuple, CellTuple]],
    old_samples: Samples,
    new_samples: Samples,
    settings: StatisticsSettings,
) -> list[DiffRow]:
    """Every metric of every matched cell pair, tested as one family."""
    compared = [
        (metric, o, w, old_samples[o].get(metric, []), new_samples[w].get(metric, []))
        for metric in metrics
        for o, w in pairs
        if old_samples[o].get(metric) or new_samples[w].get(metric)
    ]
    results = st.compare_family(
        [(a, b, metric_info(metric).better) for metric, _, _, a, b in compared],
        alpha=settings.alpha,
        noise_pct=settings.noise_threshold_pct,
        correction=settings.correction,
    )
    return [
        DiffRow(
            metric=metric,
            old=cell_key(o),
            new=cell_key(w),
            n_old=result.n_baseline,
            n_new=result.n_candidate,
            old_median=result.baseline_median,
            new_median=result.candidate_median,
            change_pct=result.change_pct,
            delta=result.delta,
            test=result.test,
            p_value=result.p_value,
            p_adjusted=result.p_adjusted,
            significant=result.significant,
            verdict=result.verdict,
            note=result.note,
        )
        for (metric, o, w, _, _), result in zip(compared, results, strict=True)
    ]


def _run_warnings(
    old: Report, new: Report, old_label: str, new_label: str, variants: tuple[str, str] | None
) -> list[str]:
    """What makes the two sides less comparable than they look: other specs, partial runs."""
    warnings = []
    if old.spec.name != new.spec.name:
        warnings.append(f"different specs: {old.spec.name!r} vs {new.spec.name!r}")
    for label, report in ((old_label, old), (new_label, new)):
        if report.partial and (variants is None or report is old):
            warnings.append(f"{label} is a partial run (interrupted or incomplete)")
    return warnings


def _regression(row: DiffRow, pct: float) -> bool:
    if not row.significant or row.verdict != "worse":
        return False
    # From a zero baseline (e.g. 0 -> 2 leaked threads) any significant rise is beyond PCT.
    return row.change_pct is None or abs(row.change_pct) > pct


def _geomean(metric: str, rows: Sequence[DiffRow]) -> DiffGeomean:
    both = positive_pairs((r.old_median, r.new_median) for r in rows if r.metric == metric)
    old, new, change = geomean_change(both)
    return DiffGeomean(metric=metric, cells=len(both), old=old, new=new, change_pct=change)


def _match_cells(
    old: Report,
    new: Report,
    old_samples: Samples,
    new_samples: Samples,
    variants: tuple[str, str] | None,
    warnings: list[str],
) -> list[tuple[CellTuple, CellTuple]]:
    old_cells = [c for c in _cells(old) if c in old_samples]
    new_cells = [c for c in _cells(new) if c in new_samples]
    if variants is not None:
        a, b = variants
        for name in (a, b):
            if name not in new.variants:
                raise BadInputError(
                    f"--variants: no variant {name!r} in the run "
                    f"(it has: {', '.join(new.variants)})"
                )
        pairs = [
            (o, (o[0], b, o[2])) for o in old_cells if o[1] == a and (o[0], b, o[2]) in new_cells
        ]
        if not pairs:
            raise BadInputError(f"variants {a!r} and {b!r} share no measured broker/scenario cell")
        return pairs
    pairs = [(c, c) for c in old_cells if c in new_cells]
    if not pairs and len(old.variants) == 1 and len(new.variants) == 1:
        # One variant each under different names (e.g. renamed): match broker and scenario.
        pairs = [(o, w) for o in old_cells for w in new_cells if (o[0], o[2]) == (w[0], w[2])]
        if pairs:
            warnings.append(
                f"variants matched by position: {old.variants[0]!r} (old) vs "
                f"{new.variants[0]!r} (new)"
            )
    if not pairs:
        raise BadInputError(
            "incompatible runs: no measured (broker, variant, scenario) cell in common; old has "
            f"{_describe(old_cells)}, new has {_describe(new_cells)}"
        )
    only_old = [c for c in old_cells if c not in {o for o, _ in pairs}]
    only_new = [c for c in new_cells if c not in {w for _, w in pairs}]
    for label, cells in (("old", only_old), ("new", only_new)):
        if cells:
            warnings.append(
                f"{len(cells)} cell(s) only in the {label} run, not compared: "
                + ", ".join("/".join(c) for c in cells[:6])
                + (", ..." if len(cells) > 6 else "")
            )
    return pairs


def _cells(report: Report) -> list[CellTuple]:
    return [cell_tuple(c.cell) for c in report.cells]


def _describe(cells: Sequence[CellTuple]) -> str:
    if not cells:
        return "no measured cells"
    brokers = ", ".join(dict.fromkeys(c[0] for c in cells))
    variants = ", ".join(dict.fromkeys(c[1] for c in cells))
    scenarios = ", ".join(dict.fromkeys(c[2] for c in cells))
    return f"brokers {brokers}; variants {variants}; scenarios {scenarios}"
