"""Per-second windows of a trial: a ticker marks running totals on a fixed schedule.

Ticks are aligned on the end of the ramp (tick 0), one second apart, so the windows after the
ramp are exactly the figures' part of the phase. Marks are taken on the event loop; a busy loop
takes one a few milliseconds late, and each window uses the times the marks were really taken.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from runner.execution.measure.accounting import Accounting
from runner.execution.measure.heap import give_back_free_pages
from runner.execution.measure.ledger import summed_marks
from runner.execution.measure.messages import NS_PER_S, now_ns
from schemas.results import TimeSeries

INTERVAL_NS = NS_PER_S
# "off" runs trials without their time series (the benchmark measures what it costs).
SERIES_ENV = "EXPRUN_TIME_SERIES"


def series_enabled() -> bool:
    return os.environ.get(SERIES_ENV, "on") != "off"


@dataclass(frozen=True)
class Schedule:
    """When the phase started and its ramp ended: tick k is at the ramp's end + k seconds."""

    start_ns: int
    ramp_end_ns: int

    @property
    def has_ramp(self) -> bool:
        return self.ramp_end_ns > self.start_ns

    def tick_at(self, tick: int) -> int:
        return self.ramp_end_ns + tick * INTERVAL_NS

    def first_tick(self) -> int:
        """The first tick after the phase's start (tick 0 itself when there is a ramp)."""
        return -((self.ramp_end_ns - self.start_ns) // INTERVAL_NS) + (0 if self.has_ramp else 1)


async def tick(schedule: Schedule, mark: Callable[[int, int], None]) -> None:
    """Call mark(tick, now) at every tick until cancelled, and after each mark give the heap's
    free pages back (a mark compacts the books; without this the RSS would not show it)."""
    number = schedule.first_tick()
    while True:
        delay = (schedule.tick_at(number) - now_ns()) / NS_PER_S
        if delay > 0:
            await asyncio.sleep(delay)
        mark(number, now_ns())
        give_back_free_pages()
        number += 1


def time_series(
    schedule: Schedule,
    end_ns: int,
    accounting: Accounting,
    rss_mb: Mapping[int, float | None],
    last_rss_mb: float | None,
) -> TimeSeries:
    """The phase's windows, from the consumer side's marks and the producers' (summed), and
    the load generator's peak RSS in each (rss_mb by the tick ending the window)."""
    ticks = sorted(t for t in accounting.marks if accounting.marks[t].at_ns < end_ns)
    producers = summed_marks(accounting.ledgers)
    final = (
        sum(ledger.sent for ledger in accounting.ledgers),
        sum(ledger.acked for ledger in accounting.ledgers),
        sum(ledger.given_up for ledger in accounting.ledgers),
    )
    times = [schedule.start_ns, *(accounting.marks[t].at_ns for t in ticks), end_ns]
    received = [0, *(accounting.marks[t].received for t in ticks), accounting.received]
    books = [(0, 0, 0)]
    for t in ticks:
        books.append(producers.get(t) or _after_marks(accounting, books[-1], final, t))
    books.append(final)
    last_p50, last_p99 = accounting.latency_since_mark()
    p50 = [*(accounting.marks[t].p50_ms for t in ticks), last_p50]
    p99 = [*(accounting.marks[t].p99_ms for t in ticks), last_p99]
    windows = range(len(times) - 1)
    return TimeSeries(
        start_s=[round((times[i] - schedule.start_ns) / NS_PER_S, 3) for i in windows],
        seconds=[round((times[i + 1] - times[i]) / NS_PER_S, 3) for i in windows],
        published=[books[i + 1][0] - books[i][0] for i in windows],
        acked=[books[i + 1][1] - books[i][1] for i in windows],
        received=[received[i + 1] - received[i] for i in windows],
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        in_flight=[max(0, sent - acked - given_up) for sent, acked, given_up in books[1:]],
        loadgen_rss_mb=[*(rss_mb.get(t) for t in ticks), last_rss_mb],
    )


def _after_marks(
    accounting: Accounting,
    last: tuple[int, int, int],
    final: tuple[int, int, int],
    tick_number: int,
) -> tuple[int, int, int]:
    """A tick the producers did not mark (their process stopped marking when they were done):
    every send before it if they were all done sending by then, every ack if the last had come;
    else what their last mark said, the rest going to the last window."""
    at_ns = accounting.marks[tick_number].at_ns
    ledgers = accounting.ledgers
    done = [ledger.sending_done_ns for ledger in ledgers]
    acks = [ledger.last_ack_ns or 0 for ledger in ledgers]
    sent = final[0] if all(d is not None and d <= at_ns for d in done) else last[0]
    acked = final[1] if sent == final[0] and max(acks, default=0) <= at_ns else last[1]
    return sent, acked, last[2]
