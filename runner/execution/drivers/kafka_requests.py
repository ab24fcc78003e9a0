"""Kafka request-reply (`pattern: request_reply`): requests on the trial's topics, replies on a
topic of their own, matched by correlation id.

The usual Kafka pattern: a requester produces a request, a responder (a consumer of the
request topic) handles it and produces its reply, and the requester's reply reader matches the
reply to the request. The correlation id is the request's sequence number, in the header the
reply echoes; a reply goes to its requester's partition of the reply topic (producer i sends
seq i, i + n, ...: partition seq mod n), so a load-generator process reads only the replies
of its own requesters. A request is done when its reply arrives, or fails when librdkafka
gives it up, or times out.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from runner.execution.drivers.base import DriverError, MessageSink, PublishPlan
from runner.execution.drivers.kafka_consumers import (
    CONSUME_BATCH,
    CONSUME_WAIT_S,
    low_watermark,
    why,
)
from runner.execution.measure.ledger import TIMEOUT, ProducerLedger
from runner.execution.measure.messages import HEADER, HEADER_SIZE, NS_PER_S, now_ns

REPLY_SUFFIX = "-replies"
# Requests a requester keeps unanswered at most: unpaced, it waits for replies beyond this.
REQUESTS_IN_FLIGHT = 1000
SLOT_WAIT_S = 0.005


def reply_topic(destination: str) -> str:
    return f"{destination}{REPLY_SUFFIX}"


class RequestBook:
    """One requester's requests in flight, oldest first: each answered by its reply, failed,
    or timed out. The producer thread sends and expires, the reply reader answers."""

    def __init__(self, ledger: ProducerLedger, timeout_s: float) -> None:
        self.ledger = ledger
        self.timeout_ns = round(timeout_s * NS_PER_S)
        self.inflight: dict[int, tuple[int, int]] = {}  # seq -> (stamp, sent ns)
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(REQUESTS_IN_FLIGHT)

    def sent(self, seq: int, stamp: int) -> None:
        with self.lock:
            self.inflight[seq] = (stamp, now_ns())

    def answered(self, seq: int, now: int) -> None:
        with self.lock:
            entry = self.inflight.pop(seq, None)
        if entry is None:
            self.ledger.on_answer_again(seq)  # a second reply, or one after the timeout
            return
        self.ledger.on_ack(seq, entry[0], now)
        self.slots.release()

    def given_up(self, seq: int, reason: str, *, stored: bool | None) -> None:
        """librdkafka gave the request up: refused (`stored` False) or perhaps stored (None)."""
        with self.lock:
            entry = self.inflight.pop(seq, None)
        if entry is None:
            return
        if stored is None:
            self.ledger.on_unknown(reason)
        else:
            self.ledger.on_failed(seq, reason)
        self.slots.release()

    def expire(self, now: int) -> None:
        """Time out what has waited longer than the timeout for its reply."""
        cutoff, expired = now - self.timeout_ns, 0
        with self.lock:
            inflight = self.inflight
            while inflight:
                seq = next(iter(inflight))
                if inflight[seq][1] > cutoff:
                    break
                del inflight[seq]
                expired += 1
        for _ in range(expired):
            self.ledger.on_unknown(TIMEOUT)
            self.slots.release()

    @property
    def open(self) -> int:
        return len(self.inflight)


def run_requests(
    producer: Producer,
    topic: str,
    index: int,
    plan: PublishPlan,
    book: RequestBook,
    resolve_timeout: float,
    stop: threading.Event,
) -> None:
    """A requester's loop, on its own thread: send as the plan says, at most
    REQUESTS_IN_FLIGHT unanswered, then wait for the last replies (or their timeouts)."""
    ledger, produce, poll, encode, due = (
        book.ledger,
        producer.produce,
        producer.poll,
        plan.codec.encode,
        plan.due,
    )
    paced, until = plan.rate is not None, plan.until_ns
    for seq in plan.seqs(index):
        _, wait = due(seq)
        while wait > 0 and not stop.is_set():
            # poll() takes whole milliseconds: below one it would spin, holding the GIL.
            if wait >= 0.001:
                poll(min(wait, CONSUME_WAIT_S))
            else:
                time.sleep(wait)
            book.expire(now_ns())
            _, wait = due(seq)
        while not book.slots.acquire(timeout=SLOT_WAIT_S):
            if stop.is_set():
                return
            poll(0)
            book.expire(now_ns())
        stamp = due(seq)[0] if paced else now_ns()
        if until is not None and stamp >= until:
            book.slots.release()
            break
        book.sent(seq, stamp)
        ledger.on_send(seq, stamp)
        while True:
            try:
                produce(topic, encode(seq, stamp))
                break
            except BufferError:
                poll(SLOT_WAIT_S)
        poll(0)
        book.expire(now_ns())
    ledger.sending_done_ns = now_ns()
    deadline = time.monotonic() + resolve_timeout
    while book.open and not stop.is_set() and time.monotonic() < deadline:
        poll(CONSUME_WAIT_S)
        book.expire(now_ns())
    ledger.close()  # what is still unanswered counts as a timeout


class ReplyReader(threading.Thread):
    """Reads the reply-topic partitions of this process's requesters and answers their books."""

    def __init__(
        self, conf: dict[str, Any], topic: str, partitions: Iterable[int], setup_timeout: float
    ) -> None:
        super().__init__(name="exprun-kafka-replies", daemon=True)
        self.conf, self.topic, self.setup_timeout = conf, topic, setup_timeout
        self.partitions = sorted(partitions)
        self.books: dict[int, RequestBook] = {}  # by requester (producer index)
        self.producers = 1  # requesters over all processes: a reply's partition is seq mod this
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.failure: str | None = None

    def run(self) -> None:
        try:
            consumer = Consumer(self.conf)
        except KafkaException as error:
            self.failure = f"cannot create the Kafka reply reader: {why(error)}"
            self.ready.set()
            return
        try:
            # As the consumers do: metadata, then each partition's start once it is served.
            consumer.list_topics(self.topic, timeout=self.setup_timeout)
            deadline = time.monotonic() + self.setup_timeout
            assigned = [TopicPartition(self.topic, p) for p in self.partitions]
            for partition in assigned:
                partition.offset = low_watermark(consumer, partition, deadline)
            consumer.assign(assigned)
            self.ready.set()
            while not self.stop.is_set():
                first = consumer.poll(CONSUME_WAIT_S)
                if first is None:
                    continue
                now = now_ns()
                for message in [first, *consumer.consume(CONSUME_BATCH, 0)]:
                    if message.error() is None:
                        seq = HEADER.unpack_from(message.value() or b"")[0]
                        book = self.books.get(seq % self.producers)
                        if book is not None:
                            book.answered(seq, now)
        except Exception as error:
            self.failure = f"the Kafka reply reader failed: {why(error)}"
        finally:
            self.ready.set()
            consumer.close()

    def await_ready(self) -> None:
        if not self.ready.wait(self.setup_timeout) or self.failure is not None:
            raise DriverError(self.failure or "the Kafka reply reader did not start in time")


class ReplyWriter(threading.Thread):
    """The responders' producer: each handled request's header, to its requester's partition.

    Replies are produced on a thread of their own that serves the producer between them: a
    librdkafka producer polled only now and then (from the event loop) held replies back for
    up to a second, which the round trip would have measured.
    """

    def __init__(
        self, conf: dict[str, Any], topic: str, producers: int, setup_timeout: float
    ) -> None:
        super().__init__(name="exprun-kafka-reply-writer", daemon=True)
        try:
            self.producer = Producer(conf)
            # Connected, and the reply topic's leaders known, before the first reply.
            self.producer.list_topics(topic, timeout=setup_timeout)
        except KafkaException as error:
            raise DriverError(f"cannot connect the Kafka reply producer: {why(error)}") from None
        self.topic, self.producers = topic, producers
        self.replies: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.stop = threading.Event()

    def reply_to(self, payload: bytes) -> Callable[[], Awaitable[None]]:
        return partial(self._queue, payload[:HEADER_SIZE])

    async def _queue(self, header: bytes) -> None:
        self.replies.put_nowait(header)

    def run(self) -> None:
        produce, poll, replies = self.producer.produce, self.producer.poll, self.replies
        while not (self.stop.is_set() and replies.empty()):
            try:
                header = replies.get(timeout=CONSUME_WAIT_S)
            except queue.Empty:
                poll(0)
                continue
            seq = HEADER.unpack_from(header)[0]
            while True:
                try:
                    produce(self.topic, header, partition=seq % self.producers)
                    break
                except BufferError:
                    poll(SLOT_WAIT_S)
            poll(0)

    def close(self, timeout: float) -> None:
        """Send what is queued, then wait for it to be delivered."""
        self.stop.set()
        self.join(timeout)
        self.producer.flush(timeout)


async def deliver_requests(
    sink: MessageSink, writer: ReplyWriter, payloads: Sequence[bytes]
) -> None:
    """Hand a batch of requests to the responders' pool, each with its reply."""
    for payload in payloads:
        await sink.deliver(payload, reply=writer.reply_to(payload))
