"""One producer's books: what it sent, the broker's answers, and its publish latency.

Each producer has its own ledger and only ever touches its own sequence numbers; a producer
running on its own thread (Kafka) needs no lock: every change of the set of acked sequence
numbers is one call that holds the GIL. That set is the trial's (shared by every ledger); a
ledger kept in another process has its own and is absorbed when it is done.

A message the producer gave up on is either failed (the broker refused every try: it was not
stored, so it must never be delivered) or unknown (a try went unanswered: it may be stored).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from runner.execution.measure.availability import AckTimeline
from runner.execution.measure.latency import LatencyRecorder, record_by_send_time
from runner.execution.measure.seqsets import (
    SeqSet,
    compact,
    from_bytes,
    new_and_distinct,
    to_bytes,
)

TIMEOUT = "timeout"  # publish error reason: no broker answer within the drain timeout


@dataclass(frozen=True)
class ProducerMark:
    """A producer's running totals at one tick."""

    at_ns: int
    sent: int
    acked: int
    given_up: int


@dataclass
class OperationBook:
    """A key-value workload's own figures: each kind's latency, and gets that missed a put."""

    puts: LatencyRecorder = field(default_factory=LatencyRecorder)
    gets: LatencyRecorder = field(default_factory=LatencyRecorder)
    stale_reads: int = 0  # an older revision than one acked before the get was sent
    lost_reads: int = 0  # no value, though a put of the key was acked before the get was sent
    misses: int = 0  # no value, and none was put yet: no error

    def state(self) -> tuple[dict[int, int], dict[int, int], int, int, int]:
        return (
            dict(self.puts.counts),
            dict(self.gets.counts),
            self.stale_reads,
            self.lost_reads,
            self.misses,
        )

    def absorb(self, state: tuple[dict[int, int], dict[int, int], int, int, int]) -> None:
        puts, gets, stale, lost, misses = state
        self.puts.add_counts(puts)
        self.gets.add_counts(gets)
        self.stale_reads += stale
        self.lost_reads += lost
        self.misses += misses


@dataclass(frozen=True)
class LedgerState:
    """A producer's books, as a publisher process sends them to the trial process."""

    acked: bytes  # the sequence numbers acked (seqsets.to_bytes)
    sent: int
    acked_count: int
    errors: dict[str, int]
    failed_seqs: bytes  # array "q" of the refused messages' sequence numbers
    unknown: int
    retries: int
    duplicate_acks: int
    repeated_answers: int
    latency: dict[int, int]  # LatencyRecorder.counts, of messages sent after the ramp
    ramp_latency: dict[int, int]
    sent_measured: int
    acked_measured: int
    first_send_ns: int | None
    last_ack_ns: int | None
    sending_done_ns: int | None
    blocked_ns: int
    marks: dict[int, ProducerMark]
    ack_counts: bytes | None  # the AckTimeline's buckets (array "I"), in trials with faults
    operations: tuple[dict[int, int], dict[int, int], int, int, int] | None  # OperationBook


class ProducerLedger:
    """One producer's publishes: sent, broker acks, errors by reason, publish latency."""

    def __init__(self, acked: SeqSet) -> None:
        self._acked = acked
        self._add_acked = acked.add_checked  # KeyError if it was there: one call per ack
        self.sent = 0
        self.acked = 0
        self.errors: Counter[str] = Counter()  # given up, by the last try's reason
        self.failed_seqs = array("q")  # refused by the broker: never stored
        self.unknown = 0  # given up with a try unanswered: may be stored
        self.retries = 0  # tries beyond the first (when exprun retries)
        self.duplicate_acks = 0  # retries the broker recognised as already stored
        self.repeated_answers = 0  # answers to a message acked already (request-reply replies)
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
        self.timeline: AckTimeline | None = None  # acks over time, in trials with faults
        self.operations: OperationBook | None = None  # pattern kv: puts and gets apart
        self.closed = False

    def on_send(self, seq: int, send_ns: int) -> None:
        self.sent += 1
        if send_ns >= self.measure_from_ns:
            self.sent_measured += 1
        if self.first_send_ns is None:
            self.first_send_ns = send_ns

    def on_ack(self, seq: int, send_ns: int, now_ns: int) -> None:
        # Answers after close() were already counted as timeouts: the books stay balanced.
        if self.closed:
            return
        try:
            self._add_acked(seq)
        except KeyError:
            return  # acked before
        self.acked += 1
        if send_ns >= self.measure_from_ns:
            self.acked_measured += 1
            self.latency.record_ns(now_ns - send_ns)
        else:
            self.ramp_latency.record_ns(now_ns - send_ns)
        self.last_ack_ns = now_ns
        if self.timeline is not None:
            self.timeline.add(now_ns)

    def on_acks(self, stamps: Sequence[tuple[int, int]], now_ns: int) -> None:
        """on_ack of each (seq, send ns), all answered at `now_ns`: in one pass while each is
        acked for the first time and no ack timeline is kept, else one by one."""
        if self.closed or not stamps:
            return
        if self.timeline is None:
            # Only this ledger's producer adds its numbers: nothing comes between check and add.
            seqs = new_and_distinct([seq for seq, _ in stamps], self._acked)
            if seqs is not None:
                self._acked.update(seqs)
                self.acked += len(stamps)
                self.acked_measured += record_by_send_time(
                    stamps,
                    [now_ns] * len(stamps),
                    self.measure_from_ns,
                    self.latency,
                    self.ramp_latency,
                )
                self.last_ack_ns = now_ns
                return
        for seq, send_ns in stamps:
            self.on_ack(seq, send_ns, now_ns)

    def on_answer_again(self, seq: int) -> None:
        """An answer for message `seq`, settled already: counted if it had been acked (a late
        answer to one that timed out is not a second answer)."""
        if seq in self._acked:
            self.repeated_answers += 1

    def on_failed(self, seq: int, reason: str) -> None:
        """The broker refused message `seq` (every try): it was not stored."""
        if not self.closed:
            self.errors[reason] += 1
            self.failed_seqs.append(seq)

    def on_unknown(self, reason: str) -> None:
        """Given up on a message without knowing whether the broker stored it."""
        if not self.closed:
            self.errors[reason] += 1
            self.unknown += 1

    @property
    def failed(self) -> int:
        return len(self.failed_seqs)

    @property
    def given_up(self) -> int:
        """Failed or unknown: settled without an ack."""
        return self.failed + self.unknown

    @property
    def unresolved(self) -> int:
        """Sent but neither acked nor given up yet."""
        return self.sent - self.acked - self.given_up

    def mark(self, tick: int, at_ns: int) -> None:
        """Note the running totals at a tick, and compact what was acked since the last."""
        self.marks[tick] = ProducerMark(at_ns, self.sent, self.acked, self.given_up)
        compact(self._acked)

    def close(self, reason: str = TIMEOUT) -> None:
        """Count what is still unanswered as unknown; ignore any later answer."""
        if not self.closed:
            if self.unresolved > 0:
                self.errors[reason] += self.unresolved
                self.unknown += self.unresolved
            self.closed = True

    def state(self) -> LedgerState:
        """This (closed) ledger's books, to send to another process."""
        return LedgerState(
            acked=to_bytes(self._acked),
            sent=self.sent,
            acked_count=self.acked,
            errors=dict(self.errors),
            failed_seqs=self.failed_seqs.tobytes(),
            unknown=self.unknown,
            retries=self.retries,
            duplicate_acks=self.duplicate_acks,
            repeated_answers=self.repeated_answers,
            latency=dict(self.latency.counts),
            ramp_latency=dict(self.ramp_latency.counts),
            sent_measured=self.sent_measured,
            acked_measured=self.acked_measured,
            first_send_ns=self.first_send_ns,
            last_ack_ns=self.last_ack_ns,
            sending_done_ns=self.sending_done_ns,
            blocked_ns=self.blocked_ns,
            marks=dict(self.marks),
            ack_counts=self.timeline.counts.tobytes() if self.timeline is not None else None,
            operations=self.operations.state() if self.operations is not None else None,
        )

    def absorb(self, state: LedgerState) -> None:
        """Take over the books the same producer kept in another process, and close."""
        self._acked |= from_bytes(state.acked)
        self.sent += state.sent
        self.acked += state.acked_count
        self.errors.update(state.errors)
        self.failed_seqs.frombytes(state.failed_seqs)
        self.unknown += state.unknown
        self.retries += state.retries
        self.duplicate_acks += state.duplicate_acks
        self.repeated_answers += state.repeated_answers
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
        if self.timeline is not None and state.ack_counts is not None:
            self.timeline.merge(AckTimeline.of_bytes(state.ack_counts).counts)
        if state.operations is not None:
            self.operations = self.operations or OperationBook()
            self.operations.absorb(state.operations)
        self.closed = True


def summed_marks(ledgers: Iterable[ProducerLedger]) -> dict[int, tuple[int, int, int]]:
    """(sent, acked, given up) over all producers at each tick every one of them marked."""
    ledgers = list(ledgers)
    ticks = set.intersection(*(set(ledger.marks) for ledger in ledgers)) if ledgers else set()
    return {
        tick: (
            sum(ledger.marks[tick].sent for ledger in ledgers),
            sum(ledger.marks[tick].acked for ledger in ledgers),
            sum(ledger.marks[tick].given_up for ledger in ledgers),
        )
        for tick in ticks
    }
