"""Exact per-message accounting: the set of sequence numbers acked, and per subscription the
sets delivered and received (compressed, compacted each second: runner.execution.measure.seqsets).

A trial publishes to `topics` topics; each topic has `subscriptions` subscriptions, every one
of which must receive every message of its topic. A message is lost once for each
subscription that misses it; `success_rate` is the worst subscription's.

Per-second windows cost nothing per message: a ticker (runner.execution.measure.series) marks
the running totals once a second, and the windows are the differences between marks. A ramp
costs one comparison per message: what was sent before its end (`measure_from_ns`) goes into
histograms of its own, so the figures count only what was sent after it.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from runner.execution.measure.latency import (
    LatencyRecorder,
    percentile_ms,
    record_by_send_time,
    summarise,
)
from runner.execution.measure.ledger import TIMEOUT, ProducerLedger
from runner.execution.measure.messages import HEADER, NS_PER_S
from runner.execution.measure.self_test import SelfTest
from runner.execution.measure.seqsets import SeqSet, compact, new_and_distinct, strided
from schemas.results import Metrics, SubscriptionFigures
from schemas.spec import KvSettings, Pattern

unpack_header = HEADER.unpack_from  # (seq, send_ns); one call less per message than decode()


@dataclass
class Spike:
    """End-to-end latency of the messages sent in the second after a fault."""

    from_ns: int
    to_ns: int
    latency: LatencyRecorder


@dataclass(frozen=True)
class Layout:
    """Which topic a sequence number belongs to: producer i (of topics x producers) sends
    seq i, i + n, i + 2n, ...; producers 0..p-1 publish to topic 0, the next p to topic 1.
    The pattern says what a message is: appended (stream), a request, or a key operation."""

    topics: int = 1
    producers_per_topic: int = 1
    subscriptions_per_topic: int = 1
    pattern: Pattern = "stream"
    kv: KvSettings | None = None  # pattern kv: which key an operation is, and which are gets

    @property
    def producers(self) -> int:
        return self.topics * self.producers_per_topic

    def topic_of_producer(self, producer: int) -> int:
        return producer // self.producers_per_topic

    def of_topic(self, seqs: SeqSet, topic: int) -> SeqSet:
        """Those of `seqs` that belong to `topic`."""
        if self.topics == 1:
            return seqs
        producers = [i for i in range(self.producers) if self.topic_of_producer(i) == topic]
        limit = (seqs.max() + 1) if seqs else 0
        return seqs & strided(producers, self.producers, limit)


@dataclass(frozen=True)
class ConsumerMark:
    """Received totals at one tick, and the window's latency ending there."""

    at_ns: int
    received: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class CatchUp:
    """Consumers released onto a backlog: caught up once a delivered message is this young."""

    started_ns: int
    within_ns: int
    received_at_start: int
    caught_up_ns: int | None = None
    received_at_catch_up: int | None = None


class Subscription:
    """What one subscription received: each message of its topic once, it is hoped."""

    def __init__(self, accounting: Accounting, topic: int, index: int) -> None:
        self.accounting, self.topic, self.index = accounting, topic, index
        self_test = accounting.self_test
        applies = self_test.subscription is None or self_test.subscription == index
        self._self_test = self_test if applies and self_test.alters_deliveries else None
        self._received = SeqSet()  # accounted as received
        # Reached a handler, before any fault applies: without self-test faults, what is
        # delivered is received as it is, and one set serves as both (one call less a message).
        self._delivered = SeqSet() if self._self_test is not None else self._received
        # KeyError if the number was there already: one call per message.
        self._add_delivered = self._delivered.add_checked
        self._add_received = self._received.add_checked
        self._seq_limit = accounting.planned if accounting.planned is not None else 1 << 64
        self.received = 0
        self.received_measured = 0
        self.duplicated = 0
        self.redelivered = 0  # delivered again by the broker (ack wait, nak): not duplicates
        self.foreign = 0  # payloads that are not messages of this trial (must stay 0)
        self.latency = LatencyRecorder()
        self.ramp_latency = LatencyRecorder()
        self.first_receive_ns: int | None = None
        self.last_receive_ns: int | None = None
        self.last_handled_ns: int | None = None
        self.ack_pending = 0  # delivered, waiting for the handler to ack
        self.ack_pending_peak = 0
        self.drained = asyncio.Event()
        self._awaiting: int | None = None  # acked but not yet delivered, once publishing is done
        self.catch_up: CatchUp | None = None
        self._watching: CatchUp | None = None  # until the consumers caught up

    def compact(self) -> None:
        compact(self._received)
        if self._delivered is not self._received:
            compact(self._delivered)

    def on_delivery(self, payload: bytes, now_ns: int, redelivered: bool = False) -> int:
        """Account one delivered payload: how many times it counts (0 if a self-test fault
        discarded it or it is foreign, 2 if one duplicated it)."""
        try:
            seq, send_ns = unpack_header(payload)
        except struct.error:
            self.foreign += 1
            return 0
        if seq >= self._seq_limit:
            self.foreign += 1
            return 0
        if self._watching is not None:
            self._watch(now_ns - send_ns, now_ns)
        self_test = self._self_test
        if self_test is None:
            if self._account(seq, send_ns, now_ns, redelivered) and self._awaiting is not None:
                self._arrived(int(seq in self.accounting.acked_seqs))
            return 1
        try:
            self._add_delivered(seq)
        except KeyError:
            pass  # delivered before
        else:
            if self._awaiting is not None:
                self._arrived(int(seq in self.accounting.acked_seqs))
        if self_test.drops(seq):
            return 0
        times = 1
        if self_test.duplicates(seq):
            self._account(seq, send_ns, now_ns, False)
            times = 2
        self._account(seq, send_ns, now_ns, redelivered)
        return times

    def on_batch(self, payloads: Sequence[bytes], received_ns: Sequence[int]) -> None:
        """on_delivery of each payload, handled at its time in `received_ns`: in one pass while
        none needs a look of its own (new, distinct and ours, no self-test, catch-up watch or
        spike), else one by one."""
        if not payloads:
            return
        if self._self_test is None and self._watching is None and not self.accounting.spikes:
            try:
                stamps = [unpack_header(payload) for payload in payloads]
                seqs = new_and_distinct([seq for seq, _ in stamps], self._received)
            except (struct.error, OverflowError):
                pass  # a foreign payload among them: one by one
            else:
                if seqs is not None and seqs.max() < self._seq_limit:
                    self._received.update(seqs)
                    self._received_all(stamps, received_ns)
                    if self._awaiting is not None:  # each one a first delivery
                        self._arrived(seqs.intersection_cardinality(self.accounting.acked_seqs))
                    return
        for payload, now_ns in zip(payloads, received_ns, strict=True):
            self.on_delivery(payload, now_ns)

    def _received_all(self, stamps: list[tuple[int, int]], received_ns: Sequence[int]) -> None:
        """_account of each (seq, send ns), every one received for the first time."""
        self.received += len(stamps)
        self.received_measured += record_by_send_time(
            stamps, received_ns, self.accounting.measure_from_ns, self.latency, self.ramp_latency
        )
        if self.first_receive_ns is None:
            self.first_receive_ns = received_ns[0]
        self.last_receive_ns = received_ns[-1]

    def _account(self, seq: int, send_ns: int, now_ns: int, redelivered: bool) -> bool:
        """Count one receipt of `seq`; True if it is the first."""
        try:
            self._add_received(seq)
        except KeyError:
            if redelivered:
                self.redelivered += 1
            else:
                self.duplicated += 1
            return False
        self.received += 1
        accounting = self.accounting
        if send_ns >= accounting.measure_from_ns:
            self.received_measured += 1
            self.latency.record_ns(now_ns - send_ns)
        else:
            self.ramp_latency.record_ns(now_ns - send_ns)
        if accounting.spikes:
            for spike in accounting.spikes:
                if spike.from_ns <= send_ns < spike.to_ns:
                    spike.latency.record_ns(now_ns - send_ns)
        if self.first_receive_ns is None:
            self.first_receive_ns = now_ns
        self.last_receive_ns = now_ns
        return True

    def _arrived(self, acked: int) -> None:
        """First deliveries, once publishing is done, of `acked` acked messages: that many
        fewer to wait for."""
        if acked and self._awaiting is not None:
            self._awaiting -= acked
            if self._awaiting == 0:
                self.drained.set()

    def _watch(self, age_ns: int, now_ns: int) -> None:
        """Released onto a backlog: caught up once a delivered message is young enough."""
        watching = self._watching
        if watching is not None and age_ns <= watching.within_ns:
            watching.caught_up_ns = now_ns
            watching.received_at_catch_up = self.received
            self._watching = None

    def release_onto_backlog(self, now_ns: int, within_ns: int) -> None:
        self.catch_up = self._watching = CatchUp(now_ns, within_ns, self.received)

    def publishing_done(self) -> None:
        """From now on `drained` is set once each acked message of the topic arrived."""
        acked = self.accounting.acked_of(self.topic)
        self._awaiting = acked.difference_cardinality(self._delivered)
        if self._awaiting == 0:
            self.drained.set()

    @property
    def awaiting(self) -> int | None:
        return self._awaiting

    @property
    def lost(self) -> int:
        return self.accounting.acked_of(self.topic).difference_cardinality(self._received)

    def received_of(self, seqs: Iterable[int]) -> set[int]:
        """Those of `seqs` this subscription received."""
        received = self._received
        return {seq for seq in seqs if seq in received}

    def all_latency(self) -> dict[int, int]:
        """Latency counts of every message received, the ramp's included (for the windows)."""
        counts = dict(self.latency.counts)
        for value, count in self.ramp_latency.counts.items():
            counts[value] = counts.get(value, 0) + count
        return counts

    def figures(self, sent: int) -> SubscriptionFigures:
        return SubscriptionFigures(
            topic=self.topic,
            subscription=self.index,
            sent=sent,
            received=self.received,
            lost=self.lost,
            duplicated=self.duplicated,
            redelivered=self.redelivered,
            success_rate=round(100.0 * self.received / sent, 4) if sent else 0.0,
        )


class Accounting:
    """What happened to every sequence number of one trial, for every subscription.

    `planned` is the number of messages when known (a higher sequence number is foreign);
    otherwise only a payload that does not parse counts as foreign.
    """

    def __init__(
        self,
        planned: int | None,
        self_test: SelfTest,
        layout: Layout | None = None,
        subscriptions: int = 1,
    ) -> None:
        self.planned = planned
        self.self_test = self_test
        self.layout = layout or Layout()
        self.acked_seqs = SeqSet()
        self.ledgers: list[ProducerLedger] = []
        self.measure_from_ns = 0  # sent before this: the ramp's, out of the figures
        if self.layout.pattern == "kv":
            subscriptions = 0  # key-value operations are answered; nobody subscribes
        self.subscriptions = [
            Subscription(self, topic, topic * subscriptions + index)
            for topic in range(self.layout.topics)
            for index in range(subscriptions)
        ]
        self.marks: dict[int, ConsumerMark] = {}
        self._window_start: dict[int, int] = {}  # latency counts (all) at the last mark
        self.spikes: list[Spike] = []

    def watch_spike(self, from_ns: int) -> Spike:
        """Record the latency of what is sent in the second from `from_ns` (a fault's time)."""
        spike = Spike(from_ns, from_ns + NS_PER_S, LatencyRecorder())
        self.spikes.append(spike)
        return spike

    def ledger(self) -> ProducerLedger:
        ledger = ProducerLedger(self.acked_seqs)
        self.ledgers.append(ledger)
        return ledger

    def measure_from(self, ramp_end_ns: int) -> None:
        """Messages sent before `ramp_end_ns` are the ramp's: counted, but not in the figures."""
        self.measure_from_ns = ramp_end_ns
        for ledger in self.ledgers:
            ledger.measure_from_ns = ramp_end_ns

    def compact(self) -> None:
        """Store every set's settled stretches as runs (once a second, and after publishing)."""
        compact(self.acked_seqs)
        for subscription in self.subscriptions:
            subscription.compact()

    def acked_of(self, topic: int) -> SeqSet:
        return self.layout.of_topic(self.acked_seqs, topic)

    async def drained(self) -> None:
        """Returns once every subscription received every acked message of its topic."""
        await asyncio.gather(*(s.drained.wait() for s in self.subscriptions))

    def publishing_done(self) -> None:
        """Every ledger is closed: the subscriptions now count what they still await."""
        self.compact()
        for subscription in self.subscriptions:
            subscription.publishing_done()

    def release_onto_backlog(self, now_ns: int, within_ns: int) -> None:
        for subscription in self.subscriptions:
            subscription.release_onto_backlog(now_ns, within_ns)

    @property
    def received(self) -> int:
        """Unique messages received, summed over the subscriptions."""
        return sum(s.received for s in self.subscriptions)

    @property
    def last_receive_ns(self) -> int | None:
        return max(
            (s.last_receive_ns for s in self.subscriptions if s.last_receive_ns), default=None
        )

    @property
    def awaiting(self) -> int:
        return sum(s.awaiting or 0 for s in self.subscriptions)

    @property
    def acked(self) -> int:
        return len(self.acked_seqs)

    def mark(self, tick: int, at_ns: int) -> None:
        """Note the received total and the latency of the window ending at this tick."""
        self.compact()
        counts = self._all_latency()
        p50, p99 = self.latency_since_mark(counts)
        self.marks[tick] = ConsumerMark(at_ns, self.received, p50, p99)
        self._window_start = counts

    def latency_since_mark(
        self, counts: dict[int, int] | None = None
    ) -> tuple[float | None, float | None]:
        """p50 and p99 (ms) end to end of all that arrived since the last mark (or the start)."""
        current = self._all_latency() if counts is None else counts
        window = _since_counts(current, self._window_start)
        return percentile_ms(window, 50.0), percentile_ms(window, 99.0)

    def _all_latency(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for subscription in self.subscriptions:
            for value, count in subscription.all_latency().items():
                counts[value] = counts.get(value, 0) + count
        return counts

    def sent_to(self, topic: int) -> int:
        return sum(
            ledger.sent
            for producer, ledger in enumerate(self.ledgers)
            if self.layout.topic_of_producer(producer) == topic
        )

    def fill(self, metrics: Metrics, *, last_handled_ns: int | None) -> None:
        """Counts, rates and latencies into `metrics` (whatever is known so far).

        Rates run from the first send (or the ramp's end) to the moment the last received
        message was handled, so the handler pool's work (processing_time) is inside the
        window. The counts, loss and duplicates count every message; rates and latencies only
        those sent after the ramp. With several subscriptions, received, lost, duplicated and
        throughput add up over them; success_rate is the worst subscription's.
        """
        errors: Counter[str] = Counter()
        for ledger in self.ledgers:
            errors.update(ledger.errors)
        subscriptions = self.subscriptions
        figures = [s.figures(self.sent_to(s.topic)) for s in subscriptions]
        metrics.sent = sum(ledger.sent for ledger in self.ledgers)
        metrics.acked = self.acked
        metrics.received = sum(f.received for f in figures)
        metrics.lost = sum(f.lost for f in figures)
        metrics.duplicated = sum(f.duplicated for f in figures)
        metrics.success_rate = min((f.success_rate for f in figures), default=0.0)
        metrics.publish_errors = dict(sorted(errors.items()))
        failed = [seq for ledger in self.ledgers for seq in ledger.failed_seqs]
        metrics.publish_failed = len(failed)
        metrics.publish_unknown = sum(ledger.unknown for ledger in self.ledgers)
        metrics.failed_delivered = len(set().union(*(s.received_of(failed) for s in subscriptions)))
        first_sends = [ledger.first_send_ns for ledger in self.ledgers if ledger.first_send_ns]
        start = self.measure_from_ns or (min(first_sends) if first_sends else None)
        last_acks = [ledger.last_ack_ns for ledger in self.ledgers if ledger.last_ack_ns]
        acked = sum(ledger.acked_measured for ledger in self.ledgers)
        if start is not None and last_acks and acked:
            metrics.publish_throughput = _rate(acked, max(last_acks) - start)
        end = last_handled_ns if last_handled_ns is not None else self.last_receive_ns
        received = sum(s.received_measured for s in subscriptions)
        if start is not None and end is not None and received:
            metrics.throughput = _rate(received, end - start)
        metrics.latency_ms = summarise(s.latency for s in subscriptions)
        metrics.publish_latency_ms = summarise(ledger.latency for ledger in self.ledgers)
        if self.layout.pattern != "stream":
            self._fill_answered(metrics)

    def _fill_answered(self, metrics: Metrics) -> None:
        """Requests and key operations are done when their answer is back: the round trip is
        the latency, and the answers per second the throughput."""
        ledgers = self.ledgers
        metrics.throughput = metrics.publish_throughput
        metrics.latency_ms = metrics.publish_latency_ms
        if self.layout.pattern == "request_reply":
            metrics.timeouts = sum(ledger.errors.get(TIMEOUT, 0) for ledger in ledgers)
            metrics.duplicate_replies = sum(ledger.repeated_answers for ledger in ledgers)
            return
        metrics.received = metrics.acked
        metrics.success_rate = (
            round(100.0 * metrics.acked / metrics.sent, 4) if metrics.sent else 0.0
        )
        books = [ledger.operations for ledger in ledgers if ledger.operations is not None]
        metrics.kv_put_latency_ms = summarise(book.puts for book in books)
        metrics.kv_get_latency_ms = summarise(book.gets for book in books)
        metrics.stale_reads = sum(book.stale_reads for book in books)
        metrics.lost_reads = sum(book.lost_reads for book in books)
        metrics.kv_misses = sum(book.misses for book in books)

    def subscription_figures(self) -> list[SubscriptionFigures]:
        return [s.figures(self.sent_to(s.topic)) for s in self.subscriptions]

    def achieved_rate(self, from_ns: int) -> float | None:
        """Messages the producers sent per second from `from_ns` to their last send."""
        done = [ledger.sending_done_ns for ledger in self.ledgers if ledger.sending_done_ns]
        if not done:
            return None
        return _rate(sum(ledger.sent_measured for ledger in self.ledgers), max(done) - from_ns)

    def blocked_share(self, publishing_ns: int) -> float | None:
        """The share of the publishing time the producers spent waiting for the broker, in %."""
        if publishing_ns <= 0 or not self.ledgers:
            return None
        blocked = max(ledger.blocked_ns for ledger in self.ledgers)
        return round(100.0 * min(blocked, publishing_ns) / publishing_ns, 2)


def _since_counts(counts: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    """What was counted after `before` was copied (bucket by bucket)."""
    return {
        value: count - before.get(value, 0)
        for value, count in counts.items()
        if count > before.get(value, 0)
    }


def _rate(count: int, elapsed_ns: int) -> float | None:
    return round(count * NS_PER_S / elapsed_ns, 3) if elapsed_ns > 0 else None
