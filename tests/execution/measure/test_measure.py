"""Inside a trial, without a broker: growing books, the ramp by send time, per-second windows."""

from __future__ import annotations

import asyncio
import pickle
import zlib
from typing import Any

from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.execution.measure.accounting import Accounting, Layout
from runner.execution.measure.handlers import HandlerPool
from runner.execution.measure.latency import (
    HIGHEST_US,
    LOWEST_US,
    SIGNIFICANT_DIGITS,
    LatencyRecorder,
    percentile_ms,
)
from runner.execution.measure.ledger import TIMEOUT, ProducerLedger
from runner.execution.measure.messages import (
    HEADER,
    NS_PER_S,
    KeyPlan,
    MessageCodec,
    decode,
    now_ns,
)
from runner.execution.measure.self_test import SelfTest
from runner.execution.measure.seqsets import SeqSet
from runner.execution.measure.series import Schedule, time_series
from schemas.results import Metrics
from schemas.spec import PayloadCompressibility

MS = 1_000_000


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=300),
    st.sampled_from([50.0, 90.0, 99.0, 99.9, 100.0]),
)
def test_window_percentile_is_hdrhistograms(micros: list[int], percentile: float) -> None:
    recorder = LatencyRecorder()
    histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for value in micros:
        recorder.record_ns(value * 1000)
        histogram.record_value(value)
    expected = round(histogram.get_value_at_percentile(percentile) / 1000.0, 4)
    assert percentile_ms(recorder.counts, percentile) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2 * HIGHEST_US * 1000), max_size=300))
def test_a_batch_of_latencies_counts_as_each_recorded_alone(elapsed: list[int]) -> None:
    alone, batched = LatencyRecorder(), LatencyRecorder()
    for value in elapsed:
        alone.record_ns(value)
    batched.record_all_ns(elapsed)
    assert batched.counts == alone.counts


def test_a_batch_received_at_once_is_counted_like_its_messages_one_by_one() -> None:
    """A Kafka batch: new numbers in one pass, the ramp's apart, and a batch holding a
    duplicate or a foreign payload one by one."""
    accounting = Accounting(100, SelfTest())
    accounting.measure_from(1_500)
    [books] = accounting.subscriptions
    books.on_batch([payload(0, 1_000), payload(1, 2_000), payload(2, 2_000)], [5_000] * 3)
    assert (books.received, books.received_measured) == (3, 2)
    assert books.latency.counts == {3: 2} and books.ramp_latency.counts == {4: 1}
    batch = [payload(3, 2_000), payload(1, 2_000), b"x", payload(200, 2_000)]
    books.on_batch(batch, [6_000, 7_000, 8_000, 9_000])
    assert (books.received, books.duplicated, books.foreign) == (4, 1, 2)
    assert books.latency.counts == {3: 2, 4: 1}
    assert books.first_receive_ns == 5_000 and books.last_receive_ns == 6_000


def test_messages_taken_at_once_are_accounted_when_the_loop_turns() -> None:
    """A zero-work pool takes each message with its own receipt time, and accounts what it
    took in one pass once the client's callbacks yield (or when asked whether it is idle)."""
    accounting = Accounting(10, SelfTest())
    [books] = accounting.subscriptions
    pool = HandlerPool(4, 0.0, books)

    async def deliver() -> tuple[int, int, int | None]:
        for seq in range(3):
            pool.deliver_now(payload(seq, now_ns()))
        before = books.received
        await asyncio.sleep(0)
        after = books.received
        pool.deliver_now(payload(3, now_ns()))
        await pool.idle()
        return before, after, pool.last_done_ns

    before, after, last_done = asyncio.run(deliver())
    assert (before, after, books.received, books.latency.count) == (0, 3, 4, 4)
    assert last_done == books.last_receive_ns and last_done is not None


def payload(seq: int, sent_ns: int) -> bytes:
    return HEADER.pack(seq, sent_ns)


def test_books_take_any_sequence_number_when_the_number_of_messages_is_not_known() -> None:
    accounting = Accounting(None, SelfTest())
    ledger = accounting.ledger()
    [books] = accounting.subscriptions
    last = 200_000
    for seq in (0, 1, last):
        ledger.on_send(seq, 1000)
        ledger.on_ack(seq, 1000, 2000)
        assert books.on_delivery(payload(seq, 1000), 3000)
    accounting.publishing_done()
    assert (accounting.acked, accounting.received, books.lost) == (3, 3, 0)
    assert books.foreign == 0 and books.drained.is_set()
    [known] = Accounting(10, SelfTest()).subscriptions
    assert not known.on_delivery(payload(10, 1000), 3000) and known.foreign == 1


def test_the_ramp_is_left_out_by_send_time_but_counted() -> None:
    accounting = Accounting(4, SelfTest())
    ledger = accounting.ledger()
    [books] = accounting.subscriptions
    accounting.measure_from(5 * MS)
    # Two messages sent in the ramp (one arrives after it ended), two after it.
    for seq, sent, arrived in (
        (0, 1 * MS, 2 * MS),
        (1, 4 * MS, 9 * MS),
        (2, 6 * MS, 7 * MS),
        (3, 8 * MS, 10 * MS),
    ):
        ledger.on_send(seq, sent)
        ledger.on_ack(seq, sent, sent + MS)
        books.on_delivery(payload(seq, sent), arrived)
    metrics = Metrics()
    accounting.fill(metrics, last_handled_ns=10 * MS)
    assert (metrics.sent, metrics.received, metrics.lost) == (4, 4, 0)
    assert metrics.latency_ms.count == 2 and metrics.latency_ms.max == 2.0
    assert metrics.publish_latency_ms.count == 2
    assert metrics.throughput == 2 * NS_PER_S / (5 * MS)  # 2 messages from 5 ms to 10 ms


def test_windows_add_up_to_the_books() -> None:
    accounting = Accounting(None, SelfTest())
    ledger = accounting.ledger()
    [books] = accounting.subscriptions
    schedule = Schedule(start_ns=0, ramp_end_ns=0)
    seq = 0
    for second in range(3):
        for _ in range(10 * (second + 1)):
            sent = second * NS_PER_S + seq * 1000
            ledger.on_send(seq, sent)
            ledger.on_ack(seq, sent, sent + MS)
            books.on_delivery(payload(seq, sent), sent + 2 * MS)
            seq += 1
        tick = second + 1
        ledger.mark(tick, schedule.tick_at(tick))
        accounting.mark(tick, schedule.tick_at(tick))
    # The load generator's peak RSS by the tick that ended its window; the last one's apart.
    rss = {1: 50.0, 2: None, 3: 52.5}
    series = time_series(schedule, 3 * NS_PER_S + NS_PER_S // 2, accounting, rss, 53.0)
    assert series.start_s == [0.0, 1.0, 2.0, 3.0] and series.seconds == [1.0, 1.0, 1.0, 0.5]
    assert series.loadgen_rss_mb == [50.0, None, 52.5, 53.0]
    assert series.published == [10, 20, 30, 0] and series.received == [10, 20, 30, 0]
    assert series.latency_p99_ms[:3] == [2.0, 2.0, 2.0] and series.latency_p99_ms[3] is None
    assert sum(series.acked) == 60 and series.in_flight == [0, 0, 0, 0]


def fan_out(self_test: SelfTest) -> Accounting:
    """Two topics, one producer each (producer 0 sends the even sequence numbers to topic 0,
    producer 1 the odd ones to topic 1), two subscriptions per topic, everything delivered."""
    accounting = Accounting(8, self_test, Layout(topics=2, producers_per_topic=1), subscriptions=2)
    ledgers = [accounting.ledger(), accounting.ledger()]
    for seq in range(8):
        ledgers[seq % 2].on_send(seq, 1000)
        ledgers[seq % 2].on_ack(seq, 1000, 2000)
    for books in accounting.subscriptions:
        for seq in range(books.topic, 8, 2):
            books.on_delivery(payload(seq, 1000), 3000)
    accounting.publishing_done()
    return accounting


def test_fan_out_counts_each_subscription_apart() -> None:
    metrics = Metrics()
    fan_out(SelfTest()).fill(metrics, last_handled_ns=4000)
    # Every message reaches both subscriptions of its topic: 8 sent, 16 received.
    assert (metrics.sent, metrics.received, metrics.lost, metrics.success_rate) == (8, 16, 0, 100.0)


def test_a_starved_subscription_loses_alone() -> None:
    # Subscription 3 (topic 1, the odd messages) discards every one of them: (seq + 1) % 2 == 0.
    accounting = fan_out(SelfTest(drop_every=2, subscription=3))
    metrics = Metrics()
    accounting.fill(metrics, last_handled_ns=4000)
    lost = {f.subscription: f.lost for f in accounting.subscription_figures()}
    assert lost == {0: 0, 1: 0, 2: 0, 3: 4}
    assert metrics.lost == 4 and metrics.received == 12
    assert metrics.success_rate == 0.0  # the worst subscription's


def test_payloads_compress_as_declared() -> None:
    def ratio(payload: Any) -> float:
        codec = MessageCodec(1024, payload)
        batch = b"".join(codec.encode(seq, 5) for seq in range(1000))
        return len(zlib.compress(batch)) / len(batch)

    assert ratio("zeros") < 0.02
    assert ratio("random") > 0.98  # no two bodies of a batch repeat each other
    assert 0.45 < ratio(PayloadCompressibility(compressibility=0.5)) < 0.56
    codec = MessageCodec(64, "random")
    assert len(codec.encode(7, 9)) == 64 and decode(codec.encode(7, 9)) == (7, 9)
    assert pickle.loads(pickle.dumps(codec)).encode(7, 9) == codec.encode(7, 9)


def test_keys_derive_from_the_sequence_number() -> None:
    assert KeyPlan("none").key(5) is None
    ten = {KeyPlan(10).key(seq) for seq in range(1000)}
    assert len(ten) == 10
    assert KeyPlan("random").key(1) != KeyPlan("random").key(2)
    assert KeyPlan("random").key(42) == KeyPlan("random").key(42)  # any process agrees
    assert [KeyPlan("round_robin").partition(seq, 3) for seq in range(6)] == [0, 1, 2, 0, 1, 2]
    assert KeyPlan(10).partition(5, 3) is None


def test_given_up_publishes_are_failed_or_unknown_and_travel_between_processes() -> None:
    accounting = Accounting(6, SelfTest())
    ledger = accounting.ledger()
    [books] = accounting.subscriptions
    for seq in range(6):
        ledger.on_send(seq, 1000)
    ledger.on_ack(0, 1000, 2000)
    ledger.on_failed(1, "no responders")
    ledger.on_failed(2, "no responders")
    ledger.on_unknown("timeout")
    ledger.retries, ledger.duplicate_acks = 7, 2
    assert (ledger.failed, ledger.unknown, ledger.given_up, ledger.unresolved) == (2, 1, 3, 2)
    # A publisher process keeps books of its own; the trial takes them over whole.
    elsewhere = ProducerLedger(SeqSet())
    elsewhere.absorb(pickle.loads(pickle.dumps(ledger.state())))
    assert list(elsewhere.failed_seqs) == [1, 2] and elsewhere.unknown == 1
    assert (elsewhere.retries, elsewhere.duplicate_acks) == (7, 2)
    ledger.close()  # two still unanswered: their outcome is unknown
    assert ledger.unknown == 3 and ledger.errors == {"no responders": 2, TIMEOUT: 3}
    ledger.on_failed(5, "late")  # after close: ignored
    assert ledger.failed == 2
    # The broker refused 2, yet it reached a consumer: that must not pass unseen.
    assert books.on_delivery(payload(0, 1000), 3000)
    assert books.on_delivery(payload(2, 1000), 3000)
    accounting.publishing_done()
    metrics = Metrics()
    accounting.fill(metrics, last_handled_ns=None)
    assert (metrics.publish_failed, metrics.publish_unknown, metrics.failed_delivered) == (2, 3, 1)
    assert metrics.publish_errors == {"no responders": 2, TIMEOUT: 3}
    assert metrics.lost == 0 and metrics.received == 2


def test_a_producer_that_stopped_marking_when_done_still_has_its_last_second_in_place() -> None:
    """The NATS publisher process marks ticks only while it publishes: the second it finished
    in belongs to that window, not to the trial's last one."""
    accounting = Accounting(None, SelfTest())
    ledger = accounting.ledger()
    [books] = accounting.subscriptions
    schedule = Schedule(start_ns=0, ramp_end_ns=0)
    seq = 0
    for second in range(4):
        for _ in range(10):
            sent = second * NS_PER_S + seq * 1000
            ledger.on_send(seq, sent)
            ledger.on_ack(seq, sent, sent + MS)
            books.on_delivery(payload(seq, sent), sent + 2 * MS)
            seq += 1
        tick = second + 1
        if tick < 4:  # the producers' last mark is at 3 s; they were done at 3.9 s
            ledger.mark(tick, schedule.tick_at(tick))
        accounting.mark(tick, schedule.tick_at(tick))
    ledger.sending_done_ns = 3 * NS_PER_S + 900 * MS
    for tick in (5, 6):  # the consumers' side goes on ticking through the drain
        accounting.mark(tick, schedule.tick_at(tick))
    series = time_series(schedule, 6 * NS_PER_S + NS_PER_S // 2, accounting, {}, None)
    assert series.published == [10, 10, 10, 10, 0, 0, 0]
    assert series.acked == [10, 10, 10, 10, 0, 0, 0]
