"""Kafka consumers of one trial: each on a thread of its own, handing batches to a handler pool.

Two ways to read, as `consumer_mode` says:
- assign: partitions assigned directly, read from the fresh topic's beginning: no group join,
  no rebalance, no commits (the fastest reader there is);
- group: one consumer group per subscription, with its join (timed, kept out of the measured
  phase), its rebalances (counted) and its commits (auto, or sync / async after each batch
  handed to the handlers or every `commit_every` messages, each commit's latency recorded).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from runner.execution.drivers.base import DriverError, MessageSink
from runner.execution.measure.latency import LatencyRecorder
from runner.execution.measure.messages import now_ns

CONSUME_BATCH = 1000
CONSUME_WAIT_S = 0.05  # how long a poll blocks: bounds how fast a consumer stops
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

CommitMode = Literal["auto", "sync", "async"]


@dataclass
class Group:
    """A consumer group's members and their assignments: stable once they share out every
    partition; its rebalances after the measured phase began are counted."""

    partitions: int
    members: int
    assignments: dict[int, set[int] | None] = field(default_factory=dict)
    revokes_in_phase: dict[int, int] = field(default_factory=dict)
    phase_started: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def assigned(self, member: int, partitions: list[TopicPartition]) -> None:
        with self.lock:
            self.assignments[member] = {p.partition for p in partitions}

    def revoked(self, member: int) -> None:
        with self.lock:
            self.assignments[member] = None
            if self.phase_started.is_set():
                self.revokes_in_phase[member] = self.revokes_in_phase.get(member, 0) + 1

    def stable(self) -> bool:
        with self.lock:
            owned = [a for a in self.assignments.values() if a is not None]
            if len(owned) < self.members:
                return False
            union = set().union(*owned)
            return len(union) == self.partitions == sum(len(a) for a in owned)

    @property
    def rebalances(self) -> int:
        """Each rebalance revokes every member once (eager protocol): the most any saw."""
        with self.lock:
            return max(self.revokes_in_phase.values(), default=0)


@dataclass(frozen=True)
class Commits:
    """How a group member commits: librdkafka's auto commit, or its own after batches."""

    mode: CommitMode
    every: int | None  # messages between commits; None: after each batch


class ConsumerThread(threading.Thread):
    """One consumer client: consume batches, hand each to the pool (waiting while it is full)."""

    def __init__(
        self,
        name: str,
        conf: dict[str, Any],
        topic: str,
        sink: MessageSink,
        loop: asyncio.AbstractEventLoop,
        setup_timeout: float,
        *,
        assigned: list[TopicPartition] | None = None,
        group: tuple[Group, int, Commits] | None = None,
        handover: Callable[[list[bytes]], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        # How a batch reaches the pool: as messages (deliver_many), or as requests to answer.
        self.handover = handover or sink.deliver_many
        self.conf, self.topic, self.sink, self.loop = conf, topic, sink, loop
        self.setup_timeout = setup_timeout
        self.assigned, self.group = assigned, group
        self.stop = threading.Event()
        self.go = threading.Event()  # held consumers are ready but read nothing before it
        self.ready: asyncio.Future[None] = loop.create_future()
        self.failure: str | None = None  # why it stopped consuming early, if it did
        self.commit_latency = LatencyRecorder()
        self._commits_pending: collections.deque[int] = collections.deque()
        self._paused = False
        self._uncommitted = 0

    def run(self) -> None:
        conf = dict(self.conf)
        if self.group is not None and self.group[2].mode == "async":
            conf["on_commit"] = self._on_commit
        try:
            consumer = Consumer(conf)
        except KafkaException as error:
            self._signal_ready(DriverError(f"cannot create a Kafka consumer: {why(error)}"))
            return
        try:
            if self.group is None:
                self._assign(consumer)
            else:
                self._join(consumer, self.group)
            self._consume(consumer)
        except Exception as error:
            failure = DriverError(f"Kafka consumer {self.name} failed: {why(error)}")
            self.failure = str(failure)
            self._signal_ready(failure)
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        assigned = self.assigned or []
        if assigned:
            # Metadata first: assigned before the leaders are known, librdkafka retries its
            # offset lookup only after 500 ms, which would land in the measured phase. And
            # an absolute start offset (the fresh topic's low watermark) needs no lookup.
            consumer.list_topics(self.topic, timeout=self.setup_timeout)
            deadline = time.monotonic() + self.setup_timeout
            for partition in assigned:
                partition.offset = low_watermark(consumer, partition, deadline)
        if not self.go.is_set():
            self._signal_ready(None)  # held: connected, and waiting to be released
            while not self.go.wait(CONSUME_WAIT_S):
                if self.stop.is_set():
                    return
        consumer.assign(assigned)
        self._signal_ready(None)

    def _join(self, consumer: Consumer, group: tuple[Group, int, Commits]) -> None:
        """Join the group; ready once it has shared out every partition."""
        members, member, _ = group

        def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            consumer.assign(partitions)
            if not self.go.is_set():
                consumer.pause(partitions)  # held: owned, not read before the release
                self._paused = True
            members.assigned(member, partitions)

        def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            members.revoked(member)

        consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        deadline = time.monotonic() + 2 * self.setup_timeout
        while not members.stable():
            if self.stop.is_set():
                return
            message = consumer.poll(0.01)  # serves the group protocol and its callbacks
            if message is not None and message.error() is None:
                self._hand_over(consumer, [message])
            if time.monotonic() > deadline:
                raise DriverError(
                    f"the consumer group of {self.topic} did not share out its partitions "
                    f"within {2 * self.setup_timeout:g}s"
                )
        self._signal_ready(None)

    def _consume(self, consumer: Consumer) -> None:
        while not self.stop.is_set():
            if self._paused and self.go.is_set():
                consumer.resume(consumer.assignment())
                self._paused = False
            # consume(n, timeout) waits for n messages or the timeout, which would delay a slow
            # stream by up to the timeout: wait for one message, then take what is queued.
            first = consumer.poll(CONSUME_WAIT_S)
            if first is None:
                continue
            messages = [first, *consumer.consume(CONSUME_BATCH, 0)]
            if not self._hand_over(consumer, messages):
                return

    def _hand_over(self, consumer: Consumer, messages: list[Any]) -> bool:
        """Give a batch to the handlers, then commit as the group's policy says; False when
        the trial stops meanwhile."""
        payloads = [m.value() or b"" for m in messages if m.error() is None]
        handoff = asyncio.run_coroutine_threadsafe(self.handover(payloads), self.loop)
        while True:
            try:
                handoff.result(timeout=0.1)
                break
            except concurrent.futures.TimeoutError:
                if self.stop.is_set():
                    handoff.cancel()
                    return False
        if self.group is not None:
            self._commit(consumer, self.group[2], len(payloads))
        return True

    def _commit(self, consumer: Consumer, commits: Commits, handled: int) -> None:
        if commits.mode == "auto":
            return
        self._uncommitted += handled
        if commits.every is not None and self._uncommitted < commits.every:
            return
        self._uncommitted = 0
        started = now_ns()
        if commits.mode == "sync":
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as error:
                if not _nothing_to_commit(error):
                    raise
                return
            self.commit_latency.record_ns(now_ns() - started)
        else:
            self._commits_pending.append(started)
            consumer.commit(asynchronous=True)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        # Served by poll() on this thread, in the order the commits were made.
        if self._commits_pending:
            started = self._commits_pending.popleft()
            if error is None or error.code() != KafkaError._NO_OFFSET:
                self.commit_latency.record_ns(now_ns() - started)

    def _signal_ready(self, error: Exception | None) -> None:
        def signal() -> None:
            if not self.ready.done():
                if error is None:
                    self.ready.set_result(None)
                else:
                    self.ready.set_exception(error)

        self.loop.call_soon_threadsafe(signal)


def _nothing_to_commit(error: KafkaException) -> bool:
    kafka_error = error.args[0] if error.args else None
    return isinstance(kafka_error, KafkaError) and kafka_error.code() == KafkaError._NO_OFFSET


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


def why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return f"{error.args[0].name()}: {error.args[0].str()}"
    return str(error) or type(error).__name__
