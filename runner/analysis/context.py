"""What every part of a run's analysis looks up: the spec, cell settings, samples, summaries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from runner.analysis import statistics as st
from runner.analysis.cells import CellTuple, cell_key, cell_samples, metric_order
from schemas.metrics import metric_info
from schemas.report import Comparison, StatisticsSettings
from schemas.resolve import CellConfig, resolve_cells
from schemas.results import TrialResult
from schemas.spec import Experiment


class AnalysisContext:
    """What every part of the analysis needs: spec, settings lookups, cell figures."""

    def __init__(
        self,
        spec: Experiment,
        trials: Sequence[TrialResult],
        cells: Sequence[CellConfig] | None,
        settings: StatisticsSettings,
    ) -> None:
        self.spec = spec
        self.trials = trials
        self.settings = settings
        if cells is None:
            # The spec dumped as JSON validates again (units are written back as text).
            cells = resolve_cells(spec, spec.model_dump(mode="json", exclude_unset=True))
        self.configs = {(c.cell.broker, c.cell.variant, c.cell.scenario): c for c in cells}
        self.brokers = _ordered((t.broker for t in trials), spec.brokers)
        self.variants = _ordered((t.variant for t in trials), spec.variant_names)
        self.scenarios = _ordered((t.scenario for t in trials), spec.scenarios)
        self.samples = cell_samples(trials)
        self.by_cell: dict[CellTuple, list[TrialResult]] = defaultdict(list)
        for trial in trials:
            self.by_cell[trial.broker, trial.variant, trial.scenario].append(trial)
        self.summaries = {
            key: {name: st.summarize(values) for name, values in metrics.items()}
            for key, metrics in self.samples.items()
        }

    def cell_keys(self) -> list[CellTuple]:
        """Cells with at least one recorded trial, in spec order."""
        return [
            (b, v, s)
            for b in self.brokers
            for v in self.variants
            for s in self.scenarios
            if (b, v, s) in self.by_cell
        ]

    def median(self, key: CellTuple, metric: str) -> float | None:
        summary = self.summaries.get(key, {}).get(metric)
        return summary.median if summary else None

    def setting(self, key: CellTuple, name: str) -> Any:
        """An effective setting of the cell: from its trials' configs, else the resolved spec."""
        for trial in self.by_cell.get(key, ()):
            found = _find_setting(trial.config, name)
            if found is not None:
                return found
        config = self.configs.get(key)
        if config is None:
            return None
        dumped = {"broker": config.broker.model_dump(), "workload": config.workload.model_dump()}
        return _find_setting(dumped, name)

    def messages(self, scenario: str) -> int | None:
        known = self.spec.scenarios.get(scenario)
        return known.messages if known else None

    def compare(self, pairs: Sequence[tuple[CellTuple, CellTuple, str]]) -> list[Comparison]:
        """(baseline cell, candidate cell, metric) compared as one family of tests."""
        results = st.compare_family(
            [
                (
                    self.samples.get(base, {}).get(metric, []),
                    self.samples.get(cand, {}).get(metric, []),
                    metric_info(metric).better,
                )
                for base, cand, metric in pairs
            ],
            alpha=self.settings.alpha,
            noise_pct=self.settings.noise_threshold_pct,
            correction=self.settings.correction,
        )
        return [
            Comparison(
                metric=metric, baseline=cell_key(base), candidate=cell_key(cand), **asdict(result)
            )
            for (base, cand, metric), result in zip(pairs, results, strict=True)
        ]

    def compared_metrics(self, base: CellTuple, cand: CellTuple) -> list[str]:
        """Metrics with a better direction that either cell measured."""
        names = set(self.samples.get(base, {})) | set(self.samples.get(cand, {}))
        return [n for n in metric_order(names) if metric_info(n).better is not None]


def _ordered(seen: Iterable[str], declared: Iterable[str]) -> list[str]:
    """Declared names that occur, in declared order, then undeclared ones as they occur."""
    present = list(dict.fromkeys(seen))
    declared = list(declared)
    return [n for n in declared if n in present] + [n for n in present if n not in declared]


def _find_setting(data: Any, key: str) -> Any:
    """The first value stored under `key` anywhere in nested mappings (trial configs vary)."""
    if isinstance(data, Mapping):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_setting(value, key)
            if found is not None:
                return found
    return None
