"""Exact per-message accounting: one flag per sequence number for acked, delivered, received.

Each producer has its own ledger and only ever touches its own sequence numbers, so a producer
running on its own thread (Kafka) needs no lock; the consumer side runs on the event loop.
When a trial publishes for a duration as fast as it can, how many messages it sends is not
known up front: the flags then grow as the producers reach new sequence numbers.

Per-second windows cost nothing per message: a ticker (runner.execution.measure.series) marks
the running totals once a second, and the windows are the differences between marks. A ramp
costs one comparison per message: what was sent before its end (`measure_from_ns`) goes into
histograms of its own, so the figures count only what was sent after it.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from runner.execution.measure.faults import Faults
from runner.execution.measure.latency import LatencyRecorder, percentile_ms, summarise
from runner.execution.measure.messages import HEADER, NS_PER_S
from schemas.results import Metrics

unpack_header = HEADER.unpack_from  # (seq, send_ns); one call less per message than decode()
TIMEOUT = "timeout"  # publish error reason: no broker answer within the drain timeout


@dataclass(frozen=True)
class ProducerMark:
    """A producer's running totals at one tick."""

    at_ns: int
    sent: int
    acked: int
    failed: int


@dataclass(frozen=True)
class LedgerState:
    """A producer's books, as a publisher process sends them to the trial process."""

    acked: bytes  # one 0/1 flag per sequence number of the trial
    sent: int
    acked_count: int
    errors: dict[str, int]
    latency: dict[int, int]  # LatencyRecorder.counts, of messages sent after the ramp
    ramp_latency: dict[int, int]
    sent_measured: int
    acked_measured: int
    first_send_ns: int | None
    last_ack_ns: int | None
    sending_done_ns: int | None
    blocked_ns: int
    marks: dict[int, ProducerMark]


class ProducerLedger:
    """One producer's publishes: sent, broker acks, errors by reason, publish latency."""

    def __init__(self, acked: bytearray, grow: Callable[[int], None] | None = None) -> None:
        self._acked = acked
        self._grow = grow or self._grow_own
        self.sent = 0
        self.acked = 0
        self.errors: Counter[str] = Counter()
        self.measure_from_ns = 0  # sent before this: the ramp's, out of the figures
        self.latency = LatencyRecorder()
        self.ramp_latency = LatencyRecorder()
        self.sent_measured = 0
        self.acked_measured = 0
        self.first_send_ns: int | None = None
        self.last_ack_ns: int | None = None
        self.sending_done_ns: int | None = None  # the producer's last message went out
        self.blocked_ns = 0  # time spent waiting for the broker (window or queue full)
        self.marks: dict[int, ProducerMark] = {}
        self.closed = False

    def on_send(self, seq: int, send_ns: int) -> None:
        if seq >= len(self._acked):
            self._grow(seq)
        self.sent += 1
        if send_ns >= self.measure_from_ns:
            self.sent_measured += 1
        if self.first_send_ns is None:
            self.first_send_ns = send_ns

    def on_ack(self, seq: int, send_ns: int, now_ns: int) -> None:
        # Answers after close() were already counted as timeouts: the books stay balanced.
        if self.closed or self._acked[seq]:
            return
        self._acked[seq] = 1
        self.acked += 1
        if send_ns >= self.measure_from_ns:
            self.acked_measured += 1
            self.latency.record_ns(now_ns - send_ns)
        else:
            self.ramp_latency.record_ns(now_ns - send_ns)
        self.last_ack_ns = now_ns

    def on_error(self, reason: str) -> None:
        if not self.closed:
            self.errors[reason] += 1

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def unresolved(self) -> int:
        """Sent but neither acked nor failed yet."""
        return self.sent - self.acked - self.failed

    def mark(self, tick: int, at_ns: int) -> None:
        """Note the running totals at a tick."""
        self.marks[tick] = ProducerMark(at_ns, self.sent, self.acked, self.failed)

    def close(self, reason: str = TIMEOUT) -> None:
        """Count what is still unanswered as failed; ignore any later answer."""
        if not self.closed:
            if self.unresolved > 0:
                self.errors[reason] += self.unresolved
            self.closed = True

    def state(self) -> LedgerState:
        """This (closed) ledger's books, to send to another process."""
        return LedgerState(
            acked=bytes(self._acked),
            sent=self.sent,
            acked_count=self.acked,
            errors=dict(self.errors),
            latency=dict(self.latency.counts),
            ramp_latency=dict(self.ramp_latency.counts),
            sent_measured=self.sent_measured,
            acked_measured=self.acked_measured,
            first_send_ns=self.first_send_ns,
            last_ack_ns=self.last_ack_ns,
            sending_done_ns=self.sending_done_ns,
            blocked_ns=self.blocked_ns,
            marks=dict(self.marks),
        )

    def absorb(self, state: LedgerState) -> None:
        """Take over the books the same producer kept in another process, and close."""
        if len(state.acked) > len(self._acked):
            self._grow(len(state.acked) - 1)
        flags = int.from_bytes(self._acked, "little") | int.from_bytes(state.acked, "little")
        self._acked[:] = flags.to_bytes(len(self._acked), "little")
        self.sent += state.sent
        self.acked += state.acked_count
        self.errors.update(state.errors)
        self.latency.add_counts(state.latency)
        self.ramp_latency.add_counts(state.ramp_latency)
        self.sent_measured += state.sent_measured
        self.acked_measured += state.acked_measured
        if state.first_send_ns is not None:
            self.first_send_ns = min(self.first_send_ns or state.first_send_ns, state.first_send_ns)
        if state.last_ack_ns is not None:
            self.last_ack_ns = max(self.last_ack_ns or 0, state.last_ack_ns)
        self.sending_done_ns = state.sending_done_ns
        self.blocked_ns += state.blocked_ns
        self.marks.update(state.marks)
        self.closed = True

    def _grow_own(self, seq: int) -> None:
        self._acked.extend(bytes(max(seq + 1, 2 * len(self._acked)) - len(self._acked)))


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


class Accounting:
    """What happened to every sequence number of one trial.

    `planned` is the number of messages when known; otherwise the flags grow with the highest
    sequence number sent, and only a payload that does not parse counts as foreign.
    """

    def __init__(self, planned: int | None, faults: Faults) -> None:
        self.planned = planned
        self.faults = faults
        self._faulty = faults.drop_every is not None or faults.duplicate_every is not None
        size = planned if planned is not None else 1 << 16
        self._acked = bytearray(size)
        self._delivered = bytearray(size)  # reached a handler, before any fault applies
        self._received = bytearray(size)  # accounted as received
        self.ledgers: list[ProducerLedger] = []
        self.received = 0
        self.duplicated = 0
        self.foreign = 0  # payloads that are not messages of this trial (must stay 0)
        self.measure_from_ns = 0  # sent before this: the ramp's, out of the figures
        self.received_measured = 0
        self.latency = LatencyRecorder()
        self.ramp_latency = LatencyRecorder()
        self.first_receive_ns: int | None = None
        self.last_receive_ns: int | None = None
        self.drained = asyncio.Event()
        self._awaiting: int | None = None  # acked but not yet delivered, once publishing is done
        self.marks: dict[int, ConsumerMark] = {}
        self._window_start: dict[int, int] = {}  # latency counts (all) at the last mark
        self.catch_up: CatchUp | None = None
        self._watching: CatchUp | None = None  # until the consumers caught up

    def ledger(self) -> ProducerLedger:
        ledger = ProducerLedger(self._acked, self.grow)
        self.ledgers.append(ledger)
        return ledger

    def measure_from(self, ramp_end_ns: int) -> None:
        """Messages sent before `ramp_end_ns` are the ramp's: counted, but not in the figures."""
        self.measure_from_ns = ramp_end_ns
        for ledger in self.ledgers:
            ledger.measure_from_ns = ramp_end_ns

    def grow(self, seq: int) -> None:
        """Room for sequence number `seq` (and as many again) in every flag array."""
        size = max(seq + 1, 2 * len(self._received))
        for flags in (self._acked, self._delivered, self._received):
            if size > len(flags):
                flags.extend(bytes(size - len(flags)))

    def on_delivery(self, payload: bytes, now_ns: int) -> bool:
        """Account one delivered payload; False if a fault discarded it (or it is foreign)."""
        try:
            seq, send_ns = unpack_header(payload)
        except struct.error:
            self.foreign += 1
            return False
        if seq >= len(self._delivered):
            if self.planned is not None:
                self.foreign += 1
                return False
            self.grow(seq)  # a publisher in another process got here first
        if not self._delivered[seq]:
            self._delivered[seq] = 1
            if self._awaiting is not None and self._acked[seq]:
                self._awaiting -= 1
                if self._awaiting == 0:
                    self.drained.set()
        watching = self._watching
        if watching is not None and now_ns - send_ns <= watching.within_ns:
            watching.caught_up_ns = now_ns
            watching.received_at_catch_up = self.received
            self._watching = None
        if self._faulty:
            if self.faults.drops(seq):
                return False
            if self.faults.duplicates(seq):
                self._account(seq, send_ns, now_ns)
        self._account(seq, send_ns, now_ns)
        return True

    def _account(self, seq: int, send_ns: int, now_ns: int) -> None:
        if self._received[seq]:
            self.duplicated += 1
            return
        self._received[seq] = 1
        self.received += 1
        if send_ns >= self.measure_from_ns:
            self.received_measured += 1
            self.latency.record_ns(now_ns - send_ns)
        else:
            self.ramp_latency.record_ns(now_ns - send_ns)
        if self.first_receive_ns is None:
            self.first_receive_ns = now_ns
        self.last_receive_ns = now_ns

    def release_onto_backlog(self, now_ns: int, within_ns: int) -> CatchUp:
        """The consumers start now on a backlog: watch for them catching up."""
        self.catch_up = self._watching = CatchUp(now_ns, within_ns, self.received)
        return self.catch_up

    def publishing_done(self) -> None:
        """Every ledger is closed: from now on `drained` is set once each acked seq arrived."""
        self._awaiting = _count(_and_not(self._acked, self._delivered))
        if self._awaiting == 0:
            self.drained.set()

    def mark(self, tick: int, at_ns: int) -> None:
        """Note the received total and the latency of the window ending at this tick."""
        counts = self._all_latency()
        p50, p99 = self.latency_since_mark(counts)
        self.marks[tick] = ConsumerMark(at_ns, self.received, p50, p99)
        self._window_start = counts

    def latency_since_mark(
        self, counts: dict[int, int] | None = None
    ) -> tuple[float | None, float | None]:
        """p50 and p99 (ms) end to end of all that arrived since the last mark (or the start)."""
        current = self._all_latency() if counts is None else counts
        window = _since_counts(current, self._window_start).counts
        return percentile_ms(window, 50.0), percentile_ms(window, 99.0)

    def _all_latency(self) -> dict[int, int]:
        """Latency counts of every message received, the ramp's included (for the windows)."""
        counts = dict(self.latency.counts)
        for value, count in self.ramp_latency.counts.items():
            counts[value] = counts.get(value, 0) + count
        return counts

    @property
    def awaiting(self) -> int | None:
        return self._awaiting

    @property
    def acked(self) -> int:
        return _count(self._acked)

    @property
    def lost(self) -> int:
        return _count(_and_not(self._acked, self._received))

    def fill(self, metrics: Metrics, *, last_handled_ns: int | None) -> None:
        """Counts, rates and latencies into `metrics` (whatever is known so far).

        Rates run from the first send (or the ramp's end) to the moment the last received
        message was handled, so the handler pool's work (processing_time) is inside the
        window. The counts, loss and duplicates count every message; rates and latencies only
        those sent after the ramp.
        """
        sent = sum(ledger.sent for ledger in self.ledgers)
        errors: Counter[str] = Counter()
        for ledger in self.ledgers:
            errors.update(ledger.errors)
        metrics.sent = sent
        metrics.acked = self.acked
        metrics.received = self.received
        metrics.lost = self.lost
        metrics.duplicated = self.duplicated
        metrics.success_rate = round(100.0 * self.received / sent, 4) if sent else 0.0
        metrics.publish_errors = dict(sorted(errors.items()))
        first_sends = [ledger.first_send_ns for ledger in self.ledgers if ledger.first_send_ns]
        start = self.measure_from_ns or (min(first_sends) if first_sends else None)
        last_acks = [ledger.last_ack_ns for ledger in self.ledgers if ledger.last_ack_ns]
        acked = sum(ledger.acked_measured for ledger in self.ledgers)
        if start is not None and last_acks and acked:
            metrics.publish_throughput = _rate(acked, max(last_acks) - start)
        end = last_handled_ns if last_handled_ns is not None else self.last_receive_ns
        if start is not None and end is not None and self.received_measured:
            metrics.throughput = _rate(self.received_measured, end - start)
        metrics.latency_ms = summarise([self.latency])
        metrics.publish_latency_ms = summarise(ledger.latency for ledger in self.ledgers)

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


def _since_counts(counts: dict[int, int], before: dict[int, int]) -> LatencyRecorder:
    after = LatencyRecorder()
    after.counts = {
        value: count - before.get(value, 0)
        for value, count in counts.items()
        if count > before.get(value, 0)
    }
    return after


def summed_marks(ledgers: Iterable[ProducerLedger]) -> dict[int, tuple[int, int, int]]:
    """(sent, acked, failed) over all producers at each tick every one of them marked."""
    ledgers = list(ledgers)
    ticks = set.intersection(*(set(ledger.marks) for ledger in ledgers)) if ledgers else set()
    return {
        tick: (
            sum(ledger.marks[tick].sent for ledger in ledgers),
            sum(ledger.marks[tick].acked for ledger in ledgers),
            sum(ledger.marks[tick].failed for ledger in ledgers),
        )
        for tick in ticks
    }


def _and_not(a: bytearray, b: bytearray) -> int:
    """Flags (0/1 bytes) set in a but not in b, as one big integer (one bit per set flag)."""
    return int.from_bytes(a, "little") & ~int.from_bytes(b, "little")


def _count(flags: bytearray | int) -> int:
    value = flags if isinstance(flags, int) else int.from_bytes(flags, "little")
    return value.bit_count()


def _rate(count: int, elapsed_ns: int) -> float | None:
    return round(count * NS_PER_S / elapsed_ns, 3) if elapsed_ns > 0 else None
