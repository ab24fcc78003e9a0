"""The contract of a trial process: what the parent sends (a TrialRequest) and what comes back.

Both sides import this module; neither imports the other. The child sends PHASE_STARTED (+ JSON)
when its measured phase begins, PHASE_WINDOW (+ JSON) as each of its windows closes, SETTLING
once it no longer uses the broker, then the TrialResult as JSON. A trial with faults also sends
a FaultOrder (FAULT_ORDER + JSON) at each fault's point and waits for the run's FaultDone on a
second pipe: the run owns the broker's processes, so it is the run that does the fault.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from runner.execution.brokers.access import PLAIN, ClientAccess
from runner.execution.measure.self_test import SelfTest
from schemas.resolve import TrialSettings
from schemas.results import (
    FaultFigures,
    LoadGeneratorFigures,
    Metrics,
    NodeFigures,
    PublishPolicy,
    SubscriptionFigures,
    TimeSeries,
    TrialResult,
)
from schemas.spec import Broker

SETUP_TIMEOUT_S = 10.0  # each of: create topic, start consumers, connect producers, close, delete
FIXED_COST_S = 60.0  # bound on setup + teardown steps (each bounded in the trial process)
SLOWEST_UNPACED_RATE = 1000.0  # msg/s assumed for the timeout of an unpaced trial
SETTLING = b"settling"  # sent by the trial process once it no longer uses the broker
FAULT_ORDER = b"fault "  # followed by a FaultOrder as JSON
PHASE_STARTED = b"phase "  # followed by a PhaseStarted as JSON
PHASE_WINDOW = b"window "  # followed by a PhaseWindow as JSON, at every tick of the phase


class FaultOrder(BaseModel):
    """The trial asks the run to do its fault number `fault` now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fault: int  # index into the workload's faults
    destination: str  # the topic / stream whose leader a *_leader fault targets


class PhaseStarted(BaseModel):
    """The measured phase's clock (monotonic ns): its start, and where the ramp ends (tick 0
    of its per-second windows), so the run can read the broker on the same ticks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_ns: int
    ramp_end_ns: int


class PhaseWindow(BaseModel):
    """The phase's last per-second window as it closes: what a long run shows while it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at_s: float  # seconds into the phase
    received_per_s: float
    p99_ms: float | None
    in_flight: int  # published, not yet acked or given up


class FaultDone(BaseModel):
    """What the run did: the node it hit and when (monotonic ns), or why it could not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: int | None = None
    done_ns: int | None = None
    error: str | None = None


class RemoteHost(BaseModel):
    """A load-generator host of a trial: a Dask worker, and how many shares it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker: str  # the Dask worker's address
    hostname: str
    processes: int


class RemoteShares(BaseModel):
    """Where a trial's shares run when they run on other hosts (engine: dask).

    Shares are numbered host after host; each connects back to the trial process and proves it
    knows `authkey`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    authkey: bytes
    hosts: tuple[RemoteHost, ...]

    @property
    def processes(self) -> int:
        return sum(host.processes for host in self.hosts)

    def host_of(self, share: int) -> RemoteHost:
        first = 0
        for host in self.hosts:
            if share < first + host.processes:
                return host
            first += host.processes
        raise IndexError(f"no share {share} in {self.processes}")


class TrialRequest(BaseModel):
    """Everything a trial process needs; pickled across the process boundary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    broker: str
    variant: str
    scenario: str
    repetition: int
    warmup: bool
    address: str  # RunningBroker.address
    # A local broker's node processes: their RSS and CPU are measured during the phase.
    broker_pids: tuple[int, ...] = ()
    broker_config: Broker
    workload: TrialSettings
    # Unique topic / stream (and subject) name of this trial: letters, digits, "-" and "_" are
    # valid for a Kafka topic, a JetStream stream and a NATS subject alike.
    topic: str
    self_test: SelfTest = SelfTest()  # exprun's own tests only (measure/self_test.py)
    processes: int = 1  # load-generator processes the trial's clients are spread over
    remote: RemoteShares | None = None  # those processes run on other hosts
    access: ClientAccess = PLAIN  # TLS files and login of a secured broker's clients

    @property
    def shared(self) -> bool:
        """Whether the trial's clients run in load-generator processes of their own."""
        return self.processes > 1 or self.remote is not None

    def result(
        self,
        status: Literal["ok", "failed"],
        error: str | None,
        started_at: str,
        metrics: Metrics | None = None,
        *,
        notes: list[str] | None = None,
        series: TimeSeries | None = None,
        subscriptions: list[SubscriptionFigures] | None = None,
        faults: list[FaultFigures] | None = None,
        broker_nodes: list[NodeFigures] | None = None,
        load_generators: list[LoadGeneratorFigures] | None = None,
        publish_policy: PublishPolicy | None = None,
    ) -> TrialResult:
        """This trial's result record, with whatever was measured."""
        return TrialResult(
            index=self.index,
            broker=self.broker,
            broker_type=self.broker_config.type,
            variant=self.variant,
            scenario=self.scenario,
            repetition=self.repetition,
            warmup=self.warmup,
            status=status,
            error=error,
            started_at=started_at,
            config={
                "broker": self.broker_config.model_dump(mode="json"),
                "workload": self.workload.model_dump(mode="json"),
            },
            publish_policy=publish_policy,
            metrics=metrics or Metrics(),
            notes=notes or [],
            series=series,
            subscriptions=subscriptions or [],
            faults=faults or [],
            broker_nodes=broker_nodes or [],
            load_generators=load_generators or [],
        )


def trial_timeout(request: TrialRequest) -> float:
    """A generous bound on the whole trial: fixed costs, sending, handling, drain, settle."""
    workload = request.workload
    messages = workload.planned_messages
    if workload.duration is not None:
        sending = workload.duration
    else:
        sending = (messages or 0) / (workload.rate or SLOWEST_UNPACED_RATE)
    # Unpaced for a duration: what is left to handle after it is bounded by the drain timeout.
    handling = (messages or 0) * workload.processing_time / request.broker_config.workers
    # Each fault may cost a pause and a leader election (bounded like a drain).
    faults = sum((fault.pause or 0.0) + FIXED_COST_S for fault in workload.faults)
    # drain_timeout twice: once for the last acks, once for the last deliveries.
    return (
        FIXED_COST_S
        + sending
        + handling
        + faults
        + 2 * workload.drain_timeout
        + workload.settle_time
    )
