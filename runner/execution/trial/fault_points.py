"""A trial's faults, from the trial's side: wait for each one's point, have the run do it, and
work out what it cost.

The trial knows when a point is reached (it counts the messages); the run owns the broker's
processes, so the trial asks the run over its pipes and records when the fault was done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Protocol

from runner.execution.measure.accounting import Accounting, Spike
from runner.execution.measure.availability import AckTimeline, longest_silence, recovery
from runner.execution.measure.latency import summarise
from runner.execution.measure.messages import NS_PER_S, now_ns
from runner.execution.trial.request import FAULT_ORDER, FaultDone, FaultOrder
from runner.process import readable
from schemas.resolve import TrialSettings
from schemas.results import FaultFigures, Metrics
from schemas.spec import Fault

PROGRESS_POLL_S = 0.01


class FaultLink(Protocol):
    """How the trial asks the run to do a fault."""

    async def order(self, order: FaultOrder) -> FaultDone: ...


class PipeLink:
    """Orders go with the trial's reports to the run; the run answers on a pipe of its own."""

    def __init__(self, reports: Connection, answers: Connection) -> None:
        self.reports, self.answers = reports, answers
        self._one_at_a_time = asyncio.Lock()

    async def order(self, order: FaultOrder) -> FaultDone:
        async with self._one_at_a_time:
            self.reports.send_bytes(FAULT_ORDER + order.model_dump_json().encode())
            return FaultDone.model_validate_json(await _answer(self.answers))


async def _answer(conn: Connection) -> bytes:
    """The run's answer (it answers within seconds; a gone run reads as a failed fault)."""
    await readable(conn)
    try:
        return conn.recv_bytes()
    except (EOFError, OSError):
        return FaultDone(error="the run did not answer").model_dump_json().encode()


@dataclass
class _Record:
    """One fault of the trial: the run's answer once done, and the latency watched after it."""

    fault: Fault
    answer: FaultDone | None = None
    spike: Spike | None = None


class FaultPlan:
    """The trial's faults, each done by the run when its point is reached."""

    def __init__(
        self,
        work: TrialSettings,
        link: FaultLink | None,
        accounting: Accounting,
        destination: str,
    ) -> None:
        self.work, self.link, self.accounting = work, link, accounting
        self.destination = destination
        self.records = [_Record(fault) for fault in work.faults]
        self.start_ns = 0
        self.failure: str | None = None

    async def run(self, start_ns: int, progress: Callable[[], Awaitable[int]]) -> None:
        """Do every fault at its point; returns once all are done (cancelled when the phase
        ends first)."""
        self.start_ns = start_ns
        await asyncio.gather(*(self._one(index, progress) for index in range(len(self.records))))

    async def _one(self, index: int, progress: Callable[[], Awaitable[int]]) -> None:
        record = self.records[index]
        await self._reached(record.fault, progress)
        if self.link is None:
            record.answer = FaultDone(error="faults are done by a run (`exprun run`)")
        else:
            record.answer = await self.link.order(
                FaultOrder(fault=index, destination=self.destination)
            )
        if record.answer.error is not None:
            self.failure = self.failure or f"{record.fault.describe()}: {record.answer.error}"
        elif record.answer.done_ns is not None:
            record.spike = self.accounting.watch_spike(record.answer.done_ns)

    async def _reached(self, fault: Fault, progress: Callable[[], Awaitable[int]]) -> None:
        """Wait until the fault's point: a time, or a share of the messages acked."""
        due = self._due_ns(fault)
        if due is not None:
            await asyncio.sleep(max(0.0, (due - now_ns()) / NS_PER_S))
            return
        share, planned = fault.share, self.work.planned_messages
        assert share is not None and planned is not None
        while await progress() < share * planned:
            await asyncio.sleep(PROGRESS_POLL_S)

    def _due_ns(self, fault: Fault) -> int | None:
        """The fault's time, when it is one or follows from the load shape."""
        work = self.work
        seconds = fault.seconds
        if seconds is None and fault.share is not None:
            if work.duration is not None:
                seconds = fault.share * work.duration
            elif work.rate is not None and work.messages is not None:
                # Paced: message k is due at k / rate, whatever the broker does.
                seconds = fault.share * work.messages / work.rate
        return None if seconds is None else self.start_ns + round(seconds * NS_PER_S)

    def missed(self) -> str | None:
        """Why the trial must fail: a fault that could not be done or was never reached."""
        if self.failure is not None:
            return self.failure
        missing = [r.fault.describe() for r in self.records if r.answer is None]
        if missing:
            return f"the phase ended before {', '.join(missing)}"
        return None

    def fill(
        self, metrics: Metrics, timelines: Sequence[AckTimeline], sending_done_ns: int | None
    ) -> list[FaultFigures]:
        """The faults' cost into `metrics`; each fault's own figures."""
        acks = AckTimeline(self.start_ns)
        for timeline in timelines:
            acks.merge(timeline.counts)
        # A silence after the last send counts up to it: waiting for straggling answers after
        # that is no publish left to ack, not the broker being unavailable.
        until = None if sending_done_ns is None else acks.bucket_of(sending_done_ns)
        silence = longest_silence(acks.counts, until)
        metrics.unavailable_s = round(silence.seconds, 3) if silence is not None else None
        measured_from = acks.bucket_of(self.accounting.measure_from_ns)
        figures: list[FaultFigures] = []
        for record in self.records:
            answer = record.answer
            figure = FaultFigures(
                action=record.fault.action,
                at=record.fault.at.strip(),
                node=answer.node if answer else None,
                error=answer.error if answer else "not reached",
            )
            if answer is not None and answer.done_ns is not None:
                fault_bucket = acks.bucket_of(answer.done_ns)
                figure.at_s = round((answer.done_ns - self.start_ns) / NS_PER_S, 3)
                back = recovery(acks.counts, fault_bucket, measured_from, until)
                figure.recovery_s = round(back.seconds, 3) if back.seconds is not None else None
                figure.not_recovered = back.why_not
            if record.spike is not None:
                spike = summarise([record.spike.latency])
                figure.latency_p99_ms, figure.latency_max_ms = spike.p99, spike.max
            figures.append(figure)
        recoveries = [f.recovery_s for f in figures if f.recovery_s is not None]
        metrics.recovery_s = max(recoveries) if recoveries else None
        metrics.fault_latency_ms = summarise(r.spike.latency for r in self.records if r.spike)
        return figures
