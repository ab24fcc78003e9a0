"""Run a plan: brokers up, every trial in its own process, results on disk as they finish."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import BadInputError, ExprunError
from runner.execution.brokers import BrokerStartError, RunningBroker
from runner.execution.brokers.reported import reported_settings
from runner.execution.environment import collect_environment
from runner.execution.faults import FaultExecutor
from runner.execution.instances import (
    Instance,
    check_memory,
    plan_instances,
    setting_key,
    start_instance,
)
from runner.execution.load_hosts import HostsUnavailable, LoadHosts, TrialShares
from runner.execution.plan import Plan, PlannedTrial
from runner.execution.progress import Progress
from runner.execution.search import Search, result_record, step_record
from runner.execution.telemetry.sampler import TelemetrySampler
from runner.execution.telemetry.sources import telemetry_sources
from runner.execution.trial.parent import TrialProcess, prestart, start_trial
from runner.execution.trial.request import PhaseWindow, TrialRequest
from runner.redaction import redact_data
from runner.run_folder import (
    ENVIRONMENT_FILE,
    RUN_FILE,
    RunFolder,
    RunInfo,
    TrialLog,
    create_run_folder,
    rewrite_trials,
    utc_now,
    write_json,
)
from runner.spec.loader import LoadedSpec
from schemas.results import TrialResult
from schemas.spec import KafkaBroker, NatsBroker

# A cluster whose nodes are all up must be formed again within this before the next trial.
CLUSTER_FORMED_TIMEOUT_S = 60.0


class ResultsUnwritable(ExprunError):
    """The run folder stopped taking writes (full disk, ...) mid-run (exit code 3)."""


@dataclass
class RunOutcome:
    folder: RunFolder
    results: list[TrialResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.results)


class Brokers:
    """The run's broker instances by broker name and setting, each started once."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.running: dict[tuple[str, str], RunningBroker] = {}

    def start(self, announce: Callable[[str], None]) -> None:
        names = list(dict.fromkeys(i.broker for i in self.instances))
        for instance in self.instances:
            if instance.config.embedded and instance.config.nodes > 1:
                announce(f"starting {instance.label}: {instance.describe()}")
            others = [other for other in names if other != instance.broker]
            self.running[instance.key] = start_instance(instance, others)

    def of(self, broker: str, config: KafkaBroker | NatsBroker) -> tuple[Instance, RunningBroker]:
        key = (broker, setting_key(config))
        instance = next(i for i in self.instances if i.key == key)
        return instance, self.running[key]

    def labelled(self) -> dict[str, RunningBroker]:
        return {i.label: self.running[i.key] for i in self.instances if i.key in self.running}

    def stop(self) -> None:
        for broker in reversed(list(self.running.values())):
            broker.stop()


@contextlib.contextmanager
def running_brokers(
    plan: Plan, pending: list[tuple[int, PlannedTrial]], announce: Callable[[str], None]
) -> Iterator[Brokers]:
    """Every broker instance the pending trials need, stopped on the way out whatever happens."""
    names = list(dict.fromkeys(t.cell.broker for _, t in pending))
    wanted = {(t.cell.broker, setting_key(t.config.broker)) for _, t in pending}
    instances = [i for i in plan_instances(plan, names) if i.key in wanted]
    check_memory(instances)
    brokers = Brokers(instances)
    try:
        brokers.start(announce)
        yield brokers
    finally:
        brokers.stop()


def new_run(
    loaded: LoadedSpec, plan: Plan, run_dir: Path, filters: dict[str, Any]
) -> tuple[RunFolder, RunInfo]:
    """Create the run folder (spec copy, run.json) before anything can fail."""
    info = RunInfo(
        spec_name=loaded.spec.name,
        spec_path=str(loaded.path),
        spec_sha256=loaded.digest,
        started_at=utc_now(),
        planned_trials=len(plan.trials),
        seed=plan.seed,
        filters=filters,
    )
    return create_run_folder(run_dir, loaded.text, info), info


def open_for_resume(
    loaded: LoadedSpec, run_dir: Path
) -> tuple[RunFolder, RunInfo, list[TrialResult]]:
    """An earlier run of the same spec, with the trials it finished (a cut last line dropped)."""
    folder = RunFolder(run_dir)
    info = folder.info()
    if info.spec_sha256 != loaded.digest:
        raise BadInputError(
            f"--resume {run_dir}: the spec changed since that run (sha256 {info.spec_sha256[:12]} "
            f"then, {loaded.digest[:12]} now); start a new run instead"
        )
    done = folder.trials()
    # Rewrite without a line cut by a crash, so that appended trials start on a fresh line.
    rewrite_trials(folder.trials_path, done)
    return folder, info, done


def execute(
    loaded: LoadedSpec,
    plan: Plan,
    folder: RunFolder,
    info: RunInfo,
    *,
    done: Sequence[TrialResult] = (),
    announce: Callable[[str], None] = lambda message: None,
    hosts: LoadHosts | None = None,
) -> RunOutcome:
    """Run the plan's trials not in `done`; each result is appended to trials.jsonl at once.

    `hosts`: the load-generator hosts of engine: dask (None: this machine)."""
    outcome = RunOutcome(folder, results=list(done))
    recorded = {r.key for r in done}
    pending = [(i, t) for i, t in enumerate(plan.trials) if t.key not in recorded]
    log = TrialLog(folder.trials_path)
    try:
        with running_brokers(plan, pending, announce) as brokers:
            environment = _Environment(loaded, folder, brokers, plan, hosts)
            announce(f"brokers ready: {_describe(brokers)}")
            try:
                prestart()
            except OSError as error:
                raise ExprunError(f"cannot start the trial processes: {error}") from None
            record = _Recorder(log, loaded.secrets, outcome)
            trials = _Trials(brokers, record, announce, done, plan.processes, hosts, environment)
            _run_trials(plan, pending, trials)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        with contextlib.suppress(OSError):
            log.close()
        finished = info.model_copy(
            update={
                "finished_at": utc_now(),
                "complete": {t.key for t in plan.trials} <= {r.key for r in outcome.results},
                "interrupted": outcome.interrupted,
            }
        )
        # On a full disk the old run.json stays whole: write_json replaces it atomically.
        with contextlib.suppress(OSError):
            write_json(folder.path / RUN_FILE, finished.model_dump(mode="json"))
    return outcome


class _Environment:
    """environment.json: written before the first trial, again when a new load host joins."""

    def __init__(
        self,
        loaded: LoadedSpec,
        folder: RunFolder,
        brokers: Brokers,
        plan: Plan,
        hosts: LoadHosts | None,
    ) -> None:
        self.path, self.secrets, self.hosts = folder.path / ENVIRONMENT_FILE, loaded.secrets, hosts
        local = {"hosts": 1, "processes": plan.processes}
        self.data = collect_environment(loaded.path, _broker_facts(brokers), local)
        self.machines = -1
        self.update()

    def update(self) -> None:
        if self.hosts is not None:
            if len(self.hosts.facts) == self.machines:
                return
            self.machines = len(self.hosts.facts)
            self.data["load_generators"] = self.hosts.environment()
        # Server settings may carry `${ENV}` secrets, as the spec's other settings may.
        write_json(self.path, redact_data(self.data, self.secrets))


class _Recorder:
    """Appends each finished trial, redacted, to trials.jsonl and to the outcome."""

    def __init__(self, log: TrialLog, secrets: frozenset[str], outcome: RunOutcome) -> None:
        self.log, self.secrets, self.outcome = log, secrets, outcome

    def __call__(self, result: TrialResult) -> None:
        result = _redacted(result, self.secrets)
        try:
            self.log.append(result)
        except OSError as error:
            raise ResultsUnwritable(
                f"cannot record trial results in {self.log.path}: {error.strerror or error}; "
                f"stopped after {len(self.outcome.results)} recorded trials, which are intact"
            ) from None
        self.outcome.results.append(result)


def _run_trials(plan: Plan, pending: list[tuple[int, PlannedTrial]], trials: _Trials) -> None:
    """Each pending trial in plan order; every trial process is gone when this returns."""
    progress = Progress(plan)
    trials.on_window = progress.phase_window
    try:
        for position, planned in pending:
            progress.trial_started(position, planned)
            if planned.config.workload.search is not None and not planned.warmup:
                trials.search(position, planned)
            else:
                trials.start(position, planned)
        trials.finish()
    except HostsUnavailable:
        trials.finish()  # what the settling trials measured is kept
        raise
    finally:
        progress.finish()
        trials.close()


class _Trials:
    """Starts trial processes; each finished one is recorded, settle waits overlapping."""

    def __init__(
        self,
        brokers: Brokers,
        record: Callable[[TrialResult], None],
        announce: Callable[[str], None],
        done: Sequence[TrialResult],
        processes: int = 1,
        hosts: LoadHosts | None = None,
        environment: _Environment | None = None,
    ) -> None:
        self.brokers, self.record, self.announce = brokers, record, announce
        self.processes = processes  # load-generator processes of each trial
        self.hosts, self.environment = hosts, environment
        self.remote: dict[int, TrialShares] = {}  # by trial index: shares on other hosts
        self.telemetry: dict[int, TelemetrySampler] = {}  # by trial index: its broker's readings
        self.on_window: Callable[[PhaseWindow], None] | None = None  # each window of a phase
        self.run_id = secrets.token_hex(3)
        self.settling: list[TrialProcess] = []
        # Steps of searches an interrupted run recorded (resume): they are not run again.
        self.steps_done = [r for r in done if r.search_step]

    def start(self, position: int, planned: PlannedTrial, rate: float | None = None) -> None:
        trial = self._launch(position, planned, rate)
        self.settling.append(trial)
        # Settle waits overlap the next trials: a settling trial process only sleeps and then
        # counts its own threads, so it cannot disturb them.
        trial.wait_settling()
        for ended in [t for t in self.settling if t.done()]:
            self.settling.remove(ended)
            self.record(self._result(ended))

    def search(self, position: int, planned: PlannedTrial) -> None:
        """A capacity search: its steps one after the other, each judged before the next."""
        settings = planned.config.workload.search
        assert settings is not None
        search = Search.of(settings)
        steps = [r for r in self.steps_done if r.key[:5] == planned.key[:5]]
        steps.sort(key=lambda r: r.key[5] or 0)
        for step in steps:
            assert step.search is not None and step.search.rate is not None
            search.record(step.search.rate, step)
        while (rate := search.next_rate()) is not None:
            number = len(search.done) + 1
            trial = self._launch(position, planned, rate, step=number)
            self.settling.append(trial)
            result = self._result(trial)  # the next rate depends on this one
            self.settling.remove(trial)
            steps.append(step_record(result, number, search.record(rate, result)))
            self.record(steps[-1])
        self.record(result_record(search, steps))

    def finish(self) -> None:
        while self.settling:
            self.record(self._result(self.settling.pop(0)))

    def close(self) -> None:
        for trial in self.settling:
            trial.close()
        if self.hosts is not None:
            self.hosts.cancel(list(self.remote.values()))

    def _launch(
        self, position: int, planned: PlannedTrial, rate: float | None, step: int | None = None
    ) -> TrialProcess:
        cell = planned.cell
        instance, broker = self.brokers.of(cell.broker, planned.config.broker)
        unavailable = _ensure_alive(instance.label, broker, self.announce)
        workload = planned.config.workload
        if planned.warmup and workload.faults:
            # Warm-ups warm the clients and the broker: a fault there would only cost time.
            workload = workload.model_copy(update={"faults": ()})
        if workload.search is not None:
            # A search's steps offer the rate it chose; its warm-up, the lower bound.
            workload = workload.model_copy(update={"rate": rate or workload.search.rate[0]})
        suffix = f"-{step}" if step is not None else ""
        request = TrialRequest(
            index=position,
            broker=cell.broker,
            variant=cell.variant,
            scenario=cell.scenario,
            repetition=planned.repetition,
            warmup=planned.warmup,
            address=broker.address,
            broker_pids=tuple(broker.pids),
            broker_config=planned.config.broker,
            workload=workload,
            topic=f"exprun-{self.run_id}-{position}{suffix}",
            processes=self.processes,
            access=broker.access,
        )
        on_fault = FaultExecutor(broker, workload.faults) if workload.faults else None
        sources = telemetry_sources(broker, planned.config.broker)
        watcher = None
        if sources and unavailable is None:
            watcher = TelemetrySampler(sources, request.topic, faults=bool(workload.faults))
            self.telemetry[request.index] = watcher
        if self.hosts is None or unavailable is not None:
            return start_trial(
                request,
                unavailable=unavailable,
                on_fault=on_fault,
                watcher=watcher,
                on_window=self.on_window,
            )
        request, shares = self.hosts.launch(request)
        self.remote[request.index] = shares
        if self.environment is not None:
            self.environment.update()
        return start_trial(
            request,
            on_fault=on_fault,
            listener=shares.listener,
            watcher=watcher,
            on_window=self.on_window,
        )

    def _result(self, trial: TrialProcess) -> TrialResult:
        """A trial's result, once its shares on other hosts (if any) are accounted for."""
        result = trial.result()
        shares = self.remote.pop(trial.request.index, None)
        if shares is not None and self.hosts is not None:
            result = self.hosts.finish(shares, result)
        watcher = self.telemetry.pop(trial.request.index, None)
        return watcher.attach(result) if watcher is not None else result


def _redacted(result: TrialResult, secrets: frozenset[str]) -> TrialResult:
    if not secrets:
        return result
    return TrialResult.model_validate(redact_data(result.model_dump(mode="json"), secrets))


def _ensure_alive(name: str, broker: RunningBroker, announce: Callable[[str], None]) -> str | None:
    """None when the broker can take a trial, else why not (after trying to bring it back)."""
    if not broker.embedded:
        if broker.alive():
            return None
        # An external broker that went away fails its remaining trials fast; others go on.
        return f"the external {broker.kind} broker {name!r} at {broker.address} is unreachable"
    if len(broker.nodes) > 1:
        return _ensure_cluster(name, broker, announce)
    if broker.alive() and not broker.nodes[0].paused:
        return None
    announce(f"broker {name!r} ({broker.kind}) died: restarting it")
    try:
        broker.restart(new_ports=True)
    except BrokerStartError as error:
        return f"the embedded {broker.kind} broker {name!r} died and did not restart: {error}"
    announce(f"broker {name!r} restarted at {broker.address}")
    return None


def _ensure_cluster(
    name: str, broker: RunningBroker, announce: Callable[[str], None]
) -> str | None:
    """Every node of the cluster up and the cluster formed (after a fault, or a crash)."""
    down = [node.number for node in broker.nodes if node.paused or not node.alive()]
    try:
        if down:
            announce(f"broker {name!r}: node(s) {', '.join(map(str, down))} down: reviving")
            broker.revive()
        else:
            broker.wait_formed(CLUSTER_FORMED_TIMEOUT_S)
    except BrokerStartError as error:
        return f"the embedded {broker.kind} cluster {name!r} did not come back: {error}"
    return None


def _broker_facts(brokers: Brokers) -> dict[str, dict[str, object]]:
    facts: dict[str, dict[str, object]] = {}
    for instance in brokers.instances:
        b = brokers.running[instance.key]
        facts[instance.label] = {
            "type": b.kind,
            "version": b.version,
            "embedded": b.embedded,
            "address": b.address,
            "nodes": len(b.nodes) or None,
            "start_seconds": b.start_seconds,
            "variants": list(instance.variants),
        }
        if instance.config.server:
            facts[instance.label]["server"] = instance.config.server
            facts[instance.label]["reported"] = reported_settings(b, instance.config.server)
    return facts


def _describe(brokers: Brokers) -> str:
    parts = []
    for label, b in brokers.labelled().items():
        how = f"embedded, ready in {b.start_seconds:.1f}s" if b.start_seconds else "external"
        nodes = f"{len(b.nodes)} nodes, " if len(b.nodes) > 1 else ""
        parts.append(f"{label} {b.kind} {b.version or ''} at {b.address} ({nodes}{how})")
    return "; ".join(parts)
