"""Apache Kafka driver (confluent-kafka): per-trial topics, batched producers, consumers.

librdkafka calls block, so each producer and each consumer runs on a thread of its own (as
goroutines would in a Go client) and the handler pools stay on the event loop: consumers hand
whole batches to them. How consumers read (assigned partitions, or consumer groups with their
commits) is in kafka_consumers.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import (
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from runner.execution.brokers.access import PLAIN, ClientAccess
from runner.execution.drivers.base import (
    Driver,
    DriverError,
    MessageSink,
    PublishPlan,
    PublishStalled,
    check_reachable,
)
from runner.execution.drivers.kafka_consumers import Commits, ConsumerThread, Group, why
from runner.execution.drivers.placement import Placement
from runner.execution.measure.accounting import Layout
from runner.execution.measure.ledger import ProducerLedger
from runner.execution.measure.messages import HEADER, NS_PER_S, now_ns
from runner.spec.kafka_properties import librdkafka_conf
from schemas.results import PublishPolicy
from schemas.spec import KafkaBroker, KafkaProperties

POLL_EVERY = 64  # serve delivery reports every this many produce() calls
# What decides a producer's retries, by librdkafka's canonical names, with its defaults
# (CONFIGURATION.md); and the other names librdkafka takes for them.
RETRY_DEFAULTS = {
    "request.required.acks": "-1",
    "enable.idempotence": "false",
    "message.timeout.ms": "300000",
    "message.send.max.retries": "2147483647",
}
RETRY_ALIASES = {
    "acks": "request.required.acks",
    "delivery.timeout.ms": "message.timeout.ms",
    "retries": "message.send.max.retries",
}
# Delivery reports that leave it open whether the broker stored the message (librdkafka's
# "possibly persisted"): a timeout, or a purge of what was already sent.
UNKNOWN_OUTCOMES = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._PURGE_INFLIGHT,
    KafkaError._TRANSPORT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
}
# Errors after which the client cannot do its job: the trial fails instead of timing out.
FATAL_ERRORS = {KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION}


class KafkaDriver(Driver):
    """confluent-kafka clients of one trial."""

    config: KafkaBroker

    def __init__(
        self,
        address: str,
        config: KafkaBroker,
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
        self._producers: list[_ProducerSlot] = []
        self._consumers: list[ConsumerThread] = []
        self._groups: list[Group] = []
        self._closing = False
        self.client_errors: list[str] = []

    def _on_error(self, error: KafkaError) -> None:
        # Called from librdkafka's threads via poll/consume; list.append is atomic under the GIL.
        if len(self.client_errors) < 100:
            self.client_errors.append(f"{error.name()}: {error.str()}")
        # With faults, all brokers down is what the trial's own fault did, for a while.
        fatal = error.fatal() or (error.code() in FATAL_ERRORS and not self.faults)
        if fatal and not self._closing and self.problem is None:
            self.problem = f"Kafka client error {error.name()}: {error.str()}"

    def publish_policy(self) -> PublishPolicy:
        return producer_policy(self.config.producer)

    def _common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.address, "error_cb": self._on_error, **self.access.kafka}

    # --- destination ---------------------------------------------------------------------

    async def create_destination(self) -> None:
        check_reachable("Kafka", self.address.split(","))
        topic = self.config.topic
        # The admin client is dropped at once so its threads never count as the trial's.
        admin = AdminClient(self._common())
        timeout = self.setup_timeout
        futures = admin.create_topics(
            [NewTopic(n, topic.partitions, topic.replication_factor) for n in self.destinations],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        try:
            for name in self.destinations:
                await asyncio.wait_for(asyncio.wrap_future(futures[name]), timeout + 1)
                await self._await_leaders(admin, name, topic.partitions)
        except (TimeoutError, KafkaException) as error:
            raise DriverError(f"cannot create Kafka topics {self._names}: {why(error)}") from None
        finally:
            del admin, futures

    @property
    def _names(self) -> str:
        return ", ".join(self.destinations)

    async def _await_leaders(self, admin: AdminClient, name: str, partitions: int) -> None:
        """Until every partition has a leader: producing earlier only adds retries."""
        deadline = time.monotonic() + self.setup_timeout
        while True:
            found = admin.list_topics(name, timeout=self.setup_timeout).topics.get(name)
            if (
                found is not None
                and found.error is None
                and len(found.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in found.partitions.values())
            ):
                return
            if time.monotonic() > deadline:
                raise DriverError(f"Kafka topic {name!r} has no leader in time")
            await asyncio.sleep(0.01)

    async def _await_gone(self, admin: AdminClient) -> None:
        """Until the broker's metadata no longer lists the topics: the controller accepts the
        deletion a moment before the broker has applied it, and the next trial should not
        share the broker with a deletion still in progress."""
        deadline = time.monotonic() + self.setup_timeout
        while set(self.destinations) & set(admin.list_topics(timeout=self.setup_timeout).topics):
            if time.monotonic() > deadline:
                raise DriverError(f"Kafka topics {self._names} are still listed after delete")
            await asyncio.sleep(0.01)

    async def delete_destination(self) -> None:
        admin = AdminClient(self._common())
        futures = admin.delete_topics(self.destinations, operation_timeout=self.setup_timeout)
        try:
            for name in self.destinations:
                await asyncio.wait_for(asyncio.wrap_future(futures[name]), self.setup_timeout + 1)
            await self._await_gone(admin)
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            if not (
                isinstance(kafka_error, KafkaError)
                and kafka_error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                raise DriverError(
                    f"cannot delete Kafka topics {self._names}: {why(error)}"
                ) from None
        except TimeoutError:
            raise DriverError(f"cannot delete Kafka topics {self._names}: timed out") from None
        finally:
            del admin, futures

    # --- consumers -----------------------------------------------------------------------

    async def start_consumers(
        self, sinks: Sequence[MessageSink], count: int, *, held: bool = False
    ) -> None:
        loop = asyncio.get_running_loop()
        started = now_ns()
        for sink in sinks:
            for index in range(count):
                if not self.runs_consumer(sink.subscription, index, count):
                    continue
                thread = self._consumer(sink, index, count, loop)
                if not held:
                    thread.go.set()
                self._consumers.append(thread)
                thread.start()
        await asyncio.gather(*(c.ready for c in self._consumers))
        self.consumer_figures.ready_s = round((now_ns() - started) / NS_PER_S, 4)

    def _consumer(
        self, sink: MessageSink, index: int, count: int, loop: asyncio.AbstractEventLoop
    ) -> ConsumerThread:
        topic = self.destinations[sink.topic]
        name = f"exprun-kafka-consumer-{sink.subscription}-{index}"
        group_id = f"exprun-{self.destination}-s{sink.subscription}"
        mode = self.config.commit_mode
        if mode is None:
            conf = {
                # exprun's choices unless the spec sets them: offsets are never committed.
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                **librdkafka_conf(self.config.consumer),
                **self._common(),
                "group.id": group_id,  # required by the client; never joined
            }
            partitions = self.config.topic.partitions
            assigned = [TopicPartition(topic, p) for p in range(partitions) if p % count == index]
            return ConsumerThread(
                name, conf, topic, sink, loop, self.setup_timeout, assigned=assigned
            )
        if index == 0:
            self._groups.append(Group(self.config.topic.partitions, count))
        conf = {
            # A fresh group reads from the start; held members join before anything is stored.
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            **librdkafka_conf(self.config.consumer),
            **self._common(),
            "enable.auto.commit": mode == "auto",
            "group.id": group_id,
        }
        commits = Commits(mode, self.config.commit_every)
        membership = (self._groups[-1], index, commits)
        return ConsumerThread(name, conf, topic, sink, loop, self.setup_timeout, group=membership)

    async def release_consumers(self) -> None:
        for consumer in self._consumers:
            consumer.go.set()

    def phase_started(self) -> None:
        super().phase_started()
        for group in self._groups:
            group.phase_started.set()

    # --- producers -----------------------------------------------------------------------

    async def connect_producers(self) -> None:
        for index in self.placement.producers(self.layout.producers):
            topic = self.destinations[self.layout.topic_of_producer(index)]
            slot = _ProducerSlot(index, topic, self.config.topic.partitions)
            conf = {**librdkafka_conf(self.config.producer), **self._common()}
            conf["on_delivery"] = slot.on_delivery
            try:
                slot.producer = Producer(conf)
                # Connects and fetches the topic's metadata before the measured phase.
                slot.producer.list_topics(topic, timeout=self.setup_timeout)
            except KafkaException as error:
                raise DriverError(f"cannot connect a Kafka producer: {why(error)}") from None
            self._producers.append(slot)

    async def publish(
        self, plan: PublishPlan, ledgers: Sequence[ProducerLedger], resolve_timeout: float
    ) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        runs: list[tuple[threading.Thread, asyncio.Future[None]]] = []
        for slot in self._producers:
            done: asyncio.Future[None] = loop.create_future()
            ledger = ledgers[slot.index]
            thread = threading.Thread(
                target=_in_thread,
                args=(loop, done, slot.run, plan, ledger, resolve_timeout, stop),
                name=f"exprun-kafka-producer-{slot.index}",
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
        for group in self._groups:
            group.phase_started.clear()  # leaving the group revokes too: not a rebalance
        for consumer in self._consumers:
            consumer.stop.set()
        for consumer in self._consumers:
            await _join(consumer)
            if consumer.failure is not None and self.problem is None:
                self.problem = consumer.failure
        figures = self.consumer_figures
        figures.commit_latency = [c.commit_latency for c in self._consumers]
        if self._groups:
            figures.rebalances = sum(group.rebalances for group in self._groups)
        self._consumers = []
        for slot in self._producers:
            if slot.producer is not None:
                slot.producer.close()  # joins librdkafka's threads
        self._producers = []


class _ProducerSlot:
    """One producer client, and the ledger its delivery reports go to."""

    def __init__(self, index: int, topic: str, partitions: int) -> None:
        self.index = index  # of the layout's producers: it sends seq index, index + n, ...
        self.topic = topic
        self.partitions = partitions
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
        elif error.code() in UNKNOWN_OUTCOMES:
            ledger.on_unknown(error.name())
        else:
            ledger.on_failed(HEADER.unpack_from(msg.value() or b"")[0], error.name())

    def run(
        self,
        plan: PublishPlan,
        ledger: ProducerLedger,
        resolve_timeout: float,
        stop: threading.Event,
    ) -> None:
        # The hot loop of a Kafka trial, kept in one piece: a call per message costs throughput.
        producer = self.producer
        assert producer is not None
        self.ledger = ledger
        produce, poll, encode, due = producer.produce, producer.poll, plan.codec.encode, plan.due
        topic, until, keys, partitions = self.topic, plan.until_ns, plan.keys, self.partitions
        keyed = keys.kind != "none"
        limit = round(resolve_timeout * NS_PER_S)
        sent = 0
        try:
            for seq in plan.seqs(self.index):
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
                        if keyed:
                            partition = keys.partition(seq, partitions)
                            produce(
                                topic,
                                encode(seq, stamp),
                                keys.key(seq),
                                -1 if partition is None else partition,
                            )
                        else:
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


def producer_policy(properties: KafkaProperties) -> PublishPolicy:
    """What librdkafka does with a failed produce, from the producer's properties."""
    effective = dict(RETRY_DEFAULTS)
    for key, value in librdkafka_conf(properties).items():
        name = RETRY_ALIASES.get(key, key)
        if name in effective:
            effective[name] = str(value).lower()
    idempotent = effective["enable.idempotence"] == "true"
    retries = idempotent or int(effective["message.send.max.retries"]) > 0
    timeout_ms = int(effective["message.timeout.ms"])  # 0: no limit
    acks = "-1" if idempotent else effective["request.required.acks"]
    return PublishPolicy(
        retried_by="librdkafka" if retries else None,
        delivery_timeout_s=timeout_ms / 1000 if retries and timeout_ms else None,
        idempotent=idempotent,
        settings={
            "acks": "all" if acks in ("-1", "all") else acks,
            "enable.idempotence": effective["enable.idempotence"],
            "message.timeout.ms": str(timeout_ms),
            "retries": effective["message.send.max.retries"],
        },
    )


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
