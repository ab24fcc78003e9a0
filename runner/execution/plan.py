"""Expand a spec into the ordered list of trials it asks for."""

from __future__ import annotations

import os
import random
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from tabulate import tabulate

from runner.errors import BadInputError
from runner.execution.drivers.placement import Placement, whole_groups
from runner.spec.server_settings import config_text
from schemas.report import CellKey
from schemas.resolve import CellConfig
from schemas.results import TrialKey
from schemas.spec import Experiment, KafkaBroker
from schemas.units import format_duration, format_rate, format_size

# Rough costs behind the estimate; a run's own figures replace them once it has any.
ASSUMED_THROUGHPUT = {"kafka": 20_000.0, "nats": 20_000.0}
ASSUMED_TRIAL_OVERHEAD_S = 0.3
ASSUMED_START_S = {"kafka": 15.0, "nats": 1.0}


@dataclass(frozen=True)
class PlannedTrial:
    config: CellConfig
    repetition: int  # 1-based, counted separately for warm-up and measured trials
    warmup: bool

    @property
    def cell(self) -> CellKey:
        return self.config.cell

    @property
    def key(self) -> TrialKey:
        """Identifies the trial across runs of the same spec (used to resume); a capacity
        search has the key of its result record (its steps add their number)."""
        c = self.cell
        return (c.broker, c.variant, c.scenario, self.warmup, self.repetition, None)


@dataclass(frozen=True)
class Plan:
    spec: Experiment
    cells: list[CellConfig]
    trials: list[PlannedTrial]
    seed: int | None

    @property
    def processes(self) -> int:
        """Load-generator processes of each trial, on this machine."""
        return self.spec.execution.process_count(os.cpu_count() or 1)

    @property
    def measured(self) -> int:
        return sum(not t.warmup for t in self.trials)

    def estimate_seconds(self) -> float:
        """A rough wall-time estimate: broker starts, every trial, and the last settle wait."""
        kinds = {c.broker.type for c in self.cells}
        # Settle waits overlap the next trials (see runner.execution.run): only the last adds up.
        last_settle = max((t.config.workload.settle_time for t in self.trials), default=0.0)
        return (
            sum(ASSUMED_START_S[k] for k in kinds)
            + sum(trial_estimate(t.config, warmup=t.warmup) for t in self.trials)
            + last_settle
        )


def trial_estimate(config: CellConfig, *, warmup: bool = False) -> float:
    """Expected wall time of one trial up to its settle wait (of a whole capacity search: every
    step, each waited for to its end, since the next step's rate depends on it)."""
    work = config.workload
    if work.search is not None and not warmup:
        step = ASSUMED_TRIAL_OVERHEAD_S + (work.duration or 0.0) + work.settle_time
        return work.search.steps * step
    rate = work.rate or ASSUMED_THROUGHPUT[config.broker.type]
    messages = work.planned_messages
    if messages is None:  # unpaced, for a duration
        messages = round(rate * (work.duration or 0.0))
    sending = work.duration if work.duration is not None else messages / rate
    handling = messages * work.processing_time / (config.broker.workers * work.consumers)
    return ASSUMED_TRIAL_OVERHEAD_S + max(sending, handling)


def make_plan(
    spec: Experiment,
    cells: list[CellConfig],
    *,
    brokers: Collection[str] = (),
    variants: Collection[str] = (),
    scenarios: Collection[str] = (),
    repetitions: int | None = None,
    seed: int | None = None,
) -> Plan:
    """Trials of the selected cells in the spec's order (interleaved, sequential or random)."""
    _check_filter("broker", brokers, spec.brokers)
    _check_filter("variant", variants, spec.variant_names)
    _check_filter("scenario", scenarios, spec.scenarios)
    selected = [
        c
        for c in cells
        if (not brokers or c.cell.broker in brokers)
        and (not variants or c.cell.variant in variants)
        and (not scenarios or c.cell.scenario in scenarios)
    ]
    reps = repetitions if repetitions is not None else spec.repetitions
    rounds = [(True, r) for r in range(1, spec.warmup + 1)] + [
        (False, r) for r in range(1, reps + 1)
    ]
    if seed is None:
        seed = spec.seed if spec.seed is not None else random.SystemRandom().randrange(2**31)
    if spec.order == "sequential":
        trials = [PlannedTrial(c, r, w) for c in selected for w, r in rounds]
    else:
        trials = []
        rng = random.Random(seed)
        for warmup, rep in rounds:
            round_trials = [PlannedTrial(c, rep, warmup) for c in _interleaved(selected)]
            if spec.order == "random":
                rng.shuffle(round_trials)
            trials.extend(round_trials)
    return Plan(spec, selected, trials, seed if spec.order == "random" else None)


def _interleaved(cells: list[CellConfig]) -> list[CellConfig]:
    """Scenario by scenario, brokers and variants alternating (A B A B) within each."""
    scenarios = list(dict.fromkeys(c.cell.scenario for c in cells))
    brokers = list(dict.fromkeys(c.cell.broker for c in cells))
    return [
        c
        for scenario in scenarios
        for broker in brokers
        for c in cells
        if c.cell.scenario == scenario and c.cell.broker == broker
    ]


def _check_filter(what: str, chosen: Iterable[str], known: Iterable[str]) -> None:
    known = list(known)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise BadInputError(
            f"--{what} {', '.join(unknown)}: not in the spec (known: {', '.join(known)})"
        )


def effective_settings(config: CellConfig) -> dict[str, str]:
    """The cell's settings as flat, readable strings (for the plan table and reports)."""
    broker, work = config.broker, config.workload
    settings = {
        "load": work.load_shape(),
        "message_size": format_size(work.message_size),
        "rate": "searched" if work.search is not None else format_rate(work.rate),
        "producers": str(work.producers),
        "consumers": str(work.consumers),
        "workers": str(broker.workers),
        "processing_time": format_duration(work.processing_time),
        "settle_time": format_duration(work.settle_time),
        "drain_timeout": format_duration(work.drain_timeout),
        "endpoint": broker.endpoint,
        "nodes": str(broker.nodes),
    }
    settings.update({f"server.{k}": v for k, v in flat_settings(broker.server)})
    if isinstance(broker, KafkaBroker):
        settings["partitions"] = str(broker.topic.partitions)
        settings["replication_factor"] = str(broker.topic.replication_factor)
        if broker.jvm.heap:
            settings["jvm.heap"] = broker.jvm.heap
        settings.update({f"producer.{k}": str(v) for k, v in broker.producer.items()})
        settings.update({f"consumer.{k}": str(v) for k, v in broker.consumer.items()})
        settings["transactions"] = _transactions(broker)
    elif not broker.jetstream:
        settings["stream"] = "none (core NATS)"
    else:
        stream = broker.stream
        settings["stream"] = stream.storage
        settings["max_msgs"] = str(stream.max_msgs)
        max_bytes = stream.max_bytes
        settings["max_bytes"] = max_bytes if isinstance(max_bytes, str) else format_size(max_bytes)
        settings["discard"] = stream.discard
        settings["replicas"] = str(stream.replicas)
        settings["max_pending"] = str(broker.publish.max_pending)
        settings["delivery_timeout"] = format_duration(broker.publish.delivery_timeout)
    return settings


def _transactions(broker: KafkaBroker) -> str:
    """A producer's commits in words: "per 1000", "every 100ms", or "none"."""
    rule = broker.transactions
    if rule is None:
        return "none"
    if rule.per is not None:
        return f"per {rule.per}"
    return f"every {format_duration(rule.every or 0)}"


def flat_settings(settings: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Nested settings as dotted keys (jetstream.max_memory_store) and their config text."""
    for key, value in settings.items():
        if isinstance(value, Mapping):
            yield from flat_settings(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", config_text(value)


def plan_warnings(plan: Plan) -> list[str]:
    """What the plan will run that is allowed but probably not meant."""
    warnings = []
    for config in plan.cells:
        broker, work = config.broker, config.workload
        if isinstance(broker, KafkaBroker) and work.consumers > broker.topic.partitions:
            idle = work.consumers - broker.topic.partitions
            warnings.append(
                f"{config.cell}: {work.consumers} consumers per subscription share "
                f"{broker.topic.partitions} partition(s): {idle} of them stay idle"
            )
    return warnings


def render_plan(plan: Plan) -> str:
    """The matrix as one table per broker: a row per cell, with the settings that differ."""
    per_cell = {c.cell: 0 for c in plan.cells}
    for trial in plan.trials:
        per_cell[trial.cell] += 1
    warmups = len(plan.trials) - plan.measured
    lines = [
        f"{plan.spec.name}: {len(plan.cells)} cells, {len(plan.trials)} trials "
        f"({plan.measured} measured, {warmups} warm-up), order {plan.spec.order}"
        + (f" (seed {plan.seed})" if plan.seed is not None else "")
    ]
    for broker in dict.fromkeys(c.cell.broker for c in plan.cells):
        cells = [c for c in plan.cells if c.cell.broker == broker]
        rows = [effective_settings(c) for c in cells]
        # A property written in one variant only is in its rows only: it varies.
        names = dict.fromkeys(name for row in rows for name in row)
        varying = [n for n in names if len({row.get(n, "") for row in rows}) > 1]
        table = [
            [c.cell.variant, c.cell.scenario, *(row.get(n, "") for n in varying), per_cell[c.cell]]
            for c, row in zip(cells, rows, strict=True)
        ]
        shared = ", ".join(f"{n}={v}" for n, v in rows[0].items() if n not in varying)
        lines += [
            "",
            f"{broker} ({cells[0].broker.type})",
            tabulate(table, headers=["variant", "scenario", *varying, "trials"], tablefmt="github"),
            f"same in every {broker} cell: {shared}",
        ]
    lines += [f"warning: {warning}" for warning in plan_warnings(plan)]
    lines += [
        "",
        f"estimated run time: {_minutes(plan.estimate_seconds())} "
        f"(rough: assumes ~20k msg/s and {ASSUMED_TRIAL_OVERHEAD_S:g} s per-trial overhead)",
    ]
    return "\n".join(lines)


def render_placement(plan: Plan) -> str:
    """Which load-generator process (on which host) runs which producers and consumers, per
    distinct layout."""
    execution = plan.spec.execution
    per_host = plan.processes
    hosts = execution.hosts if execution.distributed else 1
    shares = hosts * per_host
    if execution.distributed:
        lines = [
            f"load generators: {hosts} host(s) x {per_host} process(es) per trial, on Dask "
            "workers offering loadgen=1"
            + (
                " (auto: each host's cores but one; shown with this machine's)"
                if execution.processes == "auto"
                else ""
            )
        ]
    elif shares == 1:
        return "load generator: each trial's clients run in its own process"
    else:
        lines = [f"load generators: {shares} processes per trial"]
    seen: set[tuple[object, ...]] = set()
    for config in plan.cells:
        work, whole = config.workload, whole_groups(config.broker)
        producers, subscriptions = work.topics * work.producers, work.topics * work.subscriptions
        layout = (config.cell.broker, producers, subscriptions, work.consumers, whole)
        if layout in seen:
            continue
        seen.add(layout)
        groups = " (each consumer group on one process)" if whole else ""
        lines.append(
            f"  {config.cell.broker}, {producers} producer(s), {subscriptions} subscription(s) "
            f"x {work.consumers} consumer(s){groups}:"
        )
        for number in range(shares):
            placement = Placement(number, shares)
            what = placement.describe(producers, subscriptions, work.consumers, whole)
            host, process = divmod(number, per_host)
            where = (
                f"host {host + 1}, process {process}"
                if execution.distributed
                else (f"process {number}")
            )
            lines.append(f"    {where}: {what}")
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
