"""The compacted books against a plain model of exact books, on random interleavings.

Sends, acks (repeated; one at a time or answered together, as Kafka's delivery reports of one
poll are), deliveries (reordered, repeated, redelivered, missing; one at a time or in batches,
as Kafka's consumers hand them over) and compactions in any order, over several topics,
producers and subscriptions: loss, duplicates, redeliveries, latency records and what
is still awaited must come out as the model counts them, message by message.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from runner.execution.measure.accounting import Accounting, Layout
from runner.execution.measure.ledger import ProducerLedger
from runner.execution.measure.messages import HEADER
from runner.execution.measure.self_test import SelfTest
from runner.execution.measure.seqsets import SeqSet
from schemas.results import Metrics


@dataclass
class ModelSubscription:
    topic: int
    delivered: set[int] = field(default_factory=set)
    received: set[int] = field(default_factory=set)
    duplicated: int = 0
    redelivered: int = 0


# (kind, seq, subscription, redelivered); a batch: (kind, first seq, subscription, stride)
Event = tuple[str, int, int, bool | int]


@st.composite
def trials(draw: st.DrawFn) -> tuple[Layout, int, int, list[Event]]:
    layout = Layout(draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    subscriptions = draw(st.integers(1, 2))
    messages = draw(st.integers(1, 300))
    seqs = st.integers(0, messages - 1)
    events = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("ack"), seqs, st.just(0), st.just(False)),
                st.tuples(
                    st.just("deliver"),
                    seqs,
                    st.integers(0, layout.topics * subscriptions - 1),
                    st.booleans(),
                ),
                st.tuples(st.just("compact"), st.just(0), st.just(0), st.just(False)),
                # A run of consecutive numbers, in order: what compaction makes runs of.
                st.tuples(st.just("stretch"), seqs, st.integers(0, 64), st.just(False)),
                # Every stride-th number from seq on, handed over together (stride 0: one
                # number, many times).
                st.tuples(
                    st.just("batch"),
                    seqs,
                    st.integers(0, layout.topics * subscriptions - 1),
                    st.integers(0, 3),
                ),
                # Acks of one producer answered together (Kafka's reports of one poll), every
                # stride-th of its numbers from seq on (stride 0: one number, many times).
                st.tuples(st.just("acks"), seqs, st.just(0), st.integers(0, 3)),
            ),
            max_size=400,
        )
    )
    return layout, subscriptions, messages, events


@settings(max_examples=300, deadline=None)
@given(trials())
def test_compacted_books_count_what_exact_books_count(
    trial: tuple[Layout, int, int, list[Event]],
) -> None:
    layout, per_topic, messages, events = trial
    accounting = Accounting(messages, SelfTest(), layout, per_topic)
    ledgers = [accounting.ledger() for _ in range(layout.producers)]
    for seq in range(messages):
        ledgers[seq % layout.producers].on_send(seq, 1_000)
    acked: set[int] = set()
    model = [ModelSubscription(s.topic) for s in accounting.subscriptions]

    def topic_of(seq: int) -> int:
        return layout.topic_of_producer(seq % layout.producers)

    def deliver(seq: int, index: int, redelivered: bool) -> None:
        books, expected = accounting.subscriptions[index], model[index]
        if topic_of(seq) != books.topic:
            return  # a subscription only ever sees its own topic
        assert books.on_delivery(HEADER.pack(seq, 1_000), 2_000, redelivered)
        expected.delivered.add(seq)
        if seq in expected.received:
            if redelivered:
                expected.redelivered += 1
            else:
                expected.duplicated += 1
        expected.received.add(seq)

    def deliver_batch(first: int, index: int, stride: int) -> None:
        books = accounting.subscriptions[index]
        seqs = [first] * 3 if stride == 0 else list(range(first, messages, stride))[:50]
        ours = [seq for seq in seqs if topic_of(seq) == books.topic]
        books.on_batch([HEADER.pack(seq, 1_000) for seq in ours], [2_000] * len(ours))
        for seq in ours:
            expected = model[index]
            expected.delivered.add(seq)
            if seq in expected.received:
                expected.duplicated += 1
            expected.received.add(seq)

    # Publishing ends half way: the ledgers close (a later answer is not an ack), and what is
    # awaited is counted from there.
    done_at, closed = len(events) // 2, False

    def ack(seq: int) -> None:
        ledgers[seq % layout.producers].on_ack(seq, 1_000, 1_500)
        if not closed:
            acked.add(seq)

    def ack_batch(first: int, stride: int) -> None:
        step = stride * layout.producers  # one producer's numbers only
        seqs = [first] * 3 if stride == 0 else list(range(first, messages, step))[:50]
        ledgers[first % layout.producers].on_acks([(seq, 1_000) for seq in seqs], 1_500)
        if not closed:
            acked.update(seqs)

    for number, (kind, seq, index, redelivered) in enumerate(events):
        if number == done_at:
            for ledger in ledgers:
                ledger.close()
            accounting.publishing_done()
            closed = True
        if kind == "ack":
            ack(seq)
        elif kind == "deliver":
            deliver(seq, index, bool(redelivered))
        elif kind == "batch":
            deliver_batch(seq, index, int(redelivered))
        elif kind == "acks":
            ack_batch(seq, int(redelivered))
        elif kind == "stretch":
            for each in range(seq, min(messages, seq + index)):
                ack(each)
                for subscription in range(len(model)):
                    deliver(each, subscription, False)
        else:
            accounting.mark(number, 3_000)
    if not closed:
        accounting.publishing_done()

    assert accounting.acked == len(acked)
    assert sum(ledger.acked for ledger in ledgers) == len(acked)
    assert sum(ledger.latency.count for ledger in ledgers) == len(acked)  # one per first ack
    for books, expected in zip(accounting.subscriptions, model, strict=True):
        of_topic = {seq for seq in acked if topic_of(seq) == books.topic}
        assert books.received == len(expected.received)
        assert books.latency.count == len(expected.received)  # one figure per first receipt
        assert books.duplicated == expected.duplicated
        assert books.redelivered == expected.redelivered
        assert books.lost == len(of_topic - expected.received)
        assert books.awaiting == len(of_topic - expected.delivered)
        assert books.drained.is_set() == (books.awaiting == 0)
    metrics = Metrics()
    accounting.fill(metrics, last_handled_ns=None)
    assert metrics.lost == sum(s.lost for s in accounting.subscriptions)
    assert metrics.received == sum(len(m.received) for m in model)


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 5_000_000), max_size=500), st.integers(0, 100_000))
def test_a_ledger_kept_elsewhere_is_taken_over_exactly(acks: set[int], stretch: int) -> None:
    """What a publisher process acked reaches the trial's set whole (its portable form)."""
    trial_side = SeqSet([7, 11])
    elsewhere = ProducerLedger(SeqSet())
    everything = acks | set(range(stretch))
    for seq in sorted(everything):
        elsewhere.on_send(seq, 1_000)
        elsewhere.on_ack(seq, 1_000, 2_000)
        elsewhere.on_ack(seq, 1_000, 2_000)  # a second answer is no second ack
    elsewhere.mark(0, 3_000)
    ledger = ProducerLedger(trial_side)
    ledger.absorb(pickle.loads(pickle.dumps(elsewhere.state())))
    assert set(trial_side) == everything | {7, 11}
    assert ledger.acked == len(everything)
