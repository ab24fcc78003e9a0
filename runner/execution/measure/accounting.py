"""Exact per-message accounting: one flag per sequence number for acked, delivered, received.

Each producer has its own ledger and only ever touches its own sequence numbers, so a producer
running on its own thread (Kafka) needs no lock; the consumer side runs on the event loop.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from dataclasses import dataclass

from runner.execution.measure.faults import Faults
from runner.execution.measure.latency import LatencyRecorder, summarise
from runner.execution.measure.messages import HEADER, NS_PER_S
from schemas.results import Metrics

unpack_header = HEADER.unpack_from  # (seq, send_ns); one call less per message than decode()
TIMEOUT = "timeout"  # publish error reason: no broker answer within the drain timeout


@dataclass(frozen=True)
class LedgerState:
    """A producer's books, as a publisher process sends them to the trial process."""

    acked: bytes  # one 0/1 flag per sequence number of the trial
    sent: int
    acked_count: int
    errors: dict[str, int]
    latency: dict[int, int]  # LatencyRecorder.counts
    first_send_ns: int | None
    last_ack_ns: int | None


class ProducerLedger:
    """One producer's publishes: sent, broker acks, errors by reason, publish latency."""

    def __init__(self, acked: bytearray) -> None:
        self._acked = acked
        self.sent = 0
        self.acked = 0
        self.errors: Counter[str] = Counter()
        self.latency = LatencyRecorder()
        self.first_send_ns: int | None = None
        self.last_ack_ns: int | None = None
        self.closed = False

    def on_send(self, send_ns: int) -> None:
        self.sent += 1
        if self.first_send_ns is None:
            self.first_send_ns = send_ns

    def on_ack(self, seq: int, send_ns: int, now_ns: int) -> None:
        # Answers after close() were already counted as timeouts: the books stay balanced.
        if self.closed or self._acked[seq]:
            return
        self._acked[seq] = 1
        self.acked += 1
        self.latency.record_ns(now_ns - send_ns)
        self.last_ack_ns = now_ns

    def on_error(self, reason: str) -> None:
        if not self.closed:
            self.errors[reason] += 1

    @property
    def unresolved(self) -> int:
        """Sent but neither acked nor failed yet."""
        return self.sent - self.acked - sum(self.errors.values())

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
            first_send_ns=self.first_send_ns,
            last_ack_ns=self.last_ack_ns,
        )

    def absorb(self, state: LedgerState) -> None:
        """Take over the books the same producer kept in another process, and close."""
        flags = int.from_bytes(self._acked, "little") | int.from_bytes(state.acked, "little")
        self._acked[:] = flags.to_bytes(len(self._acked), "little")
        self.sent += state.sent
        self.acked += state.acked_count
        self.errors.update(state.errors)
        self.latency.add_counts(state.latency)
        if state.first_send_ns is not None:
            self.first_send_ns = min(self.first_send_ns or state.first_send_ns, state.first_send_ns)
        if state.last_ack_ns is not None:
            self.last_ack_ns = max(self.last_ack_ns or 0, state.last_ack_ns)
        self.closed = True


class Accounting:
    """What happened to every sequence number of one trial."""

    def __init__(self, messages: int, faults: Faults) -> None:
        self.messages = messages
        self.faults = faults
        self._faulty = faults.drop_every is not None or faults.duplicate_every is not None
        self._acked = bytearray(messages)
        self._delivered = bytearray(messages)  # reached a handler, before any fault applies
        self._received = bytearray(messages)  # accounted as received
        self.ledgers: list[ProducerLedger] = []
        self.received = 0
        self.duplicated = 0
        self.foreign = 0  # payloads that are not messages of this trial (must stay 0)
        self.latency = LatencyRecorder()
        self.first_receive_ns: int | None = None
        self.last_receive_ns: int | None = None
        self.drained = asyncio.Event()
        self._awaiting: int | None = None  # acked but not yet delivered, once publishing is done

    def ledger(self) -> ProducerLedger:
        ledger = ProducerLedger(self._acked)
        self.ledgers.append(ledger)
        return ledger

    def on_delivery(self, payload: bytes, now_ns: int) -> bool:
        """Account one delivered payload; False if a fault discarded it (or it is foreign)."""
        try:
            seq, send_ns = unpack_header(payload)
        except struct.error:
            self.foreign += 1
            return False
        if seq >= self.messages:
            self.foreign += 1
            return False
        if not self._delivered[seq]:
            self._delivered[seq] = 1
            if self._awaiting is not None and self._acked[seq]:
                self._awaiting -= 1
                if self._awaiting == 0:
                    self.drained.set()
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
        self.latency.record_ns(now_ns - send_ns)
        if self.first_receive_ns is None:
            self.first_receive_ns = now_ns
        self.last_receive_ns = now_ns

    def publishing_done(self) -> None:
        """Every ledger is closed: from now on `drained` is set once each acked seq arrived."""
        self._awaiting = _count(_and_not(self._acked, self._delivered))
        if self._awaiting == 0:
            self.drained.set()

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

        Throughput runs from the first send to the moment the last received message was handled,
        so the handler pool's work (processing_time) is inside the window.
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
        first_send = min(first_sends) if first_sends else None
        last_acks = [ledger.last_ack_ns for ledger in self.ledgers if ledger.last_ack_ns]
        if first_send is not None and last_acks:
            metrics.publish_throughput = _rate(metrics.acked, max(last_acks) - first_send)
        end = last_handled_ns if last_handled_ns is not None else self.last_receive_ns
        if first_send is not None and end is not None and self.received:
            metrics.throughput = _rate(self.received, end - first_send)
        metrics.latency_ms = summarise([self.latency])
        metrics.publish_latency_ms = summarise(ledger.latency for ledger in self.ledgers)


def _and_not(a: bytearray, b: bytearray) -> int:
    """Flags (0/1 bytes) set in a but not in b, as one big integer (one bit per set flag)."""
    return int.from_bytes(a, "little") & ~int.from_bytes(b, "little")


def _count(flags: bytearray | int) -> int:
    value = flags if isinstance(flags, int) else int.from_bytes(flags, "little")
    return value.bit_count()


def _rate(count: int, elapsed_ns: int) -> float | None:
    return round(count * NS_PER_S / elapsed_ns, 3) if elapsed_ns > 0 else None
