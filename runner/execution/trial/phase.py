"""The measured phase of a trial, in the shape its scenario declares.

Messages or a duration; as fast as acks allow or open-loop at a rate; a ramp left out of the
figures; a backlog built before the consumers start. Every second the running totals are
marked, so the trial's record carries its time series.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runner.analysis.shortfall import falls_short, shortfall_cause
from runner.execution.drivers import Driver, PublishPlan
from runner.execution.measure.accounting import Accounting
from runner.execution.measure.availability import AckTimeline
from runner.execution.measure.handlers import Handlers
from runner.execution.measure.latency import summarise
from runner.execution.measure.messages import NS_PER_S, KeyPlan, MessageCodec, now_ns
from runner.execution.measure.resources import ResourceSampler
from runner.execution.measure.series import Schedule, series_enabled, tick, time_series
from runner.execution.trial.fault_points import FaultPlan
from runner.execution.trial.request import PhaseStarted, PhaseWindow
from schemas.resolve import TrialSettings
from schemas.results import FaultFigures, Metrics, TimeSeries
from schemas.spec import NatsConsumer
from schemas.units import format_rate

BACKLOG_POLL_S = 0.02
PROGRESS_TIMEOUT_S = 1.0
QUIET_S = 1.0  # at most once: no delivery for this long, and the rest is lost
# Consumers released onto a backlog have caught up once a delivered message is this young:
# 100 ms, or 5% of the time the backlog took to build, whichever is longer (but less than half
# of that time).
CATCH_UP_MIN_NS = 100_000_000
CATCH_UP_SHARE = 0.05


class PhaseListener(Protocol):
    """Hears the phase's clock as it begins and each per-second window as it closes."""

    def started(self, started: PhaseStarted) -> None: ...

    def window(self, window: PhaseWindow) -> None: ...


@dataclass
class PhaseOutcome:
    """What the phase adds to the trial's record besides the accounting's figures."""

    start_ns: int
    end_ns: int | None = None
    schedule: Schedule | None = None
    publishing_ns: int | None = None
    released_ns: int | None = None  # held consumers released onto the backlog
    backlog_build_ns: int | None = None
    failure: str | None = None
    notes: list[str] = field(default_factory=list)


class MeasuredPhase:
    """Runs the phase on the trial's loop; the accounting keeps every message's books."""

    def __init__(
        self,
        work: TrialSettings,
        driver: Driver,
        accounting: Accounting,
        handlers: Handlers,
        sampler: ResourceSampler,
        faults: FaultPlan | None = None,
        listener: PhaseListener | None = None,
    ) -> None:
        self.work, self.driver, self.accounting = work, driver, accounting
        self.listener = listener  # told the phase's clock as it begins, and each window
        self.handlers, self.sampler, self.faults = handlers, sampler, faults
        self.fault_figures: list[FaultFigures] = []
        self._stored_last = 0
        self._rss_mb: dict[int, float | None] = {}  # the load generator's peak, by window's tick
        self.outcome = PhaseOutcome(start_ns=now_ns())
        self.series = series_enabled()
        # Bodies are made now, outside the measured phase.
        self.codec = MessageCodec(work.message_size, work.payload)

    async def run(self) -> None:
        """Publish by the load shape, then drain until every acked message arrived."""
        work, accounting, outcome = self.work, self.accounting, self.outcome
        ledgers = [accounting.ledger() for _ in range(self.driver.layout.producers)]
        start = outcome.start_ns = now_ns() + self.driver.start_lead_ns
        schedule = outcome.schedule = Schedule(start, start + round(work.ramp * NS_PER_S))
        if schedule.has_ramp:
            accounting.measure_from(schedule.ramp_end_ns)
        until = None
        if work.duration is not None and work.rate is None:
            until = start + round(work.duration * NS_PER_S)
        plan = PublishPlan(
            work.planned_messages,
            self.driver.layout.producers,
            work.rate,
            self.codec,
            schedule,
            until,
            self.driver.layout,
            KeyPlan(work.keys),
            acks_over_time=self.faults is not None,
            request_timeout_s=work.request_timeout if work.pattern == "request_reply" else None,
            abort_every=accounting.self_test.abort_every,
        )
        if self.faults is not None:
            for ledger in ledgers:
                ledger.timeline = AckTimeline(start)
        self.sampler.start_phase()
        self.driver.phase_started()
        if self.listener is not None:
            started = PhaseStarted(start_ns=schedule.start_ns, ramp_end_ns=schedule.ramp_end_ns)
            self.listener.started(started)
        ticks = tick(schedule, self._mark) if self.series else asyncio.Event().wait()
        ticker = asyncio.create_task(ticks, name="exprun-ticks")
        publishing = asyncio.create_task(
            self.driver.publish(plan, ledgers, work.drain_timeout), name="exprun-publish"
        )
        faulting = asyncio.create_task(
            self.faults.run(start, self._progress) if self.faults else asyncio.sleep(0),
            name="exprun-faults",
        )
        for task in (ticker, publishing, faulting):
            self.sampler.exclude(task)
        try:
            if work.backlog_messages is not None:
                await self._release_onto_backlog(publishing, work.backlog_messages)
            await publishing
            outcome.publishing_ns = now_ns() - start
            self.sampler.sample_loadgen()
            accounting.publishing_done()
            self.sampler.sample()
            await self._drain()
        finally:
            for task in (publishing, ticker, faulting):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # its own error, if any, was raised above already
        outcome.end_ns = now_ns()
        self.sampler.sample()
        if self.faults is not None:
            outcome.failure = outcome.failure or self.faults.missed()

    def _mark(self, tick_number: int, at_ns: int) -> None:
        accounting = self.accounting
        before = accounting.marks.get(tick_number - 1)
        accounting.mark(tick_number, at_ns)
        self._rss_mb[tick_number] = self.sampler.window_peak_rss_mb()
        if not self.driver.marks_producers:
            for ledger in accounting.ledgers:
                ledger.mark(tick_number, at_ns)
        if self.listener is not None and before is not None:
            mark = accounting.marks[tick_number]
            seconds = (at_ns - before.at_ns) / NS_PER_S
            in_flight = sum(ledger.unresolved for ledger in accounting.ledgers)
            self.listener.window(
                PhaseWindow(
                    at_s=round((at_ns - self.outcome.start_ns) / NS_PER_S, 3),
                    received_per_s=round((mark.received - before.received) / seconds, 1),
                    p99_ms=mark.p99_ms,
                    in_flight=max(0, in_flight),
                )
            )

    async def _release_onto_backlog(self, publishing: asyncio.Task[None], backlog: int) -> None:
        """Hold the consumers until `backlog` messages are stored, then let them catch up."""
        while not publishing.done():
            if await self._stored() >= backlog:
                break
            await asyncio.sleep(BACKLOG_POLL_S)
        built = self.outcome.backlog_build_ns = now_ns() - self.outcome.start_ns
        await self.driver.release_consumers()
        # Never half the backlog's age or more: a backlog built in under 200 ms would otherwise
        # count as caught up with its first, already young enough, message.
        within = min(max(CATCH_UP_MIN_NS, round(CATCH_UP_SHARE * built)), built // 2)
        self.outcome.released_ns = now_ns()
        self.accounting.release_onto_backlog(self.outcome.released_ns, within)

    async def _stored(self) -> int:
        """Messages the broker holds so far (or, where it cannot say, the producers' acks)."""
        stored = await self.driver.stored_messages()
        if stored is None:
            stored = sum(ledger.acked for ledger in self.accounting.ledgers)
        return stored

    async def _progress(self) -> int:
        """Messages stored so far, for a fault's point; a broker busy electing a leader may not
        answer at once: then the last count stands."""
        with contextlib.suppress(Exception):
            self._stored_last = await asyncio.wait_for(self._stored(), PROGRESS_TIMEOUT_S)
        return self._stored_last

    async def _drain(self) -> None:
        work, accounting, outcome = self.work, self.accounting, self.outcome
        if self.driver.at_most_once:
            drained = await self._drain_while_arriving()
        else:
            drained = await _within(accounting.drained(), work.drain_timeout)
        if drained:
            await _within(self.handlers.idle(), work.drain_timeout)
        if outcome.released_ns is None:
            return
        for subscription in accounting.subscriptions:
            catch_up = subscription.catch_up
            if catch_up is None or catch_up.caught_up_ns is not None:
                continue
            if subscription.drained.is_set():
                # Never younger than the threshold while the producers ran: the backlog was
                # drained when the last of it arrived, after the producers stopped.
                catch_up.caught_up_ns = subscription.last_receive_ns
                catch_up.received_at_catch_up = subscription.received
        if not drained:
            outcome.failure = (
                f"the backlog did not drain within the drain timeout ({work.drain_timeout:g}s): "
                f"{accounting.awaiting:,} acked messages still unread"
            )

    async def _drain_while_arriving(self) -> bool:
        """Drain a broker that keeps nothing: what has not come after QUIET_S without a single
        delivery never will, so the trial need not wait out the whole drain timeout."""
        accounting = self.accounting
        deadline = now_ns() + round(self.work.drain_timeout * NS_PER_S)
        awaiting = accounting.awaiting
        while now_ns() < deadline:
            if await _within(accounting.drained(), QUIET_S):
                return True
            if accounting.awaiting == awaiting:
                return False
            awaiting = accounting.awaiting
        return False

    def fill(self, metrics: Metrics, last_handled_ns: int | None) -> TimeSeries | None:
        """The phase's own figures into `metrics`; the time series, once the phase ended."""
        work, accounting, outcome = self.work, self.accounting, self.outcome
        schedule = outcome.schedule
        accounting.fill(metrics, last_handled_ns=last_handled_ns)
        if self.driver.counts_retries:
            metrics.publish_retries = sum(ledger.retries for ledger in accounting.ledgers)
            metrics.duplicate_acks = sum(ledger.duplicate_acks for ledger in accounting.ledgers)
        if schedule is None:
            return None
        if work.rate is not None:
            metrics.achieved_rate = accounting.achieved_rate(schedule.ramp_end_ns)
        if outcome.publishing_ns is not None:
            metrics.publish_blocked_pct = accounting.blocked_share(outcome.publishing_ns)
        metrics.loadgen_cpu_percent = self.sampler.loadgen_cpu_percent
        self._fill_consumers(metrics)
        self._fill_producers(metrics)
        self._fill_backlog(metrics)
        if self.faults is not None:
            ledgers = accounting.ledgers
            timelines = [ledger.timeline for ledger in ledgers if ledger.timeline]
            sent = max((ledger.sending_done_ns or 0 for ledger in ledgers), default=0)
            self.fault_figures = self.faults.fill(metrics, timelines, sent or None)
        self._note_shortfall(metrics)
        if outcome.end_ns is None or not self.series:
            return None
        last_rss = self.sampler.window_peak_rss_mb()
        return time_series(schedule, outcome.end_ns, accounting, self._rss_mb, last_rss)

    def _fill_consumers(self, metrics: Metrics) -> None:
        """How the consumers joined, rebalanced, committed and acked."""
        figures = self.driver.consumer_figures
        metrics.consumers_ready_s = figures.ready_s
        metrics.rebalances = figures.rebalances
        if any(recorder.counts for recorder in figures.commit_latency):
            metrics.commit_latency_ms = summarise(figures.commit_latency)
        consumer = getattr(self.driver.config, "consumer", None)
        if isinstance(consumer, NatsConsumer) and consumer.acks:
            subscriptions = self.accounting.subscriptions
            metrics.redelivered = sum(s.redelivered for s in subscriptions)
            metrics.ack_pending_peak = max(s.ack_pending_peak for s in subscriptions)

    def _fill_producers(self, metrics: Metrics) -> None:
        """How the producers' transactions committed (Kafka transactions)."""
        figures = self.driver.producer_figures
        metrics.transactions_aborted = figures.transactions_aborted
        if any(recorder.counts for recorder in figures.transaction_commit):
            metrics.transaction_commit_ms = summarise(figures.transaction_commit)

    def _fill_backlog(self, metrics: Metrics) -> None:
        """Drain time and speed: the slowest subscription's time, everything they read."""
        released, built = self.outcome.released_ns, self.outcome.backlog_build_ns
        if released is None or built is None:
            return
        metrics.backlog_build_s = round(built / NS_PER_S, 4)
        catch_ups = [s.catch_up for s in self.accounting.subscriptions]
        if any(c is None or c.caught_up_ns is None for c in catch_ups):
            return
        done = [c for c in catch_ups if c is not None]
        drain_ns = max((c.caught_up_ns or released) - released for c in done)
        metrics.drain_s = round(drain_ns / NS_PER_S, 4)
        read = sum((c.received_at_catch_up or 0) - c.received_at_start for c in done)
        metrics.drain_throughput = round(read * NS_PER_S / drain_ns, 3) if drain_ns else None

    def _note_shortfall(self, metrics: Metrics) -> None:
        rate, achieved = self.work.rate, metrics.achieved_rate
        if rate is None or achieved is None or not falls_short(achieved, rate):
            return
        short = 100 * (1 - achieved / rate)
        self.outcome.notes.append(
            f"achieved {format_rate(round(achieved))} of the declared {format_rate(rate)} "
            f"({short:.1f}% short): {shortfall_cause(metrics)}"
        )


async def _within(waiting: Awaitable[Any], timeout: float) -> bool:
    """True if `waiting` finished within timeout."""
    try:
        await asyncio.wait_for(waiting, timeout)
    except TimeoutError:
        return False
    return True
