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
from typing import Any

from runner.analysis.shortfall import falls_short, shortfall_cause
from runner.execution.drivers import Driver, PublishPlan
from runner.execution.measure.accounting import Accounting, CatchUp
from runner.execution.measure.handlers import HandlerPool
from runner.execution.measure.messages import NS_PER_S, MessageCodec, now_ns
from runner.execution.measure.resources import ResourceSampler
from runner.execution.measure.series import Schedule, series_enabled, tick, time_series
from schemas.resolve import TrialSettings
from schemas.results import Metrics, TimeSeries
from schemas.units import format_rate

BACKLOG_POLL_S = 0.02
# Consumers released onto a backlog have caught up once a delivered message is this young:
# 100 ms, or 5% of the time the backlog took to build, whichever is longer.
CATCH_UP_MIN_NS = 100_000_000
CATCH_UP_SHARE = 0.05


@dataclass
class PhaseOutcome:
    """What the phase adds to the trial's record besides the accounting's figures."""

    start_ns: int
    end_ns: int | None = None
    schedule: Schedule | None = None
    publishing_ns: int | None = None
    catch_up: CatchUp | None = None
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
        pool: HandlerPool,
        sampler: ResourceSampler,
    ) -> None:
        self.work, self.driver, self.accounting = work, driver, accounting
        self.pool, self.sampler = pool, sampler
        self.outcome = PhaseOutcome(start_ns=now_ns())
        self.series = series_enabled()

    async def run(self) -> None:
        """Publish by the load shape, then drain until every acked message arrived."""
        work, accounting, outcome = self.work, self.accounting, self.outcome
        ledgers = [accounting.ledger() for _ in range(work.producers)]
        start = outcome.start_ns = now_ns()
        schedule = outcome.schedule = Schedule(start, start + round(work.ramp * NS_PER_S))
        if schedule.has_ramp:
            accounting.measure_from(schedule.ramp_end_ns)
        until = None
        if work.duration is not None and work.rate is None:
            until = start + round(work.duration * NS_PER_S)
        plan = PublishPlan(
            work.planned_messages,
            work.producers,
            work.rate,
            MessageCodec(work.message_size),
            schedule,
            until,
        )
        self.sampler.start_phase()
        ticks = tick(schedule, self._mark) if self.series else asyncio.Event().wait()
        ticker = asyncio.create_task(ticks, name="exprun-ticks")
        publishing = asyncio.create_task(
            self.driver.publish(plan, ledgers, work.drain_timeout), name="exprun-publish"
        )
        self.sampler.exclude(ticker)
        self.sampler.exclude(publishing)
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
            for task in (publishing, ticker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # its own error, if any, was raised above already
        outcome.end_ns = now_ns()
        self.sampler.sample()

    def _mark(self, tick_number: int, at_ns: int) -> None:
        self.accounting.mark(tick_number, at_ns)
        if not self.driver.marks_producers:
            for ledger in self.accounting.ledgers:
                ledger.mark(tick_number, at_ns)

    async def _release_onto_backlog(self, publishing: asyncio.Task[None], backlog: int) -> None:
        """Hold the consumers until `backlog` messages are stored, then let them catch up."""
        while not publishing.done():
            stored = await self.driver.stored_messages()
            if stored is None:
                stored = sum(ledger.acked for ledger in self.accounting.ledgers)
            if stored >= backlog:
                break
            await asyncio.sleep(BACKLOG_POLL_S)
        built = self.outcome.backlog_build_ns = now_ns() - self.outcome.start_ns
        await self.driver.release_consumers()
        within = max(CATCH_UP_MIN_NS, round(CATCH_UP_SHARE * built))
        self.outcome.catch_up = self.accounting.release_onto_backlog(now_ns(), within)

    async def _drain(self) -> None:
        work, accounting, outcome = self.work, self.accounting, self.outcome
        if await _within(accounting.drained.wait(), work.drain_timeout):
            await _within(self.pool.idle(), work.drain_timeout)
        catch_up = outcome.catch_up
        if catch_up is None or catch_up.caught_up_ns is not None:
            return
        if accounting.drained.is_set():
            # Never younger than the threshold while the producers ran: the backlog was
            # drained when the last of it arrived, after the producers stopped.
            catch_up.caught_up_ns = accounting.last_receive_ns
            catch_up.received_at_catch_up = accounting.received
            return
        outcome.failure = (
            f"the backlog did not drain within the drain timeout ({work.drain_timeout:g}s): "
            f"{accounting.awaiting or 0:,} acked messages still unread"
        )

    def fill(self, metrics: Metrics, last_handled_ns: int | None) -> TimeSeries | None:
        """The phase's own figures into `metrics`; the time series, once the phase ended."""
        work, accounting, outcome = self.work, self.accounting, self.outcome
        schedule = outcome.schedule
        accounting.fill(metrics, last_handled_ns=last_handled_ns)
        if schedule is None:
            return None
        if work.rate is not None:
            metrics.achieved_rate = accounting.achieved_rate(schedule.ramp_end_ns)
        if outcome.publishing_ns is not None:
            metrics.publish_blocked_pct = accounting.blocked_share(outcome.publishing_ns)
        metrics.loadgen_cpu_percent = self.sampler.loadgen_cpu_percent
        self._fill_backlog(metrics)
        self._note_shortfall(metrics)
        if outcome.end_ns is None or not self.series:
            return None
        return time_series(schedule, outcome.end_ns, accounting)

    def _fill_backlog(self, metrics: Metrics) -> None:
        catch_up, built = self.outcome.catch_up, self.outcome.backlog_build_ns
        if catch_up is None or built is None:
            return
        metrics.backlog_build_s = round(built / NS_PER_S, 4)
        if catch_up.caught_up_ns is not None and catch_up.received_at_catch_up is not None:
            drain_ns = catch_up.caught_up_ns - catch_up.started_ns
            metrics.drain_s = round(drain_ns / NS_PER_S, 4)
            read = catch_up.received_at_catch_up - catch_up.received_at_start
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
