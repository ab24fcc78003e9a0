"""Apache Kafka driver (confluent-kafka): per-trial topic, batched producers, assigned consumers.

librdkafka calls block, so each producer and each consumer runs on a thread of its own (as
goroutines would in a Go client) and the handler pool stays on the event loop: consumers hand
whole batches to it. Consumers are assigned their partitions directly and read from the
beginning of the fresh topic: no group join, no rebalance wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from runner.execution.drivers.base import (
    Driver,
    DriverError,
    MessageSink,
    PublishPlan,
    PublishStalled,
    check_reachable,
)
from runner.execution.measure.accounting import ProducerLedger
from runner.execution.measure.messages import HEADER, NS_PER_S, now_ns
from runner.spec.kafka_properties import librdkafka_conf
from schemas.spec import KafkaBroker

CONSUME_BATCH = 1000
CONSUME_WAIT_S = 0.05  # how long a consume() call blocks: bounds how fast a consumer stops
POLL_EVERY = 64  # serve delivery reports every this many produce() calls
# Errors after which the client cannot do its job: the trial fails instead of timing out.
FATAL_ERRORS = {KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION}
# Answers of a broker whose fresh partition is not served yet: metadata can name a leader a
# moment before that broker has taken the partition over.
NOT_SERVED_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
}


class KafkaDriver(Driver):
    """confluent-kafka clients of one trial."""

    config: KafkaBroker

    def __init__(
        self, address: str, config: KafkaBroker, destination: str, setup_timeout: float
    ) -> None:
        super().__init__(address, config, destination, setup_timeout)
        self._producers: list[_ProducerSlot] = []
        self._consumers: list[_ConsumerThread] = []
        self._closing = False
        self.client_errors: list[str] = []

    def _on_error(self, error: KafkaError) -> None:
        # Called from librdkafka's threads via poll/consume; list.append is atomic under the GIL.
        if len(self.client_errors) < 100:
            self.client_errors.append(f"{error.name()}: {error.str()}")
        fatal = error.fatal() or error.code() in FATAL_ERRORS
        if fatal and not self._closing and self.problem is None:
            self.problem = f"Kafka client error {error.name()}: {error.str()}"

    def _common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.address, "error_cb": self._on_error}

    # --- destination ---------------------------------------------------------------------

    async def create_destination(self) -> None:
        check_reachable("Kafka", self.address.split(","))
        topic = self.config.topic
        # The admin client is dropped at once so its threads never count as the trial's.
        admin = AdminClient(self._common())
        timeout = self.setup_timeout
        futures = admin.create_topics(
            [NewTopic(self.destination, topic.partitions, topic.replication_factor)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        try:
            await asyncio.wait_for(asyncio.wrap_future(futures[self.destination]), timeout + 1)
            await self._await_leaders(admin, topic.partitions)
        except (TimeoutError, KafkaException) as error:
            raise DriverError(
                f"cannot create Kafka topic {self.destination!r}: {_why(error)}"
            ) from None
        finally:
            del admin, futures

    async def _await_leaders(self, admin: AdminClient, partitions: int) -> None:
        """Until every partition has a leader: producing earlier only adds retries."""
        deadline = time.monotonic() + self.setup_timeout
        while True:
            meta = admin.list_topics(self.destination, timeout=self.setup_timeout).topics
            found = meta.get(self.destination)
            if (
                found is not None
                and found.error is None
                and len(found.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in found.partitions.values())
            ):
                return
            if time.monotonic() > deadline:
                raise DriverError(f"Kafka topic {self.destination!r} has no leader in time")
            await asyncio.sleep(0.01)

    async def _await_gone(self, admin: AdminClient) -> None:
        """Until the broker's metadata no longer lists the topic: the controller accepts the
        deletion a moment before the broker has applied it, and the next trial should not
        share the broker with a deletion still in progress."""
        deadline = time.monotonic() + self.setup_timeout
        while self.destination in admin.list_topics(timeout=self.setup_timeout).topics:
            if time.monotonic() > deadline:
                raise DriverError(f"Kafka topic {self.destination!r} is still listed after delete")
            await asyncio.sleep(0.01)

    async def delete_destination(self) -> None:
        admin = AdminClient(self._common())
        futures = admin.delete_topics([self.destination], operation_timeout=self.setup_timeout)
        try:
            await asyncio.wait_for(
                asyncio.wrap_future(futures[self.destination]), self.setup_timeout + 1
            )
            await self._await_gone(admin)
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            if not (
                isinstance(kafka_error, KafkaError)
                and kafka_error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                raise DriverError(
                    f"cannot delete Kafka topic {self.destination!r}: {_why(error)}"
                ) from None
        except TimeoutError:
            raise DriverError(
                f"cannot delete Kafka topic {self.destination!r}: timed out"
            ) from None
        finally:
            del admin, futures

    # --- consumers -----------------------------------------------------------------------

    async def start_consumers(self, count: int, sink: MessageSink, *, held: bool = False) -> None:
        conf = {
            # exprun's choices unless the spec sets them: offsets are never committed.
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            **librdkafka_conf(self.config.consumer),
            **self._common(),
            "group.id": f"exprun-{self.destination}",  # required by the client; never joined
        }
        loop = asyncio.get_running_loop()
        partitions = self.config.topic.partitions
        for index in range(count):
            assigned = [
                TopicPartition(self.destination, p) for p in range(partitions) if p % count == index
            ]
            thread = _ConsumerThread(index, conf, assigned, sink, loop, self.setup_timeout)
            if not held:
                thread.go.set()
            self._consumers.append(thread)
            thread.start()
        await asyncio.gather(*(c.ready for c in self._consumers))

    async def release_consumers(self) -> None:
        for consumer in self._consumers:
            consumer.go.set()

    # --- producers -----------------------------------------------------------------------

    async def connect_producers(self, count: int) -> None:
        for _ in range(count):
            slot = _ProducerSlot(self.destination)
            conf = {**librdkafka_conf(self.config.producer), **self._common()}
            conf["on_delivery"] = slot.on_delivery
            try:
                slot.producer = Producer(conf)
                # Connects and fetches the topic's metadata before the measured phase.
                slot.producer.list_topics(self.destination, timeout=self.setup_timeout)
            except KafkaException as error:
                raise DriverError(f"cannot connect a Kafka producer: {_why(error)}") from None
            self._producers.append(slot)

    async def publish(
        self, plan: PublishPlan, ledgers: Sequence[ProducerLedger], resolve_timeout: float
    ) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        runs: list[tuple[threading.Thread, asyncio.Future[None]]] = []
        for index, (slot, ledger) in enumerate(zip(self._producers, ledgers, strict=True)):
            done: asyncio.Future[None] = loop.create_future()
            thread = threading.Thread(
                target=_in_thread,
                args=(loop, done, slot.run, plan, index, ledger, resolve_timeout, stop),
                name=f"exprun-kafka-producer-{index}",
                daemon=True,
            )
            thread.start()
            runs.append((thread, done))
        try:
            await asyncio.gather(*(done for _, done in runs))
        finally:
            stop.set()
            for thread, _ in runs:
                await _join(thread)

    # --- teardown ------------------------------------------------------------------------

    async def close(self) -> None:
        self._closing = True
        for consumer in self._consumers:
            consumer.stop.set()
        for consumer in self._consumers:
            await _join(consumer)
            if consumer.failure is not None and self.problem is None:
                self.problem = consumer.failure
        self._consumers = []
        for slot in self._producers:
            if slot.producer is not None:
                slot.producer.close()  # joins librdkafka's threads
        self._producers = []


class _ProducerSlot:
    """One producer client, and the ledger its delivery reports go to."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.producer: Producer | None = None
        self.ledger: ProducerLedger | None = None
        self.last_answer_ns = 0

    def on_delivery(self, error: KafkaError | None, msg: Message) -> None:
        # Runs on the producer's own thread, inside poll()/flush().
        now = now_ns()
        self.last_answer_ns = now
        ledger = self.ledger
        if ledger is None:
            return
        if error is None:
            seq, stamp = HEADER.unpack_from(msg.value() or b"")
            ledger.on_ack(seq, stamp, now)
        else:
            ledger.on_error(error.name())

    def run(
        self,
        plan: PublishPlan,
        index: int,
        ledger: ProducerLedger,
        resolve_timeout: float,
        stop: threading.Event,
    ) -> None:
        # The hot loop of a Kafka trial, kept in one piece: a call per message costs throughput.
        producer = self.producer
        assert producer is not None
        self.ledger = ledger
        produce, poll, encode, due = producer.produce, producer.poll, plan.codec.encode, plan.due
        topic, until = self.topic, plan.until_ns
        limit = round(resolve_timeout * NS_PER_S)
        sent = 0
        try:
            for seq in plan.seqs(index):
                _, wait = due(seq)
                while wait > 0 and not stop.is_set():
                    # Delivery reports are served while waiting for the send time. poll() takes
                    # whole milliseconds: below one, poll(0) would spin, holding the GIL the
                    # consumer and the handlers need, so serve what is there and sleep.
                    if wait >= 0.001:
                        poll(wait)
                    else:
                        poll(0)
                        time.sleep(wait)
                    _, wait = due(seq)
                blocked_since: int | None = None
                while True:
                    if stop.is_set():
                        return
                    stamp, _ = due(seq)
                    if until is not None and stamp >= until:
                        break
                    try:
                        produce(topic, encode(seq, stamp))
                        break
                    except BufferError:
                        # librdkafka's queue is full: serve reports until there is room.
                        now = now_ns()
                        blocked_since = blocked_since or now
                        if now - max(blocked_since, self.last_answer_ns) > limit:
                            raise PublishStalled(
                                "publishing stalled: librdkafka's queue stayed full with no "
                                f"delivery report for {resolve_timeout:g}s"
                            ) from None
                        poll(0.005)
                if blocked_since is not None:
                    ledger.blocked_ns += now_ns() - blocked_since
                if until is not None and stamp >= until:
                    break
                ledger.on_send(seq, stamp)
                sent += 1
                if sent % POLL_EVERY == 0:
                    poll(0)
            ledger.sending_done_ns = now_ns()
            producer.flush(resolve_timeout)
        finally:
            ledger.close()  # whatever is still unanswered counts as a timeout
            if len(producer) > 0:
                producer.purge()
                producer.flush(0)


class _ConsumerThread(threading.Thread):
    """One consumer client: consume batches, hand each to the pool (waiting while it is full)."""

    def __init__(
        self,
        index: int,
        conf: dict[str, Any],
        assigned: list[TopicPartition],
        sink: MessageSink,
        loop: asyncio.AbstractEventLoop,
        setup_timeout: float,
    ) -> None:
        super().__init__(name=f"exprun-kafka-consumer-{index}", daemon=True)
        self.conf, self.assigned, self.sink, self.loop = conf, assigned, sink, loop
        self.setup_timeout = setup_timeout
        self.stop = threading.Event()
        self.go = threading.Event()  # held consumers are ready but read nothing before it
        self.ready: asyncio.Future[None] = loop.create_future()
        self.failure: str | None = None  # why it stopped consuming early, if it did

    def run(self) -> None:
        try:
            consumer = Consumer(self.conf)
        except KafkaException as error:
            self._signal_ready(DriverError(f"cannot create a Kafka consumer: {_why(error)}"))
            return
        try:
            if self.assigned:
                # Metadata first: assigned before the leaders are known, librdkafka retries its
                # offset lookup only after 500 ms, which would land in the measured phase. And
                # an absolute start offset (the fresh topic's low watermark) needs no lookup.
                consumer.list_topics(self.assigned[0].topic, timeout=self.setup_timeout)
                deadline = time.monotonic() + self.setup_timeout
                for partition in self.assigned:
                    partition.offset = low_watermark(consumer, partition, deadline)
            if not self.go.is_set():
                self._signal_ready(None)  # held: connected, and waiting to be released
                while not self.go.wait(CONSUME_WAIT_S):
                    if self.stop.is_set():
                        return
            consumer.assign(self.assigned)
            self._signal_ready(None)
            self._consume(consumer)
        except Exception as error:
            failure = DriverError(f"Kafka consumer {self.name} failed: {_why(error)}")
            self.failure = str(failure)
            self._signal_ready(failure)
        finally:
            consumer.close()

    def _consume(self, consumer: Consumer) -> None:
        while not self.stop.is_set():
            # consume(n, timeout) waits for n messages or the timeout, which would delay a slow
            # stream by up to the timeout: wait for one message, then take what is queued.
            first = consumer.poll(CONSUME_WAIT_S)
            if first is None:
                continue
            msgs = [first, *consumer.consume(CONSUME_BATCH, 0)]
            payloads = [m.value() or b"" for m in msgs if m.error() is None]
            handoff = asyncio.run_coroutine_threadsafe(self.sink.deliver_many(payloads), self.loop)
            while True:
                try:
                    handoff.result(timeout=0.1)
                    break
                except concurrent.futures.TimeoutError:
                    if self.stop.is_set():
                        handoff.cancel()
                        return

    def _signal_ready(self, error: Exception | None) -> None:
        def signal() -> None:
            if not self.ready.done():
                if error is None:
                    self.ready.set_result(None)
                else:
                    self.ready.set_exception(error)

        self.loop.call_soon_threadsafe(signal)


def _in_thread(
    loop: asyncio.AbstractEventLoop, done: asyncio.Future[None], fn: Any, *args: Any
) -> None:
    """Run fn(*args) and report its outcome to `done` on the loop."""
    error: BaseException | None = None
    try:
        fn(*args)
    except BaseException as exc:
        error = exc

    def report() -> None:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    loop.call_soon_threadsafe(report)


async def _join(thread: threading.Thread) -> None:
    """Join a thread without blocking the event loop."""
    while thread.is_alive():
        await asyncio.sleep(0.005)


def low_watermark(consumer: Consumer, partition: TopicPartition, deadline: float) -> int:
    """The partition's first offset, asked again while its leader is still taking it over."""
    while True:
        try:
            low, _ = consumer.get_watermark_offsets(
                partition, timeout=max(0.1, deadline - time.monotonic())
            )
            return int(low)
        except KafkaException as error:
            code = (
                error.args[0].code()
                if error.args and isinstance(error.args[0], KafkaError)
                else None
            )
            if code not in NOT_SERVED_YET or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return f"{error.args[0].name()}: {error.args[0].str()}"
    return str(error) or type(error).__name__
