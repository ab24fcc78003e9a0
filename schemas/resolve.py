"""Effective settings of one cell: variant overrides deep-merged over the spec's defaults.

Merging happens on the raw YAML mappings (not on parsed models) so that every value is
validated exactly as written, and every error points at the line that supplied the value.
Precedence, lowest first: broker settings / defaults, scenario, variant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, PositiveInt, TypeAdapter, ValidationError, model_validator

from schemas.metrics import LOCAL_BROKER_METRICS
from schemas.problems import Loc, Problem, problems_from
from schemas.report import CellKey
from schemas.spec import (
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_VARIANT,
    KAFKA_FILE_SUFFIX,
    Broker,
    Experiment,
    Fault,
    KafkaBroker,
    KvSettings,
    NatsBroker,
    NatsTlsFiles,
    PayloadFile,
    SearchSettings,
    Workload,
)
from schemas.units import (
    Backlog,
    PositiveDuration,
    format_duration,
    format_rate,
    format_rate_range,
    format_size,
)

T = TypeVar("T")
Source = tuple[Loc, Any]  # where in the spec, and the raw mapping written there


class TrialSettings(Workload):
    """The workload of one cell: defaults, then scenario, then variant overrides."""

    messages: PositiveInt | None = None
    duration: PositiveDuration | None = None
    backlog: Backlog | None = None
    search: SearchSettings | None = None
    faults: tuple[Fault, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _search_sets_the_rate(cls, data: Any) -> Any:
        # A rate from the defaults does not apply to a search: each of its trials has its own.
        if isinstance(data, Mapping) and data.get("search") is not None:
            return {key: value for key, value in data.items() if key != "rate"}
        return data

    @property
    def planned_messages(self) -> int | None:
        """Messages a trial publishes, when known up front (a count, or rate x duration)."""
        if self.messages is not None:
            return self.messages
        if self.rate is not None and self.duration is not None:
            return max(1, round(self.rate * self.duration))
        return None

    @property
    def phase_seconds(self) -> float | None:
        """How long the publishing lasts, when known up front (a duration, or count / rate)."""
        if self.duration is not None:
            return self.duration
        if self.messages is not None and self.rate is not None:
            return self.messages / self.rate
        return None

    @property
    def backlog_messages(self) -> int | None:
        return self.backlog.in_messages(self.message_size) if self.backlog else None

    @property
    def request_timeout(self) -> float:
        """Seconds a request may wait for its answer (pattern request_reply)."""
        return self.timeout if self.timeout is not None else DEFAULT_REQUEST_TIMEOUT_S

    @property
    def kv_settings(self) -> KvSettings:
        return self.kv or KvSettings()

    def load_shape(self) -> str:
        """The scenario's load in a few words: '500 msgs', '30s at 20000/s, ramp 5s', ..."""
        if self.search is not None:
            search = self.search
            parts = [
                f"capacity search {format_rate_range(search.rate)} until {search.condition}, "
                f"{search.steps} steps of {format_duration(self.duration or 0)}"
            ]
        else:
            length = (
                f"{self.messages:,} msgs"
                if self.messages is not None
                else format_duration(self.duration or 0)
            )
            pace = f" at {format_rate(self.rate)}" if self.rate is not None else " unpaced"
            parts = [length + (pace if self.rate is not None or self.duration else "")]
        if self.ramp:
            parts.append(f"ramp {format_duration(self.ramp)}")
        if self.backlog is not None:
            parts.append(f"backlog {self.backlog}")
        parts += [fault.describe() for fault in self.faults]
        return ", ".join(parts)

    def problems(self) -> list[tuple[Loc, str]]:
        """Settings that validate one by one but not together (located by field)."""
        found: list[tuple[Loc, str]] = []
        if self.duration is not None and self.ramp >= self.duration:
            found.append(
                (
                    ("ramp",),
                    f"the ramp ({format_duration(self.ramp)}) is not shorter than the duration "
                    f"({format_duration(self.duration)}): nothing would be measured",
                )
            )
        found += self._pattern_problems()
        backlog, total = self.backlog_messages, self.planned_messages
        if backlog is not None and self.rate is None:
            found.append(
                (
                    ("backlog",),
                    "a backlog needs a `rate`: producers go on at it while the consumers catch up",
                )
            )
        elif backlog is not None and total is not None and backlog >= total:
            found.append(
                (
                    ("backlog",),
                    f"a backlog of {backlog:,} messages is never reached: the scenario "
                    f"publishes {total:,}",
                )
            )
        return found

    def _pattern_problems(self) -> list[tuple[Loc, str]]:
        """Settings of one pattern given to another, and shapes a pattern has no use for."""
        pattern = self.pattern
        found: list[tuple[Loc, str]] = []
        if self.timeout is not None and pattern != "request_reply":
            found.append(
                (
                    ("timeout",),
                    f"`timeout` is a request's (pattern: request_reply), not pattern {pattern}'s",
                )
            )
        if self.kv is not None and pattern != "kv":
            found.append((("kv",), f"`kv` sets the keys of pattern: kv, not of pattern {pattern}"))
        if pattern == "stream":
            return found
        if self.backlog is not None:
            found.append(
                (
                    ("backlog",),
                    f"pattern {pattern} keeps no backlog: its requests and "
                    "operations are answered as they come",
                )
            )
        if self.subscriptions > 1:
            found.append(
                (
                    ("subscriptions",),
                    f"pattern {pattern} has one group of "
                    f"{'responders' if pattern == 'request_reply' else 'clients'} per "
                    "topic: `subscriptions` must be 1",
                )
            )
        if pattern == "kv" and self.topics > 1:
            found.append((("topics",), "pattern kv uses one bucket: `topics` must be 1"))
        if pattern == "kv" and self.kv_settings.keys < self.producers:
            found.append(
                (
                    ("kv", "keys"),
                    f"each producer owns keys of its own: {self.kv_settings.keys} keys for "
                    f"{self.producers} producers leaves some with none",
                )
            )
        return found


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


def resolve_cells(
    spec: Experiment, raw: Mapping[str, Any], base_dir: Path | None = None
) -> list[CellConfig]:
    """Every cell of the matrix with its validated effective settings.

    With `base_dir` (the spec's folder), a payload file is found relative to it, checked, and
    given to the cells as an absolute path.
    """
    problems: list[Problem] = []
    brokers: dict[tuple[str, str], KafkaBroker | NatsBroker] = {}
    broker_where: dict[tuple[str, str], Locator] = {}
    workloads: dict[tuple[str, str], tuple[TrialSettings, Locator]] = {}
    for variant in spec.variant_names:
        for broker in spec.brokers:
            sources: list[Source] = [(("brokers", broker), raw["brokers"][broker])]
            override = lookup(raw, "variants", variant, "brokers", broker)
            if override is not None:
                sources.append((("variants", variant, "brokers", broker), override))
            try:
                settings, located = _validate(_BROKER, sources)
            except ResolutionError as error:
                problems.extend(error.problems)
                continue
            if base_dir is not None:
                settings, missing = _client_files(settings, base_dir)
                problems += [Problem(located(loc), message) for loc, message in missing]
            brokers[broker, variant], broker_where[broker, variant] = settings, located
        for scenario in spec.scenarios:
            sources = [
                (("defaults",), lookup(raw, "defaults") or {}),
                (("scenarios", scenario), raw["scenarios"][scenario]),
                (("variants", variant, "defaults"), lookup(raw, "variants", variant, "defaults")),
            ]
            try:
                workload, where = _validate(TrialSettings, sources)
            except ResolutionError as error:
                problems.extend(error.problems)
                continue
            if base_dir is not None and isinstance(workload.payload, PayloadFile):
                workload, found = _payload_file(workload, workload.payload, base_dir)
                problems += [Problem(where(("payload", "file")), found)] if found else []
            workloads[variant, scenario] = workload, where
            problems += [Problem(where(loc), message) for loc, message in workload.problems()]
    cells = [
        CellConfig(CellKey(broker=b, variant=v, scenario=s), brokers[b, v], workloads[v, s][0])
        for v in spec.variant_names
        for b in spec.brokers
        for s in spec.scenarios
        if (b, v) in brokers and (v, s) in workloads
    ]
    for config in cells:
        where = workloads[config.cell.variant, config.cell.scenario][1]
        of_broker = broker_where[config.cell.broker, config.cell.variant]
        for side, loc, message in cell_problems(config):
            problems.append(Problem((of_broker if side == "broker" else where)(loc), message))
    if problems:
        raise ResolutionError(_dedupe(problems))
    return cells


def _payload_file(
    workload: TrialSettings, payload: PayloadFile, base_dir: Path
) -> tuple[TrialSettings, str | None]:
    """The workload with the payload file's absolute path, and what is wrong with it."""
    path = (base_dir / payload.file).resolve()
    try:
        size = path.stat().st_size
    except OSError as error:
        return workload, f"cannot read the payload file {payload.file}: {error.strerror or error}"
    if size < workload.message_size:
        return workload, (
            f"the payload file {payload.file} ({format_size(size)}) is smaller than "
            f"message_size ({format_size(workload.message_size)})"
        )
    return workload.model_copy(update={"payload": PayloadFile(file=str(path))}), None


def _client_files(
    broker: KafkaBroker | NatsBroker, base_dir: Path
) -> tuple[KafkaBroker | NatsBroker, list[tuple[Loc, str]]]:
    """The broker with the files its clients read (certificates, keys, credentials) found
    relative to the spec's folder, as absolute paths; and each one that cannot be read."""
    missing: list[tuple[Loc, str]] = []

    def found(loc: Loc, written: str) -> str:
        path = (base_dir / written).resolve()
        try:
            with path.open("rb"):
                pass
        except OSError as error:
            missing.append((loc, f"cannot read {written}: {error.strerror or error}"))
        return str(path)

    if isinstance(broker, KafkaBroker):
        sides = {
            side: {
                key: found((side, key), value)
                if key.endswith(KAFKA_FILE_SUFFIX) and isinstance(value, str)
                else value
                for key, value in getattr(broker, side).items()
            }
            for side in ("client", "producer", "consumer")
        }
        return broker.model_copy(update=sides), missing
    security = broker.security
    update: dict[str, object] = {}
    if security.creds is not None:
        update["creds"] = found(("security", "creds"), security.creds)
    if isinstance(security.tls, NatsTlsFiles):
        files = {
            name: found(("security", "tls", name), value)
            for name in ("ca", "cert", "key")
            if (value := getattr(security.tls, name)) is not None
        }
        update["tls"] = security.tls.model_copy(update=files)
    secured = security.model_copy(update=update)
    return broker.model_copy(update={"security": secured}), missing


Side = Literal["broker", "workload"]


def cell_problems(config: CellConfig) -> list[tuple[Side, Loc, str]]:
    """What a cell's workload asks of its broker that the broker cannot give (located in the
    broker's settings or the workload's)."""
    broker, work = config.broker, config.workload
    found: list[tuple[Side, Loc, str]] = []
    backlog = work.backlog_messages
    found += _capability_problems(broker, work)
    if backlog is not None and isinstance(broker, NatsBroker) and broker.jetstream:
        stream = broker.stream
        what = "discarded" if stream.discard == "old" else "refused"
        if isinstance(stream.max_msgs, int) and backlog > stream.max_msgs:
            found.append(
                (
                    "workload",
                    ("backlog",),
                    f"the stream keeps at most {stream.max_msgs:,} messages (max_msgs): part of "
                    f"a backlog of {backlog:,} would be {what}",
                )
            )
        elif isinstance(stream.max_bytes, int) and backlog * work.message_size > stream.max_bytes:
            found.append(
                (
                    "workload",
                    ("backlog",),
                    f"the stream keeps at most {format_size(stream.max_bytes)} (max_bytes): part "
                    f"of a backlog of {backlog:,} x {format_size(work.message_size)} would be "
                    f"{what}",
                )
            )
    if isinstance(broker, NatsBroker) and broker.consumer.kind == "ordered" and work.consumers > 1:
        found.append(
            (
                "broker",
                ("consumer", "kind"),
                f"an ordered consumer reads alone, but this cell has {work.consumers} consumers "
                "per subscription: use kind push or pull to share a subscription",
            )
        )
    found += _fault_problems(broker, work)
    search = work.search
    if search and search.condition.metric in LOCAL_BROKER_METRICS and not broker.embedded:
        found.append(
            (
                "workload",
                ("search", "until"),
                f"{search.condition.metric} is measured only on brokers exprun runs itself "
                "(endpoint: embedded)",
            )
        )
    return found


def _capability_problems(
    broker: KafkaBroker | NatsBroker, work: TrialSettings
) -> list[tuple[Side, Loc, str]]:
    """What the broker cannot do: key-value on Kafka; on core NATS (nothing stored), a bucket,
    a backlog, or a stream leader to hit."""
    found: list[tuple[Side, Loc, str]] = []
    if work.pattern == "kv" and isinstance(broker, KafkaBroker):
        found.append(
            ("workload", ("pattern",), "pattern kv is JetStream's key-value store (NATS only)")
        )
    if not isinstance(broker, NatsBroker) or broker.jetstream:
        return found
    if work.pattern == "kv":
        found.append(
            (
                "workload",
                ("pattern",),
                "pattern kv needs JetStream: this cell's NATS broker has `jetstream: false`",
            )
        )
    if work.backlog is not None:
        found.append(
            (
                "workload",
                ("backlog",),
                "core NATS (`jetstream: false`) stores nothing: there is no backlog to build; "
                "use a JetStream broker for a backlog",
            )
        )
    for index, fault in enumerate(work.faults):
        if fault.action.endswith("_leader"):
            found.append(
                (
                    "workload",
                    ("faults", index, "action"),
                    f"{fault.action}: core NATS (`jetstream: false`) has no stream leader; "
                    f"hit a node by number (kill_node / pause_node with `node`)",
                )
            )
    return found


def _fault_problems(
    broker: KafkaBroker | NatsBroker, work: TrialSettings
) -> list[tuple[Side, Loc, str]]:
    """Faults need a broker exprun runs, and nodes that exist."""
    found: list[tuple[Side, Loc, str]] = []
    if work.faults and not broker.embedded:
        found.append(
            (
                "workload",
                ("faults",),
                f"faults are done to the nodes of a broker exprun starts; this cell's broker is "
                f"external ({broker.endpoint})",
            )
        )
        return found
    for index, fault in enumerate(work.faults):
        if fault.node is not None and fault.node > broker.nodes:
            found.append(
                (
                    "workload",
                    ("faults", index, "node"),
                    f"node {fault.node} does not exist: this cell's broker has "
                    f"{broker.nodes} node(s)",
                )
            )
        seconds, duration = fault.seconds, work.duration
        if seconds is not None and duration is not None and seconds >= duration:
            found.append(
                (
                    "workload",
                    ("faults", index, "at"),
                    f"at {fault.at}: the measured phase lasts {format_duration(duration)}, "
                    "the fault would never happen",
                )
            )
    return found


Locator = Callable[[Loc], Loc]


def _validate(target: type[T] | TypeAdapter[T], sources: list[Source]) -> tuple[T, Locator]:
    """The merged sources validated, and where in the spec each of their fields was written."""
    merged: dict[str, Any] = {}
    origin: dict[Loc, Loc] = {}
    for prefix, data in sources:
        if isinstance(data, Mapping):
            _merge_into(merged, data, (), prefix, origin)

    def where(loc: Loc) -> Loc:
        return _source_loc(loc, origin, sources[0][0])

    adapter = target if isinstance(target, TypeAdapter) else TypeAdapter(target)
    try:
        return adapter.validate_python(merged), where
    except ValidationError as error:
        model = _model_of(target, merged)
        located = [
            Problem(where(p.loc), p.message, p.at_key) for p in problems_from(error, model, merged)
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
