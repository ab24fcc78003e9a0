"""NATS JetStream driver (nats-py): per-trial stream, windowed async publish, push/pull consumers.

Measured on 2 cores (20,000 x 1 KiB, in-memory stream): nats-py's own `publish_async` loop
~70k msg/s, the window below ~157k msg/s (no future, no JSON parse per successful ack); an
ordered push consumer delivers ~210k msg/s, a pull consumer with 500-message fetches ~45k msg/s.

nats-py does all its work (protocol parsing included) in Python on the event loop, so the
producers run in a publisher process forked from the trial process, with their own loop and
connections; the trial process keeps the consumers and the handler pool. Measured with
benchmarks.harness (100,000 x 1 KiB, 256 workers, zero processing time): end-to-end 58k ->
95k msg/s, end-to-end / publish 0.60 -> 0.98. The publisher process's own RSS, threads and
tasks are not in the trial's figures before and after the phase (it exits when its messages
are answered), but its threads and unique memory count in the peaks (threads_peak,
rss_peak_mb), as producer threads do in the Kafka driver; its asyncio tasks do not.
EXPRUN_NATS_PUBLISHER=loop runs the producers on the trial's loop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from runner.execution.brokers.access import PLAIN, ClientAccess
from runner.execution.drivers.base import (
    Driver,
    DriverError,
    MessageSink,
    PublishPlan,
    PublishStalled,
    check_reachable,
)
from runner.execution.drivers.nats_consumers import Subscriber
from runner.execution.drivers.nats_core import CoreProducer, CoreSubscriber, await_subscriptions
from runner.execution.drivers.nats_kv import KvClient
from runner.execution.drivers.nats_producers import Producer, Requester, supervise
from runner.execution.drivers.placement import Placement
from runner.execution.measure.accounting import Layout
from runner.execution.measure.availability import AckTimeline
from runner.execution.measure.ledger import ProducerLedger
from runner.execution.measure.messages import NS_PER_S, now_ns
from runner.execution.measure.seqsets import SeqSet
from runner.execution.measure.series import series_enabled
from runner.execution.measure.series import tick as ticks
from runner.process import forked_body, readable, reap
from schemas.results import PublishPolicy
from schemas.spec import NatsBroker
from schemas.units import format_duration

UNLIMITED = -1
FAULT_RECONNECT_WAIT_S = 0.1  # between tries to reach another node after a fault
PROBE_TIMEOUT_S = 1.0
API_TRY_S = 2.0  # one try at creating or deleting a stream
PROBE_KEY = "exprun-probe"  # a key of the bucket that is never put, to find its stream answering
AnyProducer = Producer | CoreProducer
# Where the producers run: "process" (a forked publisher process, the default) or "loop" (on the
# trial's own event loop, next to the consumers). The benchmark flips it to measure the gain.
PUBLISHER_ENV = "EXPRUN_NATS_PUBLISHER"


class NatsDriver(Driver):
    """JetStream clients of one trial; every client has its own connection."""

    config: NatsBroker

    def __init__(
        self,
        address: str,
        config: NatsBroker,
        destination: str,
        setup_timeout: float,
        layout: Layout | None = None,
        *,
        faults: bool = False,
        placement: Placement | None = None,
        access: ClientAccess = PLAIN,
    ) -> None:
        super().__init__(
            address,
            config,
            destination,
            setup_timeout,
            layout,
            faults=faults,
            placement=placement,
            access=access,
        )
        self._connections: list[NATS] = []
        self._producers: list[AnyProducer] = []
        self._closing = False
        self._closed_by_us: set[str] = set()  # connection names whose end is no problem
        self._publisher: _PublisherProcess | None = None
        self._subscribers: list[Subscriber | CoreSubscriber] = []
        self.client_errors: list[str] = []
        self.disconnects = 0  # dropped by faults or as slow consumers (then reconnected)

    # --- connections ---------------------------------------------------------------------

    async def _connect(self, name: str, producer: AnyProducer | None = None) -> NATS:
        """A connection of its own; a producer on it hears when it drops and comes back."""

        async def on_error(error: Exception) -> None:
            if len(self.client_errors) < 100:
                self.client_errors.append(f"{type(error).__name__}: {error}")

        # At most once, a server drops a subscriber that cannot keep up (a slow consumer): its
        # loss is the measurement, and it reconnects as nats-py's defaults would have it do.
        resilient = self.faults or self.at_most_once

        async def on_disconnect() -> None:
            if producer is not None:
                producer.disconnected()
            if resilient:
                self.disconnects += 1
            elif not (self._closing or name in self._closed_by_us) and self.problem is None:
                self.problem = f"lost the connection to NATS at {self.address} ({name})"

        async def on_reconnect() -> None:
            if producer is not None:
                producer.reconnected()

        try:
            return await nats.connect(
                servers=self.address.split(","),
                name=name,
                connect_timeout=max(1, round(self.setup_timeout)),
                # A trial whose connection drops is failed, not silently resumed (unless the
                # trial's own faults dropped it: then it reconnects to another node at once);
                # and a failed first connect is not retried for minutes (nats-py's defaults).
                allow_reconnect=resilient,
                max_reconnect_attempts=-1 if resilient else 1,
                reconnect_time_wait=FAULT_RECONNECT_WAIT_S if resilient else 1,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                **self.access.nats.connect_options(),
            )
        except (TimeoutError, OSError, NatsError) as error:
            raise DriverError(f"cannot connect to NATS at {self.address}: {_why(error)}") from None

    async def _with_admin(self, action: Callable[[NATS], Awaitable[None]]) -> None:
        """Run a JetStream API call on a short-lived connection of its own."""
        name = f"exprun-admin-{len(self._closed_by_us)}"
        nc = await self._connect(name)
        try:
            await action(nc)
        finally:
            self._closed_by_us.add(name)
            await nc.close()

    # --- destination ---------------------------------------------------------------------

    @property
    def _streams(self) -> bool:
        """Messages go to JetStream streams (not core subjects: requests, or `jetstream: false`)."""
        return self.config.jetstream and self.layout.pattern == "stream"

    async def create_destination(self) -> None:
        check_reachable("NATS", self.address.split(","))
        if self.layout.pattern == "kv":
            await self._with_admin(self._create_bucket)
        if not self._streams:
            return  # core NATS subjects need no creating
        stream = self.config.stream

        async def create(nc: NATS) -> None:
            for name in self.destinations:
                config = StreamConfig(
                    name=name,
                    subjects=[name],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.MEMORY if stream.storage == "memory" else StorageType.FILE,
                    max_msgs=UNLIMITED if stream.max_msgs == "unlimited" else stream.max_msgs,
                    max_bytes=UNLIMITED if stream.max_bytes == "unlimited" else stream.max_bytes,
                    discard=DiscardPolicy.OLD if stream.discard == "old" else DiscardPolicy.NEW,
                    num_replicas=stream.replicas,
                    duplicate_window=self.config.duplicate_window or 0,  # 0: the server's
                )
                # The same stream asked for again is no error: a try that timed out may have
                # made it.
                add = partial(_add_stream, nc, config)
                await self._until_answered(add, f"create JetStream stream {name!r}")

        await self._with_admin(create)

    async def _until_answered(self, call: Callable[[float], Awaitable[None]], what: str) -> None:
        """call(timeout), asked again while it times out, until setup_timeout has passed.

        A cluster may let a JetStream API request go unanswered: while its meta group settles
        after a node came back (a trial's restart fault), or when it is slow under load.
        """
        deadline = now_ns() + round(self.setup_timeout * NS_PER_S)
        while True:
            try:
                await call(min(API_TRY_S, self.setup_timeout))
                return
            except TimeoutError:
                if now_ns() >= deadline:
                    raise DriverError(f"cannot {what}: timed out") from None
            except NatsError as error:
                raise DriverError(f"cannot {what}: {_why(error)}") from None

    async def _create_bucket(self, nc: NATS) -> None:
        stream = self.config.stream
        config = KeyValueConfig(
            bucket=self.destinations[0],
            history=stream.history,
            storage=StorageType.MEMORY if stream.storage == "memory" else StorageType.FILE,
            replicas=stream.replicas,
            direct=True,  # gets are direct gets, answered by any replica
        )
        try:
            await nc.jetstream(timeout=self.setup_timeout).create_key_value(config)
        except (TimeoutError, NatsError) as error:
            raise DriverError(
                f"cannot create the KV bucket {config.bucket!r}: {_why(error)}"
            ) from None

    async def delete_destination(self) -> None:
        if self.layout.pattern == "kv":

            async def delete_bucket(nc: NATS) -> None:
                js = nc.jetstream(timeout=self.setup_timeout)
                with contextlib.suppress(NotFoundError):
                    await js.delete_key_value(self.destinations[0])

            try:
                await self._with_admin(delete_bucket)
            except (TimeoutError, NatsError) as error:
                raise DriverError(f"cannot delete the KV bucket: {_why(error)}") from None
        if not self._streams:
            return

        async def delete(nc: NATS) -> None:
            for name in self.destinations:
                remove = partial(_delete_stream, nc, name)
                await self._until_answered(remove, f"delete JetStream stream {name!r}")

        await self._with_admin(delete)

    # --- consumers -----------------------------------------------------------------------

    async def start_consumers(
        self, sinks: Sequence[MessageSink], count: int, *, held: bool = False
    ) -> None:
        """A JetStream consumer per subscription, read by `count` clients of their own
        connections (nats_consumers.py), or a queue group of core subscribers (responders to
        requests); held ones subscribe when released."""
        started = now_ns()
        for sink in sinks:
            connections = [
                await self._connection(f"exprun-consumer-{sink.subscription}-{index}")
                for index in range(count)
                if self.runs_consumer(sink.subscription, index, count)
            ]
            if not connections:
                continue
            stream = self.destinations[sink.topic]
            self._subscribers.append(
                Subscriber(
                    stream, self.config.consumer, sink, connections, self.setup_timeout, count
                )
                if self._streams
                else CoreSubscriber(
                    stream, sink, connections, replies=self.layout.pattern == "request_reply"
                )
            )
        if not held:
            await self.release_consumers()
        self.consumer_figures.ready_s = round((now_ns() - started) / NS_PER_S, 4)

    async def release_consumers(self) -> None:
        for subscriber in self._subscribers:
            await subscriber.start()

    async def stored_messages(self) -> int | None:
        if self._publisher is None or not self._subscribers or not self._streams:
            return None  # the producers are here (or nothing is stored): count their acks
        js = self._subscribers[0].connections[0].jetstream(timeout=self.setup_timeout)
        try:
            infos = [await js.stream_info(name) for name in self.destinations]
        except (TimeoutError, NatsError) as error:
            raise DriverError(f"cannot read the streams' state: {_why(error)}") from None
        return sum(int(info.state.messages) for info in infos)

    @property
    def marks_producers(self) -> bool:
        return self._publisher is not None

    async def _connection(self, name: str, producer: AnyProducer | None = None) -> NATS:
        nc = await self._connect(name, producer)
        self._connections.append(nc)
        return nc

    # --- producers -----------------------------------------------------------------------

    def publish_policy(self) -> PublishPolicy:
        if self.layout.pattern != "stream":
            return PublishPolicy(retried_by=None, delivery_timeout_s=None, idempotent=False)
        if not self.config.jetstream:
            return PublishPolicy(
                retried_by=None, delivery_timeout_s=None, idempotent=False, at_most_once=True
            )
        publish, window = self.config.publish, self.config.duplicate_window
        settings = {"delivery_timeout": format_duration(publish.delivery_timeout)}
        if publish.retrying:
            settings["retry_wait"] = format_duration(publish.retry_wait)
        settings["ack_timeout"] = format_duration(publish.ack_timeout)
        if window is not None:
            settings["duplicate_window"] = format_duration(window)
        # A retry carries its message's id, which the stream remembers as long as one can come.
        return PublishPolicy(
            retried_by="exprun" if publish.retrying else None,
            delivery_timeout_s=publish.delivery_timeout if publish.retrying else None,
            idempotent=publish.retrying,
            settings=settings,
        )

    @property
    def counts_retries(self) -> bool:
        return self._streams

    @property
    def at_most_once(self) -> bool:
        return not self.config.jetstream and self.layout.pattern == "stream"

    def helper_pids(self) -> Sequence[int]:
        publisher = self._publisher
        return (publisher.pid,) if publisher is not None and not publisher.exited else ()

    async def connect_producers(self) -> None:
        # A load-generator process of a trial spread over several is the publisher's own.
        if self.placement.shared or os.environ.get(PUBLISHER_ENV, "process") == "loop":
            await self._connect_producers_here()
        else:
            self._publisher = await _PublisherProcess.start(self)

    async def publish(
        self, plan: PublishPlan, ledgers: Sequence[ProducerLedger], resolve_timeout: float
    ) -> None:
        if self._publisher is None:
            await self._publish_here(plan, ledgers, resolve_timeout)
            return
        try:
            problem, errors = await self._publisher.publish(plan, ledgers, resolve_timeout)
        finally:
            for ledger in ledgers:
                ledger.close()
        self.client_errors.extend(errors[: 100 - len(self.client_errors)])
        if problem is not None and self.problem is None:
            self.problem = problem

    async def _connect_producers_here(self) -> None:
        # Message ids unique in the run: the trial's own name, then the sequence number.
        id_prefix = f"{self.destination.removeprefix('exprun-')}."
        for index in self.placement.producers(self.layout.producers):
            subject = self.destinations[self.layout.topic_of_producer(index)]
            producer: AnyProducer
            if self._streams:
                producer = Producer(index, self.config.publish, subject, id_prefix)
            elif self.layout.pattern == "request_reply":
                producer = Requester(index, self.config.publish, subject)
            elif self.layout.kv is not None:
                producer = KvClient(index, self.config.publish, subject, self.layout)
            else:
                producer = CoreProducer(index, subject)
            nc = await self._connection(f"exprun-producer-{index}", producer)
            await producer.listen(nc)
            if self._streams:
                await _stream_answers(nc, subject, self.setup_timeout)
            elif isinstance(producer, KvClient):
                await _stream_answers(nc, f"$KV.{subject}.{PROBE_KEY}", self.setup_timeout)
                await producer.preload(nc, self.setup_timeout)
            else:
                subscriptions = self.layout.subscriptions_per_topic
                await await_subscriptions(nc, subject, subscriptions, self.setup_timeout)
            self._producers.append(producer)

    async def _publish_here(
        self,
        plan: PublishPlan,
        ledgers: Sequence[ProducerLedger],
        resolve_timeout: float,
        *,
        mark: bool = False,
    ) -> None:
        """Run the producers on this loop; `mark`: their books are marked here, every tick."""
        own = [ledgers[producer.index] for producer in self._producers]
        tasks = [
            asyncio.create_task(
                producer.run(plan, ledger), name=f"exprun-nats-producer-{producer.index}"
            )
            for producer, ledger in zip(self._producers, own, strict=True)
        ]
        if mark and series_enabled():

            def mark_all(tick: int, at_ns: int) -> None:
                for ledger in own:
                    ledger.mark(tick, at_ns)

            tasks.append(asyncio.create_task(ticks(plan.schedule, mark_all), name="exprun-ticks"))
        try:
            await supervise(tasks[: len(self._producers)], self._producers, resolve_timeout)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ledger in own:
                ledger.close()

    # --- teardown ------------------------------------------------------------------------

    async def close(self) -> None:
        self._closing = True
        if self._publisher is not None:
            await self._publisher.stop(self.setup_timeout)
            self._publisher = None
        for subscriber in self._subscribers:
            await subscriber.stop()
        self._subscribers = []
        for nc in self._connections:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), self.setup_timeout)
        self._connections = []
        self._producers = []


class _PublisherProcess:
    """The trial's producers in a forked child with its own event loop and connections.

    nats-py does all its work in Python on one event loop; shared with the consumers, the
    producers got half of one core at most. The child is forked from the trial process (its
    modules are already loaded), dies with it, and sends back every producer's books once all
    its messages are answered, so the accounting stays exact.
    """

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        self.publishing = False  # "go" sent, "done" not yet received
        self.exited = False

    @classmethod
    async def start(cls, driver: NatsDriver) -> _PublisherProcess:
        """Fork the publisher; returns once its `count` producers are connected."""
        ours, theirs = multiprocessing.Pipe()
        trial_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            ours.close()
            serve = partial(asyncio.run, _serve_publisher(theirs, driver))
            forked_body(trial_pid, "exprun-nats-publisher", serve)
        theirs.close()
        publisher = cls(pid, ours)
        try:
            kind, detail = await _receive(ours, "the NATS publisher process")
        except BaseException:
            await publisher.stop(0.0)
            raise
        if kind != "ready":
            await publisher.stop(0.0)
            raise DriverError(str(detail))
        return publisher

    async def publish(
        self, plan: PublishPlan, ledgers: Sequence[ProducerLedger], resolve_timeout: float
    ) -> tuple[str | None, list[str]]:
        """Run the plan in the child; its ledgers' books land in `ledgers`.

        Returns (connection problem, client errors) seen by the child.
        """
        self.publishing = True
        self.conn.send(("go", plan, resolve_timeout))
        _, states, failure, problem, errors = await _receive(
            self.conn, "the NATS publisher process"
        )
        self.publishing = False
        for ledger, state in zip(ledgers, states, strict=True):
            ledger.absorb(state)
        if failure is not None:
            stalled, text = failure
            raise (PublishStalled if stalled else DriverError)(text)
        return problem, errors

    async def stop(self, timeout: float) -> None:
        """Let the child close its connections and exit (killed after `timeout`), then reap it."""
        if self.exited:
            return
        if self.publishing:
            timeout = 0.0  # interrupted mid-plan: nothing it could still report is wanted
        else:
            with contextlib.suppress(OSError):
                self.conn.send(("stop",))
        await reap(self.pid, timeout)
        self.exited = True
        self.conn.close()


async def _serve_publisher(conn: Connection, trial_driver: NatsDriver) -> None:
    """In the publisher process: connect, report ready, run the plan on "go", send the books."""
    driver = NatsDriver(
        trial_driver.address,
        trial_driver.config,
        trial_driver.destination,
        trial_driver.setup_timeout,
        trial_driver.layout,
        faults=trial_driver.faults,
        access=trial_driver.access,
    )
    try:
        try:
            await driver._connect_producers_here()
        except DriverError as error:
            conn.send(("error", str(error)))
            return
        conn.send(("ready", None))
        request = await _receive(conn, "the trial process")
        if request[0] != "go":
            return
        _, plan, resolve_timeout = request
        count = driver.layout.producers
        acked = SeqSet()
        ledgers = [ProducerLedger(acked) for _ in range(count)]
        for ledger in ledgers:
            ledger.measure_from_ns = plan.schedule.ramp_end_ns if plan.schedule.has_ramp else 0
            if plan.acks_over_time:
                ledger.timeline = AckTimeline(plan.start_ns)
        failure: tuple[bool, str] | None = None
        try:
            await driver._publish_here(plan, ledgers, resolve_timeout, mark=True)
        except PublishStalled as error:
            failure = (True, str(error))
        except Exception as error:
            failure = (False, f"{type(error).__name__}: {error}")
        states = [ledger.state() for ledger in ledgers]
        conn.send(("done", states, failure, driver.problem, driver.client_errors))
    finally:
        await driver.close()


async def _stream_answers(nc: NATS, subject: str, timeout: float) -> None:
    """Wait until the stream answers publishes sent on this connection.

    On a cluster, a new stream's interest reaches the other nodes a moment after it was
    created: a publish in between finds no responders. The probe names another stream as the
    one expected, so the stream refuses it (stores nothing) once it hears it.
    """
    deadline = now_ns() + round(timeout * NS_PER_S)
    headers = {"Nats-Expected-Stream": "exprun-probe-not-this-stream"}
    while True:
        try:
            reply = await nc.request(subject, b"", timeout=PROBE_TIMEOUT_S, headers=headers)
        except (TimeoutError, NoRespondersError):
            reply = None
        if reply is not None and b'"error"' in reply.data:
            return
        if now_ns() >= deadline:
            raise DriverError(f"the stream for {subject} did not answer within {timeout:g}s")
        await asyncio.sleep(PROBE_TIMEOUT_S / 10)


async def _add_stream(nc: NATS, config: StreamConfig, timeout: float) -> None:
    await nc.jetstream(timeout=timeout).add_stream(config)


async def _delete_stream(nc: NATS, name: str, timeout: float) -> None:
    with contextlib.suppress(NotFoundError):  # gone, perhaps by a try that timed out
        await nc.jetstream(timeout=timeout).delete_stream(name)


async def _receive(conn: Connection, peer: str) -> Any:
    """The next message on `conn`, awaited on the event loop; DriverError once the peer is gone."""
    await readable(conn)
    try:
        return conn.recv()
    except (EOFError, OSError):
        raise DriverError(f"{peer} ended without an answer") from None


def _why(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, TimeoutError):
        text = "timed out"
    return text.removeprefix("nats: ")
