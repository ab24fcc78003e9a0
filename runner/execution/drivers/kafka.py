"""Apache Kafka driver (confluent-kafka): per-trial topics, batched producers, consumers.

librdkafka calls block, so each producer and each consumer runs on a thread of its own (as
goroutines would in a Go client) and the handler pools stay on the event loop: consumers hand
whole batches to them. How consumers read (assigned partitions, or consumer groups with their
commits) is in kafka_consumers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from array import array
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
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
from runner.execution.drivers.kafka_requests import (
    ReplyReader,
    ReplyWriter,
    RequestBook,
    deliver_requests,
    reply_topic,
    run_requests,
)
from runner.execution.drivers.placement import Placement
from runner.execution.measure.accounting import Layout
from runner.execution.measure.latency import LatencyRecorder
from runner.execution.measure.ledger import ProducerLedger
from runner.execution.measure.messages import HEADER, NS_PER_S, now_ns
from runner.spec.kafka_properties import librdkafka_conf
from schemas.results import PublishPolicy
from schemas.spec import KafkaBroker, KafkaProperties, KafkaTransactions

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
ABORTED = "transaction aborted"  # publish error reason of the messages of an aborted transaction
# librdkafka's transaction.timeout.ms default: its messages' timeout with transactions too.
TRANSACTION_TIMEOUT_MS = "60000"
CLEANUP_ABORT_S = 1.0  # a trial stopped mid-transaction aborts it, waiting no longer than this
PLANTED_FLUSH_S = 10.0  # a planted abort waits this long for its messages to be stored


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
        self._producers: list[ProducerSlot] = []
        self._consumers: list[ConsumerThread] = []
        self._groups: list[Group] = []
        self._closing = False
        self.client_errors: list[str] = []
        # pattern request_reply: the responders' reply producer and the requesters' reader.
        self._replies: ReplyWriter | None = None
        self._reply_reader: ReplyReader | None = None

    def _on_error(self, error: KafkaError) -> None:
        # Called from librdkafka's threads via poll/consume; list.append is atomic under the GIL.
        if len(self.client_errors) < 100:
            self.client_errors.append(f"{error.name()}: {error.str()}")
        # With faults, all brokers down is what the trial's own fault did, for a while.
        fatal = error.fatal() or (error.code() in FATAL_ERRORS and not self.faults)
        if fatal and not self._closing and self.problem is None:
            self.problem = f"Kafka client error {error.name()}: {error.str()}"

    def publish_policy(self) -> PublishPolicy:
        return producer_policy(self.config.producer, transactional=self.transactional)

    @property
    def transactional(self) -> bool:
        return self.config.transactions is not None

    @property
    def _requests(self) -> bool:
        return self.layout.pattern == "request_reply"

    @property
    def _topics(self) -> list[NewTopic]:
        """The trial's topics: its destinations, and for requests a reply topic with a
        partition per requester."""
        topic = self.config.topic
        made = [NewTopic(n, topic.partitions, topic.replication_factor) for n in self.destinations]
        if self._requests:
            replies = reply_topic(self.destination)
            made.append(NewTopic(replies, self.layout.producers, topic.replication_factor))
        return made

    def _common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.address, "error_cb": self._on_error, **self.access.kafka}

    # --- destination ---------------------------------------------------------------------

    async def create_destination(self) -> None:
        check_reachable("Kafka", self.address.split(","))
        # The admin client is dropped at once so its threads never count as the trial's.
        admin = AdminClient(self._common())
        timeout, topics = self.setup_timeout, self._topics
        futures = admin.create_topics(topics, operation_timeout=timeout, request_timeout=timeout)
        try:
            for topic in topics:
                await asyncio.wait_for(asyncio.wrap_future(futures[topic.topic]), timeout + 1)
                await self._await_leaders(admin, topic.topic, topic.num_partitions)
        except (TimeoutError, KafkaException) as error:
            raise DriverError(f"cannot create Kafka topics {self._names}: {why(error)}") from None
        finally:
            del admin, futures

    @property
    def _names(self) -> str:
        return ", ".join(topic.topic for topic in self._topics)

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
        deadline, names = time.monotonic() + self.setup_timeout, {t.topic for t in self._topics}
        while names & set(admin.list_topics(timeout=self.setup_timeout).topics):
            if time.monotonic() > deadline:
                raise DriverError(f"Kafka topics {self._names} are still listed after delete")
            await asyncio.sleep(0.01)

    async def delete_destination(self) -> None:
        admin = AdminClient(self._common())
        names = [topic.topic for topic in self._topics]
        futures = admin.delete_topics(names, operation_timeout=self.setup_timeout)
        try:
            for name in names:
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
        # With transactions, only what was committed counts (librdkafka's default too).
        committed = {"isolation.level": "read_committed"} if self.transactional else {}
        if mode is None:
            conf = {
                # exprun's choices unless the spec sets them: offsets are never committed.
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                **committed,
                **librdkafka_conf(self.config.consumer),
                **self._common(),
                "group.id": group_id,  # required by the client; never joined
            }
            partitions = self.config.topic.partitions
            assigned = [TopicPartition(topic, p) for p in range(partitions) if p % count == index]
            return ConsumerThread(
                name,
                conf,
                topic,
                sink,
                loop,
                self.setup_timeout,
                assigned=assigned,
                handover=self._responder(sink),
            )
        if index == 0:
            self._groups.append(Group(self.config.topic.partitions, count))
        conf = {
            # A fresh group reads from the start; held members join before anything is stored.
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            **committed,
            **librdkafka_conf(self.config.consumer),
            **self._common(),
            "enable.auto.commit": mode == "auto",
            "group.id": group_id,
        }
        commits = Commits(mode, self.config.commit_every)
        membership = (self._groups[-1], index, commits)
        return ConsumerThread(
            name,
            conf,
            topic,
            sink,
            loop,
            self.setup_timeout,
            group=membership,
            handover=self._responder(sink),
        )

    def _responder(
        self, sink: MessageSink
    ) -> Callable[[list[bytes]], Coroutine[Any, Any, None]] | None:
        """For requests: hand each to the pool with its reply (one reply producer here)."""
        if not self._requests:
            return None
        if self._replies is None:
            conf = {**librdkafka_conf(self.config.producer), **self._common()}
            topic = reply_topic(self.destination)
            self._replies = ReplyWriter(conf, topic, self.layout.producers, self.setup_timeout)
            self._replies.start()
        return partial(deliver_requests, sink, self._replies)

    async def release_consumers(self) -> None:
        for consumer in self._consumers:
            consumer.go.set()

    def phase_started(self) -> None:
        super().phase_started()
        for group in self._groups:
            group.phase_started.set()

    # --- producers -----------------------------------------------------------------------

    async def connect_producers(self) -> None:
        transactions = self.config.transactions
        for index in self.placement.producers(self.layout.producers):
            topic = self.destinations[self.layout.topic_of_producer(index)]
            slot = ProducerSlot(index, topic, self.config.topic.partitions, transactions)
            conf = {**librdkafka_conf(self.config.producer), **self._common()}
            if self._requests:
                conf["on_delivery"] = slot.on_request_delivery
            elif transactions is None:
                conf["on_delivery"] = slot.on_delivery
            else:
                conf["on_delivery"] = slot.on_transactional_delivery
                # Unique per trial and producer: no other producer fences it.
                conf["transactional.id"] = f"exprun-{self.destination}-p{index}"
            try:
                slot.producer = Producer(conf)
                # Connects and fetches the topic's metadata before the measured phase.
                slot.producer.list_topics(topic, timeout=self.setup_timeout)
                if transactions is not None:
                    slot.producer.init_transactions(self.setup_timeout)
            except KafkaException as error:
                raise DriverError(f"cannot connect a Kafka producer: {why(error)}") from None
            self._producers.append(slot)
        if self._requests and self._producers:
            await self._read_replies()

    async def _read_replies(self) -> None:
        """Start the reader of this process's requesters' reply partitions; ready on return."""
        conf = {
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            **librdkafka_conf(self.config.consumer),
            **self._common(),
            "group.id": f"exprun-{self.destination}-replies",  # required; never joined
        }
        mine = [slot.index for slot in self._producers]
        reader = self._reply_reader = ReplyReader(
            conf, reply_topic(self.destination), mine, self.setup_timeout
        )
        reader.producers = self.layout.producers
        reader.start()
        await asyncio.to_thread(reader.await_ready)

    async def publish(
        self, plan: PublishPlan, ledgers: Sequence[ProducerLedger], resolve_timeout: float
    ) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        runs: list[tuple[threading.Thread, asyncio.Future[None]]] = []
        for slot in self._producers:
            done: asyncio.Future[None] = loop.create_future()
            ledger = ledgers[slot.index]
            run = slot.run if slot.transactions is None else slot.run_transactions
            if self._requests:
                assert self._reply_reader is not None and plan.request_timeout_s is not None
                book = slot.book = RequestBook(ledger, plan.request_timeout_s)
                self._reply_reader.books[slot.index] = book
                run = slot.run_requests
            thread = threading.Thread(
                target=_in_thread,
                args=(loop, done, run, plan, ledger, resolve_timeout, stop),
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
            for slot in self._producers:
                if slot.failure is not None and self.problem is None:
                    self.problem = slot.failure

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
        reader, self._reply_reader = self._reply_reader, None
        if reader is not None:
            reader.stop.set()
            await _join(reader)
            if reader.failure is not None and self.problem is None:
                self.problem = reader.failure
        if self._replies is not None:
            await asyncio.to_thread(self._replies.close, self.setup_timeout)
            self._replies = None
        if self.transactional:
            produced = self.producer_figures
            produced.transaction_commit = [slot.commit_latency for slot in self._producers]
            produced.transactions_aborted = sum(slot.aborted for slot in self._producers)
        for slot in self._producers:
            if slot.producer is not None:
                # It aborts a transaction still open, which fails again after a fatal error:
                # that is the trial's problem already.
                with contextlib.suppress(KafkaException):
                    slot.producer.close()  # joins librdkafka's threads
        self._producers = []


class ProducerSlot:
    """One producer client, and the ledger its delivery reports (or commits) go to."""

    def __init__(
        self,
        index: int,
        topic: str,
        partitions: int,
        transactions: KafkaTransactions | None = None,
    ) -> None:
        self.index = index  # of the layout's producers: it sends seq index, index + n, ...
        self.topic = topic
        self.partitions = partitions
        self.transactions = transactions
        self.producer: Producer | None = None
        self.ledger: ProducerLedger | None = None
        self.last_answer_ns = 0
        self.delivered: list[bytes] = []  # acked payloads of the poll() being served
        # Transactions: what the open one holds (acked once it commits), how they ended.
        self.pending_seqs = array("q")
        self.pending_stamps = array("q")
        self.open_since_ns: int | None = None  # None: no transaction open
        self.commit_latency = LatencyRecorder()
        self.aborted = 0
        self.ended = 0  # transactions committed or aborted, planted aborts included
        self.abort_every: int | None = None  # self-test: abort every n-th on purpose
        self.failure: str | None = None  # why the producer stopped for good (a fatal error)
        self.book: RequestBook | None = None  # pattern request_reply: requests awaiting replies

    def on_delivery(self, error: KafkaError | None, msg: Message) -> None:
        # Runs on the producer's own thread, inside poll(): an ack is only noted here, and the
        # acks of one poll() are accounted together once it returns (serve()).
        if error is None:
            self.delivered.append(msg.value() or b"")
            return
        self.last_answer_ns = now_ns()
        if self.ledger is None:
            return
        if error.code() in UNKNOWN_OUTCOMES:
            self.ledger.on_unknown(error.name())
        else:
            self.ledger.on_failed(HEADER.unpack_from(msg.value() or b"")[0], error.name())

    def serve(self, timeout: float) -> None:
        """Serve delivery reports for up to `timeout` s; account the acks among them at once."""
        assert self.producer is not None
        self.producer.poll(timeout)
        self.settle()

    def settle(self) -> None:
        """Account the acks noted since the last call, all answered now."""
        delivered = self.delivered
        if delivered:
            now = self.last_answer_ns = now_ns()
            if self.ledger is not None:
                self.ledger.on_acks([HEADER.unpack_from(value) for value in delivered], now)
            delivered.clear()

    def on_request_delivery(self, error: KafkaError | None, msg: Message) -> None:
        # A request is answered by its reply; its report matters only when it failed.
        self.last_answer_ns = now_ns()
        if error is not None and self.book is not None:
            seq = HEADER.unpack_from(msg.value() or b"")[0]
            unknown = error.code() in UNKNOWN_OUTCOMES
            self.book.given_up(seq, error.name(), stored=None if unknown else False)

    def run_requests(
        self,
        plan: PublishPlan,
        ledger: ProducerLedger,
        resolve_timeout: float,
        stop: threading.Event,
    ) -> None:
        """Requests, each answered by its reply (kafka_requests.py)."""
        assert self.producer is not None and self.book is not None
        self.ledger = ledger
        run_requests(self.producer, self.topic, self.index, plan, self.book, resolve_timeout, stop)

    def on_transactional_delivery(self, error: KafkaError | None, msg: Message) -> None:
        # A transaction's messages are settled by its commit or abort, not by their reports: a
        # delivered message is not yet visible, and a failed one fails the whole transaction.
        self.last_answer_ns = now_ns()

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
        produce, serve, encode, due = producer.produce, self.serve, plan.codec.encode, plan.due
        topic, until, keys, partitions = self.topic, plan.until_ns, plan.keys, self.partitions
        keyed, paced = keys.kind != "none", plan.rate is not None
        limit = round(resolve_timeout * NS_PER_S)
        sent = 0
        try:
            for seq in plan.seqs(self.index):
                if paced:
                    _, wait = due(seq)
                    while wait > 0 and not stop.is_set():
                        # Delivery reports are served while waiting for the send time. poll()
                        # takes whole milliseconds: below one, poll(0) would spin, holding the
                        # GIL the consumer and the handlers need, so serve what is there and
                        # sleep.
                        if wait >= 0.001:
                            serve(wait)
                        else:
                            serve(0)
                            time.sleep(wait)
                        _, wait = due(seq)
                    if stop.is_set():
                        return
                blocked_since: int | None = None
                while True:
                    stamp = due(seq)[0] if paced else now_ns()
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
                        if stop.is_set():
                            return
                        now = now_ns()
                        blocked_since = blocked_since or now
                        if now - max(blocked_since, self.last_answer_ns) > limit:
                            raise PublishStalled(
                                "publishing stalled: librdkafka's queue stayed full with no "
                                f"delivery report for {resolve_timeout:g}s"
                            ) from None
                        serve(0.005)
                if blocked_since is not None:
                    ledger.blocked_ns += now_ns() - blocked_since
                if until is not None and stamp >= until:
                    break
                ledger.on_send(seq, stamp)
                sent += 1
                if sent % POLL_EVERY == 0:
                    serve(0)
                    if stop.is_set():  # checked this often: a call per message costs
                        return
            ledger.sending_done_ns = now_ns()
            # flush() would account every report it serves at its return: serve until drained.
            deadline = ledger.sending_done_ns + limit
            while len(producer) > 0 and now_ns() < deadline:
                serve(0.1)
        finally:
            self.settle()
            ledger.close()  # whatever is still unanswered counts as a timeout
            if len(producer) > 0:
                producer.purge()
                producer.flush(0)
                self.settle()  # answers after close() are no acks: only let them go

    def run_transactions(
        self,
        plan: PublishPlan,
        ledger: ProducerLedger,
        resolve_timeout: float,
        stop: threading.Event,
    ) -> None:
        """run(), in transactions: a message is acked when its transaction commits, and fails
        when it aborts. Apart from run() so that run() pays nothing for them."""
        producer, rule = self.producer, self.transactions
        assert producer is not None and rule is not None
        self.ledger, self.abort_every = ledger, plan.abort_every
        produce, poll, encode, due = producer.produce, producer.poll, plan.codec.encode, plan.due
        topic, until, keys, partitions = self.topic, plan.until_ns, plan.keys, self.partitions
        keyed = keys.kind != "none"
        limit = round(resolve_timeout * NS_PER_S)
        per = rule.per
        every_ns = round(rule.every * NS_PER_S) if rule.every is not None else 0
        seqs, stamps = self.pending_seqs, self.pending_stamps
        sent = 0
        try:
            for seq in plan.seqs(self.index):
                _, wait = due(seq)
                while wait > 0 and not stop.is_set():
                    if per is None and self.open_since_ns is not None:
                        # A time-based commit falls due while waiting for the send time.
                        left = (self.open_since_ns + every_ns - now_ns()) / NS_PER_S
                        if left <= 0:
                            if not self._commit(ledger, resolve_timeout):
                                return
                            _, wait = due(seq)
                            continue
                        wait = min(wait, left)
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
                    if self.open_since_ns is None and not self._begin():
                        return
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
                        now = now_ns()
                        blocked_since = blocked_since or now
                        if now - max(blocked_since, self.last_answer_ns) > limit:
                            raise PublishStalled(
                                "publishing stalled: librdkafka's queue stayed full with no "
                                f"delivery report for {resolve_timeout:g}s"
                            ) from None
                        poll(0.005)
                    except KafkaException as error:
                        # The transaction takes no more messages: it failed, or the producer
                        # did. Any other refusal is the message's own, as in run().
                        if not seqs or not _transaction_refused(error):
                            raise
                        if not self._abort(ledger, error, resolve_timeout):
                            return
                if blocked_since is not None:
                    ledger.blocked_ns += now_ns() - blocked_since
                if until is not None and stamp >= until:
                    break
                ledger.on_send(seq, stamp)
                seqs.append(seq)
                stamps.append(stamp)
                sent += 1
                if sent % POLL_EVERY == 0:
                    poll(0)
                if (
                    len(seqs) >= per
                    if per is not None
                    else now_ns() - (self.open_since_ns or 0) >= every_ns
                ) and not self._commit(ledger, resolve_timeout):
                    return
            ledger.sending_done_ns = now_ns()
            if self.open_since_ns is not None:
                self._commit(ledger, resolve_timeout)
        finally:
            if self.open_since_ns is not None and self.failure is None:
                # Stopped mid-transaction: an open one would hold read_committed readers back.
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(CLEANUP_ABORT_S)
                    self._aborted(ledger)
            ledger.close()  # what no commit or abort settled counts as unknown

    def _begin(self) -> bool:
        """Open a transaction (no broker round trip); False if the producer failed for good."""
        assert self.producer is not None
        try:
            self.producer.begin_transaction()
        except KafkaException as error:
            self.failure = f"cannot begin a Kafka transaction: {why(error)}"
            return False
        self.open_since_ns = now_ns()
        return True

    def _commit(self, ledger: ProducerLedger, resolve_timeout: float) -> bool:
        """Commit the open transaction, acking its messages as of the commit's end; abort it if
        the commit cannot be made. False if the producer failed for good."""
        producer = self.producer
        assert producer is not None
        self.ended += 1
        if self.abort_every is not None and self.ended % self.abort_every == 0:
            return self._abort_planted(ledger)
        started = now_ns()
        deadline = started + round(resolve_timeout * NS_PER_S)
        while True:
            try:
                # It flushes the transaction's messages first; no timeout, as librdkafka
                # advises: it waits up to the transaction's remaining time.
                producer.commit_transaction()
                break
            except KafkaException as exception:
                error = _error_of(exception)
                if error is not None and error.txn_requires_abort():
                    return self._abort(ledger, exception, resolve_timeout)
                if error is None or error.fatal() or not error.retriable():
                    self.failure = f"cannot commit a Kafka transaction: {why(exception)}"
                    return False
                if now_ns() > deadline:
                    raise PublishStalled(
                        f"a Kafka transaction did not commit within {resolve_timeout:g}s"
                    ) from None
                time.sleep(0.01)
        done = now_ns()
        self.commit_latency.record_ns(done - started)
        on_ack = ledger.on_ack
        for seq, stamp in zip(self.pending_seqs, self.pending_stamps, strict=True):
            on_ack(seq, stamp, done)
        self._clear()
        return True

    def _abort(self, ledger: ProducerLedger, cause: KafkaException, resolve_timeout: float) -> bool:
        """Abort the open transaction: read_committed readers never see its messages, so each
        one failed. False if the producer failed for good (a fatal error)."""
        producer = self.producer
        assert producer is not None
        error = _error_of(cause)
        if error is None or error.fatal() or error.code() == KafkaError._FATAL:
            self.failure = f"Kafka transactional producer failed: {why(cause)}"
            return False
        deadline = now_ns() + round(resolve_timeout * NS_PER_S)
        while True:
            try:
                producer.abort_transaction()
                break
            except KafkaException as exception:
                again = _error_of(exception)
                if again is None or again.fatal() or not again.retriable() or now_ns() > deadline:
                    self.failure = f"cannot abort a Kafka transaction: {why(exception)}"
                    return False
                time.sleep(0.01)
        self._aborted(ledger)
        return True

    def _abort_planted(self, ledger: ProducerLedger) -> bool:
        """A self-test fault: abort a healthy transaction, whose messages must never arrive.
        They are on the broker first (flushed), so that its abort markers are what hides them."""
        assert self.producer is not None
        try:
            self.producer.flush(PLANTED_FLUSH_S)
            self.producer.abort_transaction()
        except KafkaException as error:
            self.failure = f"cannot abort a Kafka transaction: {why(error)}"
            return False
        self._aborted(ledger)
        return True

    def _aborted(self, ledger: ProducerLedger) -> None:
        for seq in self.pending_seqs:
            ledger.on_failed(seq, ABORTED)
        self.aborted += 1
        self._clear()

    def _clear(self) -> None:
        del self.pending_seqs[:]
        del self.pending_stamps[:]
        self.open_since_ns = None


def _error_of(exception: KafkaException) -> KafkaError | None:
    error = exception.args[0] if exception.args else None
    return error if isinstance(error, KafkaError) else None


def _transaction_refused(exception: KafkaException) -> bool:
    """Whether produce() refused because the transaction (or the producer) failed: librdkafka
    takes no message in a transaction in its abortable error state, nor after a fatal error."""
    error = _error_of(exception)
    return error is not None and (
        error.txn_requires_abort()
        or error.fatal()
        or error.code() in (KafkaError._STATE, KafkaError._FATAL)
    )


def producer_policy(properties: KafkaProperties, *, transactional: bool = False) -> PublishPolicy:
    """What librdkafka does with a failed produce, from the producer's properties."""
    effective = dict(RETRY_DEFAULTS)
    conf = librdkafka_conf(properties)
    if transactional:
        # A transactional producer is idempotent; its messages time out with the transaction.
        timeout = str(conf.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS))
        effective |= {"enable.idempotence": "true", "message.timeout.ms": timeout}
    for key, value in conf.items():
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
