"""Effective settings of one cell: variant overrides deep-merged over the spec's defaults.

Merging happens on the raw YAML mappings (not on parsed models) so that every value is
validated exactly as written, and every error points at the line that supplied the value.
Precedence, lowest first: broker settings / defaults, scenario, variant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, PositiveInt, TypeAdapter, ValidationError

from schemas.problems import Loc, Problem, problems_from
from schemas.report import CellKey
from schemas.spec import DEFAULT_VARIANT, Broker, Experiment, KafkaBroker, NatsBroker, Workload

T = TypeVar("T")
Source = tuple[Loc, Any]  # where in the spec, and the raw mapping written there


class TrialSettings(Workload):
    """The workload of one cell: defaults, then scenario, then variant overrides."""

    messages: PositiveInt


@dataclass(frozen=True)
class CellConfig:
    cell: CellKey
    broker: KafkaBroker | NatsBroker
    workload: TrialSettings


class ResolutionError(Exception):
    """Overrides that do not merge into valid settings; problems are located in the spec."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


_BROKER = TypeAdapter[KafkaBroker | NatsBroker](Broker)


def resolve_cells(spec: Experiment, raw: Mapping[str, Any]) -> list[CellConfig]:
    """Every cell of the matrix with its validated effective settings."""
    problems: list[Problem] = []
    brokers: dict[tuple[str, str], KafkaBroker | NatsBroker] = {}
    workloads: dict[tuple[str, str], TrialSettings] = {}
    for variant in spec.variant_names:
        for broker in spec.brokers:
            sources: list[Source] = [(("brokers", broker), raw["brokers"][broker])]
            override = lookup(raw, "variants", variant, "brokers", broker)
            if override is not None:
                sources.append((("variants", variant, "brokers", broker), override))
            try:
                brokers[broker, variant] = _validate(_BROKER, sources)
            except ResolutionError as error:
                problems.extend(error.problems)
        for scenario in spec.scenarios:
            sources = [
                (("defaults",), lookup(raw, "defaults") or {}),
                (("scenarios", scenario), raw["scenarios"][scenario]),
                (("variants", variant, "defaults"), lookup(raw, "variants", variant, "defaults")),
            ]
            try:
                workloads[variant, scenario] = _validate(TrialSettings, sources)
            except ResolutionError as error:
                problems.extend(error.problems)
    if problems:
        raise ResolutionError(_dedupe(problems))
    return [
        CellConfig(CellKey(broker=b, variant=v, scenario=s), brokers[b, v], workloads[v, s])
        for v in spec.variant_names
        for b in spec.brokers
        for s in spec.scenarios
    ]


def _validate(target: type[T] | TypeAdapter[T], sources: list[Source]) -> T:
    merged: dict[str, Any] = {}
    origin: dict[Loc, Loc] = {}
    for prefix, data in sources:
        if isinstance(data, Mapping):
            _merge_into(merged, data, (), prefix, origin)
    adapter = target if isinstance(target, TypeAdapter) else TypeAdapter(target)
    try:
        return adapter.validate_python(merged)
    except ValidationError as error:
        model = _model_of(target, merged)
        located = [
            Problem(_source_loc(p.loc, origin, sources[0][0]), p.message, p.at_key)
            for p in problems_from(error, model, merged)
        ]
        raise ResolutionError(located) from None


def _merge_into(
    into: dict[str, Any],
    data: Mapping[str, Any],
    path: Loc,
    prefix: Loc,
    origin: dict[Loc, Loc],
) -> None:
    for key, value in data.items():
        here = (*path, key)
        origin[here] = (*prefix, *here)
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge_into(into[key], value, here, prefix, origin)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
            if isinstance(value, Mapping):
                for sub in _paths(value, here):
                    origin[sub] = (*prefix, *sub)


def _paths(data: Mapping[str, Any], path: Loc) -> list[Loc]:
    found: list[Loc] = []
    for key, value in data.items():
        found.append((*path, key))
        if isinstance(value, Mapping):
            found.extend(_paths(value, (*path, key)))
    return found


def _source_loc(loc: Loc, origin: dict[Loc, Loc], fallback: Loc) -> Loc:
    """Where in the spec the value at `loc` of the merged mapping was written."""
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in origin:
            return (*origin[loc[:cut]], *loc[cut:])
    return (*fallback, *loc)


def _model_of(target: Any, merged: Mapping[str, Any]) -> type[BaseModel]:
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target
    return KafkaBroker if merged.get("type") == "kafka" else NatsBroker


def lookup(data: Any, *path: str) -> Any:
    """The value at `path` in nested mappings, or None where any step is missing."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


__all__ = ["DEFAULT_VARIANT", "CellConfig", "ResolutionError", "TrialSettings"]
