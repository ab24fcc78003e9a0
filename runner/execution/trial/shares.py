"""A trial spread over several load-generator processes (`execution.processes`).

The trial process keeps the books and the broker's admin work; each load-generator process
("share") runs the producers and consumers its Placement gives it, on its own event loop and
connections. A share streams what its handlers receive (sequence number, send stamp, receive
stamp) to the trial process, which accounts it exactly as if it had received it itself: loss
and duplicates across processes included. When its producers are done, a share sends their
ledgers, which the trial's absorb (acked flags OR'd, HDR counts merged bucket-wise).

On the trial's side a SharedDriver stands in for the broker's driver, so the measured phase
runs unchanged. Shares are forked from the trial process (its modules are loaded), die with
it, and are reaped before it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from runner.execution.drivers import (
    Driver,
    DriverError,
    PublishPlan,
    PublishStalled,
    load_driver,
)
from runner.execution.drivers.base import MessageSink
from runner.execution.drivers.placement import Placement
from runner.execution.measure.accounting import Accounting, Layout, Subscription
from runner.execution.measure.availability import AckTimeline
from runner.execution.measure.handlers import HandlerPool, Handlers
from runner.execution.measure.latency import LatencyRecorder
from runner.execution.measure.ledger import ProducerLedger
from runner.execution.measure.messages import HEADER_SIZE, NS_PER_S, now_ns
from runner.execution.measure.resources import ResourceSampler
from runner.execution.measure.seqsets import SeqSet
from runner.execution.measure.series import series_enabled, tick
from runner.execution.trial.links import ClockReading, LinkError, accept, measure_clock
from runner.execution.trial.request import (
    SETUP_TIMEOUT_S,
    RemoteHost,
    RemoteShares,
    TrialRequest,
)
from runner.process import forked_body, readable, reap
from schemas.results import LoadGeneratorFigures, PublishPolicy

FLUSH_S = 0.01  # how often a share sends what its handlers received
FLUSH_BYTES = 1 << 16
TAIL = struct.Struct("<qB")  # after the message's header: receive stamp, redelivered
RECORD_SIZE = HEADER_SIZE + TAIL.size
STOP_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 15.0  # shares on other hosts: a fresh interpreter each, to start and connect
START_LEAD_S = 0.02  # the phase starts this long after "now", so every share begins together
ANSWERS = ("reply", "published", "closed")


@dataclass
class ShareFigures:
    """What a share reports of its clients once they are closed."""

    problem: str | None
    ready_s: float | None
    rebalances: int | None
    commit_latency: list[dict[int, int]]
    ack_pending_peak: dict[int, int]  # per subscription index
    foreign: dict[int, int]
    last_done_ns: int | None
    resources: LoadGeneratorFigures
    transaction_commit: list[dict[int, int]] = field(default_factory=list)
    transactions_aborted: int | None = None


# --- the load-generator process ----------------------------------------------------------


class _Outbox:
    """What the share's handlers received, sent to the trial process every FLUSH_S."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.records: dict[int, bytearray] = {}
        self.ledgers: list[ProducerLedger] = []
        self.handlers: Handlers | None = None
        self._acked_sent = -1

    def add(self, subscription: int, header: bytes, now: int, redelivered: bool) -> None:
        buffer = self.records.setdefault(subscription, bytearray())
        buffer += received_record(header, now, redelivered)
        if len(buffer) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        acked = sum(ledger.acked for ledger in self.ledgers)
        if not self.records and acked == self._acked_sent:
            return
        records = {index: bytes(buffer) for index, buffer in self.records.items() if buffer}
        self.records = {}
        self._acked_sent = acked
        last_done = self.handlers.last_done_ns if self.handlers is not None else None
        self.conn.send(("received", records, acked, last_done))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            self.flush()


class _RemoteBooks:
    """A subscription's books as a share keeps them: every delivery goes to the trial's."""

    def __init__(self, topic: int, index: int, outbox: _Outbox) -> None:
        self.topic, self.index, self.outbox = topic, index, outbox
        self.ack_pending = 0
        self.ack_pending_peak = 0
        self.foreign = 0

    def on_delivery(self, payload: bytes, now_ns: int, redelivered: bool = False) -> int:
        # Self-test faults apply in the trial process, which has the books: here it counts once.
        if len(payload) < HEADER_SIZE:
            self.foreign += 1
            return 0
        self.outbox.add(self.index, payload[:HEADER_SIZE], now_ns, redelivered)
        return 1

    def on_batch(self, payloads: Sequence[bytes], received_ns: Sequence[int]) -> None:
        for payload, received in zip(payloads, received_ns, strict=True):
            self.on_delivery(payload, received)


def _serve(conn: Connection, driver: Driver) -> None:
    """The share's event loop (a forked share: on a fresh thread, the forking one is inside the
    trial's)."""
    try:
        asyncio.run(_Share(conn, driver).serve())
    except Exception as error:
        with contextlib.suppress(OSError):
            conn.send(("gone", f"load-generator process failed: {type(error).__name__}: {error}"))
        raise


def serve_remote(conn: Connection, request_json: str, share: int, processes: int) -> None:
    """A share on another host, linked to its trial by `conn` (runner.execution.trial.remote)."""
    request = TrialRequest.model_validate_json(request_json)
    with tempfile.TemporaryDirectory(prefix="exprun-access-") as folder:
        access = request.access.landed(Path(folder))
        driver = driver_for(request.model_copy(update={"access": access}))
        _serve(conn, driver.placed(Placement(share, processes)))


def driver_for(request: TrialRequest) -> Driver:
    """The broker's driver for a trial (every client of it, until placed)."""
    work = request.workload
    return load_driver(request.broker_config.type)(
        request.address,
        request.broker_config,
        request.topic,
        SETUP_TIMEOUT_S,
        Layout(
            work.topics,
            work.producers,
            work.subscriptions,
            work.pattern,
            work.kv_settings if work.pattern == "kv" else None,
        ),
        faults=bool(work.faults),
        access=request.access,
    )


class _Share:
    """In a share: a driver of its own, a pool per subscription it reads, and the commands."""

    def __init__(self, conn: Connection, driver: Driver) -> None:
        self.conn = conn
        self.driver = driver
        self.placement = driver.placement
        self.outbox = _Outbox(conn)
        self.books: list[_RemoteBooks] = []
        self.handlers = Handlers([])
        self.publishing: asyncio.Task[None] | None = None
        self.sampler = ResourceSampler()
        self.threads_before = 0

    async def serve(self) -> None:
        flushing = asyncio.create_task(self.outbox.run(), name="exprun-share-outbox")
        self.sampler.start()
        self.sampler.exclude(flushing)
        self.threads_before = self.sampler.usage().threads
        try:
            while True:
                await readable(self.conn)
                try:
                    command = self.conn.recv()
                except (EOFError, OSError):
                    return  # the trial process is gone
                if command[0] == "close":
                    await self._close()
                    return
                await self._do(command)
        finally:
            flushing.cancel()
            with contextlib.suppress(Exception):
                await self.driver.close()
            await self.sampler.stop()

    async def _do(self, command: tuple[Any, ...]) -> None:
        kind, *args = command
        try:
            if kind == "consumers":
                await self._start_consumers(*args)
                self._reply("ok")
            elif kind == "producers":
                await self.driver.connect_producers()
                self._reply("ok")
            elif kind == "phase":
                self.driver.phase_started()
                self.sampler.start_phase()
            elif kind == "release":
                await self.driver.release_consumers()
                self._reply("ok")
            elif kind == "go":
                self.publishing = asyncio.create_task(self._publish(*args))
            elif kind == "idle":
                await self.handlers.idle()
                if not self.outbox.ledgers:  # consumers only: their CPU over the whole phase
                    self.sampler.sample_loadgen()
                self.outbox.flush()
                self._reply("ok", self.handlers.last_done_ns)
        except DriverError as error:
            self._reply("error", str(error))
        except Exception as error:
            self._reply("error", f"{type(error).__name__}: {error}")

    def _reply(self, *message: Any) -> None:
        self.conn.send(("reply", *message))

    async def _start_consumers(
        self, sinks: Sequence[tuple[int, int]], count: int, held: bool, workers: int, work: float
    ) -> None:
        whole = self.driver.whole_groups
        pools = []
        for topic, index in sinks:
            here = self.placement.workers(workers, index, count, whole)
            if here:
                books = _RemoteBooks(topic, index, self.outbox)
                self.books.append(books)
                pools.append(HandlerPool(here, work, books))
        self.handlers = self.outbox.handlers = Handlers(pools)
        self.handlers.start()
        await self.driver.start_consumers(pools, count, held=held)

    async def _publish(self, plan: PublishPlan, resolve_timeout: float) -> None:
        """The producers placed here; their books (only theirs) go back to the trial."""
        acked = SeqSet()
        ledgers = [ProducerLedger(acked) for _ in range(plan.producers)]
        own = self.placement.producers(plan.producers)
        for index in own:
            ledger = ledgers[index]
            ledger.measure_from_ns = plan.schedule.ramp_end_ns if plan.schedule.has_ramp else 0
            if plan.acks_over_time:
                ledger.timeline = AckTimeline(plan.start_ns)
        self.outbox.ledgers = [ledgers[index] for index in own]
        marking = None
        if series_enabled():

            def mark(tick: int, at_ns: int) -> None:
                for index in own:
                    ledgers[index].mark(tick, at_ns)

            marking = asyncio.create_task(tick(plan.schedule, mark), name="exprun-ticks")
        failure: tuple[bool, str] | None = None
        # Every share starts at the phase's start, wherever it runs.
        await asyncio.sleep(max(0.0, (plan.start_ns - now_ns()) / NS_PER_S))
        try:
            await self.driver.publish(plan, ledgers, resolve_timeout)
        except PublishStalled as error:
            failure = (True, str(error))
        except Exception as error:
            failure = (False, f"{type(error).__name__}: {error}")
        finally:
            if marking is not None:
                marking.cancel()
        self.sampler.sample_loadgen()
        self.outbox.flush()
        states = {index: ledgers[index].state() for index in own}
        self.conn.send(("published", states, failure))

    async def _close(self) -> None:
        if self.publishing is not None:
            self.publishing.cancel()
            with contextlib.suppress(BaseException):
                await self.publishing
        driver, sampler = self.driver, self.sampler
        sampler.end_phase()
        await driver.close()
        await self.handlers.close()
        self.outbox.flush()
        resources = LoadGeneratorFigures(
            process=self.placement.process,
            rss_peak_mb=sampler.peak_rss_mb or None,
            threads_peak=sampler.peak_threads or None,
            cpu_percent=sampler.loadgen_cpu_percent,
            leaked_threads=sampler.usage().threads - self.threads_before,
        )
        figures, produced = driver.consumer_figures, driver.producer_figures
        self.conn.send(
            (
                "closed",
                ShareFigures(
                    problem=driver.problem,
                    ready_s=figures.ready_s,
                    rebalances=figures.rebalances,
                    commit_latency=[dict(r.counts) for r in figures.commit_latency],
                    ack_pending_peak={b.index: b.ack_pending_peak for b in self.books},
                    foreign={b.index: b.foreign for b in self.books},
                    last_done_ns=self.handlers.last_done_ns,
                    resources=resources,
                    transaction_commit=[dict(r.counts) for r in produced.transaction_commit],
                    transactions_aborted=produced.transactions_aborted,
                ),
            )
        )


# --- the trial process's side ------------------------------------------------------------


@dataclass
class _ShareProcess:
    """One forked share, seen from the trial process."""

    number: int
    pid: int | None  # None: on another host
    conn: Connection
    host: RemoteHost | None = None
    clock: ClockReading | None = None  # its clock against ours (on another host)
    # Answers by kind: a reply to a command, the producers' books, the closing figures.
    answers: dict[str, asyncio.Queue[tuple[Any, ...]]] = field(
        default_factory=lambda: {kind: asyncio.Queue() for kind in ANSWERS}
    )
    # One question at a time: answers come back in the order of the questions.
    asking: asyncio.Lock = field(default_factory=asyncio.Lock)
    acked: int = 0
    last_done_ns: int | None = None
    gone: str | None = None
    reaped: bool = False


class SharedDriver(Driver):
    """The trial's driver when its clients run in load-generator processes.

    Topic admin is the broker driver's (`admin`, which connects no clients); everything about
    clients is the shares', whose deliveries land in the accounting given to start().
    """

    def __init__(
        self,
        admin: Driver,
        processes: int,
        remote: RemoteShares | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        super().__init__(
            admin.address,
            admin.config,
            admin.destination,
            admin.setup_timeout,
            admin.layout,
            faults=admin.faults,
        )
        self.admin = admin
        self.processes = processes
        # On other hosts: the shares connect to `listener` and prove they know the key.
        self.remote, self.listener = remote, listener
        self.shares: list[_ShareProcess] = []
        self.handlers = _SharedHandlers(self)
        self._accounting: Accounting | None = None
        self._processing_time = 0.0
        self.load_generators: list[LoadGeneratorFigures] = []  # each one's own, once closed
        self._readers: list[asyncio.Task[None]] = []

    @property
    def whole_groups(self) -> bool:
        return self.admin.whole_groups

    @property
    def marks_producers(self) -> bool:
        return True

    @property
    def start_lead_ns(self) -> int:
        slowest = max(
            (share.clock.uncertainty_ns for share in self.shares if share.clock), default=0
        )
        return round(START_LEAD_S * NS_PER_S) + 4 * slowest

    @property
    def clock_uncertainty_ms(self) -> float | None:
        """The worst share's bound on its clock error (shares on other hosts only)."""
        readings = [share.clock.uncertainty_ns for share in self.shares if share.clock]
        return round(max(readings) / 1e6, 3) if readings else None

    def helper_pids(self) -> Sequence[int]:
        return tuple(s.pid for s in self.shares if s.pid is not None and not s.reaped)

    def publish_policy(self) -> PublishPolicy | None:
        return self.admin.publish_policy()

    @property
    def counts_retries(self) -> bool:
        return self.admin.counts_retries

    @property
    def at_most_once(self) -> bool:
        return self.admin.at_most_once

    async def create_destination(self) -> None:
        await self.admin.create_destination()

    async def delete_destination(self) -> None:
        await self.admin.delete_destination()

    async def start(self, accounting: Accounting, processing_time: float) -> Handlers:
        """Fork the shares; what their handlers receive is accounted in `accounting`."""
        self._accounting = accounting
        self._processing_time = processing_time
        if self.remote is not None:
            # A thread of its own that ends here: the loop's default pool would outlive the
            # trial's clients and read as a leaked thread.
            with ThreadPoolExecutor(1, thread_name_prefix="exprun-accept") as accepting:
                await asyncio.get_running_loop().run_in_executor(
                    accepting, self._accept, self.remote
                )
        else:
            self._fork()
        for share in self.shares:
            self._readers.append(
                asyncio.create_task(self._read(share), name=f"exprun-share-{share.number}")
            )
        return self.handlers

    def _fork(self) -> None:
        trial_pid = os.getpid()
        for number in range(self.processes):
            ours, theirs = Pipe()
            pid = os.fork()
            if pid == 0:  # the share: never returns
                ours.close()
                driver = self.admin.placed(Placement(number, self.processes))
                forked_body(trial_pid, "exprun-share", partial(_serve, theirs, driver))
            theirs.close()
            self.shares.append(_ShareProcess(number, pid, ours))

    def _accept(self, remote: RemoteShares) -> None:
        """The shares on other hosts, as they connect, each with its clock measured."""
        assert self.listener is not None
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        waiting = set(range(remote.processes))
        try:
            while waiting:
                left = deadline - time.monotonic()
                conn, hello = accept(self.listener, remote.authkey, max(0.001, left))
                if hello.share not in waiting:
                    conn.close()
                    continue
                clock = measure_clock(conn, CONNECT_TIMEOUT_S)
                waiting.discard(hello.share)
                host = remote.host_of(hello.share)
                self.shares.append(_ShareProcess(hello.share, None, conn, host, clock))
        except LinkError as error:
            missing = ", ".join(
                f"{n} (on {remote.host_of(n).hostname}, {remote.host_of(n).worker})"
                for n in sorted(waiting)
            )
            raise DriverError(
                f"load-generator process {missing} did not connect: {error}"
            ) from None
        finally:
            self.listener.close()
        self.shares.sort(key=lambda share: share.number)

    async def start_consumers(
        self, sinks: Sequence[MessageSink], count: int, *, held: bool = False
    ) -> None:
        """The shares' consumers (their own pools are the sinks: `sinks` is not used)."""
        assert self._accounting is not None
        started = now_ns()
        subscriptions = [(s.topic, s.index) for s in self._accounting.subscriptions]
        pools = (self.config.workers, self._processing_time)
        # One after the other: the first creates a subscription's JetStream consumer, and two
        # processes creating the same one at once may both fail.
        for share in self.shares:
            await self._ask(share, "consumers", subscriptions, count, held, *pools)
        self.consumer_figures.ready_s = round((now_ns() - started) / NS_PER_S, 4)

    async def connect_producers(self) -> None:
        await asyncio.gather(*(self._ask(share, "producers") for share in self.shares))

    def phase_started(self) -> None:
        super().phase_started()
        for share in self.shares:
            self._send(share, ("phase",))

    async def release_consumers(self) -> None:
        await asyncio.gather(*(self._ask(share, "release") for share in self.shares))

    async def stored_messages(self) -> int | None:
        return sum(share.acked for share in self.shares)

    async def publish(
        self, plan: PublishPlan, ledgers: Sequence[ProducerLedger], resolve_timeout: float
    ) -> None:
        for share in self.shares:
            self._send(share, ("go", plan, resolve_timeout))
        answers = await asyncio.gather(*(self._answer(share, "published") for share in self.shares))
        failures = []
        for states, failure in answers:
            for index, state in states.items():
                ledgers[index].absorb(state)
            if failure is not None:
                failures.append(failure)
        for ledger in ledgers:
            ledger.close()
        if failures:
            stalled, text = failures[0]
            raise (PublishStalled if stalled else DriverError)(text)

    async def idle(self) -> int | None:
        """Once every share's handlers are idle: the last time one finished a message."""
        answers = await asyncio.gather(*(self._ask(share, "idle") for share in self.shares))
        return max((done for (done,) in answers if done is not None), default=None)

    async def close(self) -> None:
        try:
            live = [share for share in self.shares if share.gone is None]
            for share in live:
                self._send(share, ("close",))
            for share in live:
                with contextlib.suppress(DriverError, TimeoutError):
                    figures = await asyncio.wait_for(self._answer(share, "closed"), STOP_TIMEOUT_S)
                    self._take(figures[0], share)
        finally:
            await self._reap()

    def _take(self, figures: ShareFigures, share: _ShareProcess) -> None:
        """A share's closing figures, into the trial's."""
        if figures.problem is not None and self.problem is None:
            self.problem = figures.problem
        mine = self.consumer_figures
        if figures.rebalances is not None:
            mine.rebalances = (mine.rebalances or 0) + figures.rebalances
        for counts in figures.commit_latency:
            recorder = LatencyRecorder()
            recorder.add_counts(counts)
            mine.commit_latency.append(recorder)
        produced = self.producer_figures
        if figures.transactions_aborted is not None:
            aborted = (produced.transactions_aborted or 0) + figures.transactions_aborted
            produced.transactions_aborted = aborted
        for counts in figures.transaction_commit:
            recorder = LatencyRecorder()
            recorder.add_counts(counts)
            produced.transaction_commit.append(recorder)
        assert self._accounting is not None
        subscriptions = self._accounting.subscriptions
        for index, peak in figures.ack_pending_peak.items():
            subscriptions[index].ack_pending_peak = max(subscriptions[index].ack_pending_peak, peak)
        for index, foreign in figures.foreign.items():
            subscriptions[index].foreign += foreign
        if figures.last_done_ns is not None:
            self.handlers.done(figures.last_done_ns)
        self.load_generators.append(self._place(share, figures.resources))

    def _place(self, share: _ShareProcess, figures: LoadGeneratorFigures) -> LoadGeneratorFigures:
        """A share's own figures, with where it ran and how well its clock agreed with ours."""
        if share.host is None or share.clock is None:
            return figures
        return figures.model_copy(
            update={
                "host": share.host.worker,
                "clock_offset_ms": round(share.clock.offset_ns / 1e6, 3),
                "clock_uncertainty_ms": round(share.clock.uncertainty_ns / 1e6, 3),
            }
        )

    async def _reap(self) -> None:
        deadline = now_ns() + round(STOP_TIMEOUT_S * NS_PER_S)
        for share in self.shares:
            if share.pid is not None and not share.reaped:
                await reap(share.pid, max(0.0, (deadline - now_ns()) / NS_PER_S))
                share.reaped = True
            share.conn.close()
        if self.listener is not None:
            self.listener.close()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    # --- the pipes ---

    def _send(self, share: _ShareProcess, message: tuple[Any, ...]) -> None:
        if share.gone is not None:
            raise DriverError(share.gone)
        try:
            share.conn.send(message)
        except OSError:
            raise DriverError(f"load-generator process {share.number} is gone") from None

    async def _ask(self, share: _ShareProcess, *command: Any) -> tuple[Any, ...]:
        async with share.asking:
            self._send(share, command)
            return await self._answer(share, "reply")

    async def _answer(self, share: _ShareProcess, kind: str) -> tuple[Any, ...]:
        """The share's next answer of `kind`, without its kind; DriverError on its error."""
        message = await share.answers[kind].get()
        if message[0] == "gone":
            raise DriverError(message[1])
        if message[0] != kind:
            raise DriverError(f"load-generator process {share.number} answered {message[0]!r}")
        if kind == "reply" and message[1] == "error":
            raise DriverError(message[2])
        return message[2:] if kind == "reply" else message[1:]

    async def _read(self, share: _ShareProcess) -> None:
        """Everything a share sends: deliveries go to the books, answers to its queue."""
        accounting = self._accounting
        assert accounting is not None
        subscriptions = accounting.subscriptions
        try:
            while True:
                await readable(share.conn)
                message = share.conn.recv()
                if message[0] == "received":
                    _, records, share.acked, last_done = message
                    for index, data in records.items():
                        account_received(subscriptions[index], data)
                    if last_done is not None:
                        self.handlers.done(last_done)
                elif message[0] == "gone":
                    share.gone = message[1]
                    raise EOFError
                else:
                    await share.answers[message[0]].put(message)
                    if message[0] == "closed":
                        return  # the share exits now: its end is no problem
        except (EOFError, OSError):
            where = f" on {share.host.hostname} ({share.host.worker})" if share.host else ""
            share.gone = (
                share.gone or f"load-generator process {share.number}{where} ended unexpectedly"
            )
            if self.problem is None:
                self.problem = share.gone
            for answers in share.answers.values():
                await answers.put(("gone", share.gone))


def received_record(header: bytes, received_ns: int, redelivered: bool) -> bytes:
    """One message a share's handler received: its header, when, and whether redelivered."""
    return header + TAIL.pack(received_ns, redelivered)


def account_received(subscription: Subscription, data: bytes) -> None:
    """A share's received records into the subscription's books, as if received here."""
    view = memoryview(data)
    on_delivery, unpack_tail = subscription.on_delivery, TAIL.unpack_from
    for offset in range(0, len(data), RECORD_SIZE):
        received_ns, redelivered = unpack_tail(view, offset + HEADER_SIZE)
        on_delivery(bytes(view[offset : offset + HEADER_SIZE]), received_ns, bool(redelivered))


class _SharedHandlers(Handlers):
    """The handler pools of every share, as the trial's phase waits on them."""

    def __init__(self, driver: SharedDriver) -> None:
        super().__init__([])
        self.driver = driver
        self._last_done_ns: int | None = None

    def start(self) -> None:
        """The shares start their own pools with their consumers."""

    async def idle(self) -> None:
        done = await self.driver.idle()
        if done is not None:
            self.done(done)

    async def close(self) -> None:
        """The shares close their pools with their clients."""

    def done(self, at_ns: int) -> None:
        self._last_done_ns = max(self._last_done_ns or 0, at_ns)

    @property
    def last_done_ns(self) -> int | None:
        return self._last_done_ns
