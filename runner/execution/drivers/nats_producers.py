"""JetStream producers: windowed async publishes with message ids, retried until settled.

Every publish carries a message id (`Nats-Msg-Id`) unique in the run, so a retry of a message
the stream already stored is acknowledged as a duplicate, not stored twice (the stream's
duplicate window covers the delivery timeout). One try (`delivery_timeout: 0s`) sends no ids:
they would serve no retry, and the broker pays for each (its duplicate tracking: 1.6 us of
its CPU per message in benchmarks.harness, a fifth of its work for 1 KiB messages).

A publish the cluster refuses for now (no responders while a stream leader is elected,
JetStream "temporarily unavailable") is retried after `retry_wait`; one with no answer after
`ack_timeout`, or sent on a connection that dropped since, is retried at once; each until
acked or `delivery_timeout` after its first try. A refusal for good (a stream limit) is not
retried. Then it is failed (refused every try: not stored) or unknown (a try went
unanswered: it may be stored).

nats-py's publish checks the subject and builds a header block in Python on every call (a
regex match, strip and translate per key): with a message id, 15% of a producer's
throughput, side by side. Commands are built here in one piece and handed to the client's
outgoing buffer, as its own publish does: publishing alone on 2 cores, 8.6-8.9 us of the
producer's CPU per message with its id and books, against 9.2 us for nats-py's publish of the
same message without an id.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError

from runner.execution.drivers.base import PublishPlan, PublishStalled
from runner.execution.measure.ledger import TIMEOUT, ProducerLedger
from runner.execution.measure.messages import NS_PER_S, now_ns
from schemas.spec import PublishSettings

KEY_HEADER = "Exprun-Key"  # a message's key, carried as a header (JetStream has no partitions)
MSG_ID_HEADER = "Nats-Msg-Id"
NO_RESPONDERS = "no responders (no stream for the subject)"
# JetStream errors that mean "not now" (10008: temporarily unavailable, 10009: this server
# cannot handle it, e.g. no leader yet): tried again. Others (a limit, a wrong sequence) are a
# refusal that a retry would only repeat.
RETRIABLE_ERRORS = {10008, 10009}
TICK_S = 0.02  # how often retries and timeouts are looked after
# nats-server puts the error first in an answer that has one ({"error":{...},"stream":...}):
# a prefix test, where a search of the answer cost 0.15 us per ack.
ERROR_ANSWER = b'{"error"'

Write = Callable[[bytes], Awaitable[None]]
# "NATS/1.0\r\n" before a header block's lines and "\r\n" after them.
HEADER_FRAME = 12


def command_writer(nc: NATS) -> Write:
    """write(command): one protocol command into nats-py's outgoing buffer, as its publish
    does (and, like it, wake the flusher when it is not already due to write)."""
    send_command = nc._send_command

    async def write(command: bytes) -> None:
        if nc.is_closed:
            raise ConnectionClosedError
        await send_command(command)
        flushes = nc._flush_queue
        if flushes is not None and flushes.empty():
            await nc._flush_pending()

    return write


def hpub(
    subject: str, reply: str, lines: str, payload: bytes, rest: bytes | memoryview = b""
) -> bytes:
    """The HPUB command of one message; `lines` are its headers ("Key: value\r\n" each, ASCII).
    The payload may come in two pieces (a message's header and body), joined here once."""
    size = len(lines) + HEADER_FRAME
    total = size + len(payload) + len(rest)
    head = f"HPUB {subject} {reply} {size} {total}\r\nNATS/1.0\r\n{lines}\r\n"
    return b"".join((head.encode(), payload, rest, b"\r\n"))


def pub(subject: str, reply: str, payload: bytes, rest: bytes | memoryview = b"") -> bytes:
    """The PUB command of one message without headers (and without a reply subject if ""),
    its payload in one or two pieces."""
    size = len(payload) + len(rest)
    head = f"PUB {subject} {reply} {size}\r\n" if reply else f"PUB {subject} {size}\r\n"
    return b"".join((head.encode(), payload, rest, b"\r\n"))


class Producer:
    """Publishes with at most `max_pending` messages unsettled, retries included.

    Replies come to `<inbox>.<seq>`; what is in flight is kept by sequence number, with its
    send time, oldest try first, for the retries.
    """

    def __init__(self, index: int, settings: PublishSettings, subject: str, id_prefix: str) -> None:
        self.index = index  # of the layout's producers: it sends seq index, index + n, ...
        self.subject = subject
        # Message ids only where a retry may follow.
        self.id_prefix = id_prefix if settings.retrying else None
        self.window = InFlightWindow(settings.max_pending)
        self.retrying = settings.retrying
        self.delivery_timeout_ns = round(settings.delivery_timeout * NS_PER_S)
        self.retry_wait_ns = round(settings.retry_wait * NS_PER_S)
        self.ack_timeout_ns = round(settings.ack_timeout * NS_PER_S)
        self.prefix = ""
        self._write: Write | None = None
        self.plan: PublishPlan | None = None
        # seq -> (stamp, first try ns, last try ns), in the order of their last tries.
        self.inflight: dict[int, tuple[int, int, int]] = {}
        self.refused: dict[int, tuple[int, int]] = {}  # seq -> (stamp, first try): to retry
        self.backoff: deque[tuple[int, int]] = deque()  # (retry at ns, seq), in that order
        self.uncertain: set[int] = set()  # messages with a try that went unanswered
        self.disconnected_ns: int | None = None
        self.resend_before_ns = 0  # tries before this went out on a connection that dropped
        self.ledger: ProducerLedger | None = None
        self.sending = False
        self.blocked_since: int | None = None  # waiting for the window since (ns)
        self.last_answer_ns = 0
        self.all_answered = asyncio.Event()

    async def listen(self, nc: NATS) -> None:
        self.prefix = f"{nc.new_inbox()}."
        self._write = command_writer(nc)
        await nc.subscribe(f"{self.prefix}*", cb=self.on_reply)

    def disconnected(self) -> None:
        self.disconnected_ns = now_ns()

    def reconnected(self) -> None:
        # Answers to what went out before the drop are lost with the connection.
        if self.disconnected_ns is not None:
            self.resend_before_ns = self.disconnected_ns

    async def run(self, plan: PublishPlan, ledger: ProducerLedger) -> None:
        self.ledger, self.plan, self.sending = ledger, plan, True
        write, command, inflight = self._write, self.command, self.inflight
        assert write is not None
        window, due, paced, until = self.window, plan.due, plan.rate is not None, plan.until_ns
        for seq in plan.seqs(self.index):
            if paced:
                _, wait = due(seq)
                if wait > 0:
                    await asyncio.sleep(wait)
            if not window.free:
                since = self.blocked_since = now_ns()
                await window.opened()
                self.blocked_since = None
                ledger.blocked_ns += now_ns() - since
            # Unpaced messages are stamped now, after the window opened: waiting for the window
            # is the producer's back-pressure, not the message's latency.
            stamp = due(seq)[0] if paced else now_ns()
            if until is not None and stamp >= until:
                break
            window.free -= 1
            ledger.on_send(seq, stamp)
            tried = now_ns() if paced else stamp
            inflight[seq] = (stamp, tried, tried)
            await write(command(seq, stamp))
        ledger.sending_done_ns = now_ns()
        self.sending = False
        self._check_done()

    def command(self, seq: int, stamp: int) -> bytes:
        """The protocol command that sends (or resends) message `seq`."""
        plan = self.plan
        assert plan is not None
        lines = f"{MSG_ID_HEADER}: {self.id_prefix}{seq}\r\n" if self.id_prefix is not None else ""
        if plan.keys.kind != "none":
            lines += f"{KEY_HEADER}: {(plan.keys.key(seq) or b'').decode()}\r\n"
        reply, (header, body) = f"{self.prefix}{seq}", plan.codec.pieces(seq, stamp)
        if not lines:
            return pub(self.subject, reply, header, body)
        return hpub(self.subject, reply, lines, header, body)

    async def on_reply(self, msg: Msg) -> None:
        """The broker's answer to a try of a message: ack, refusal for now, or for good."""
        now = self.last_answer_ns = now_ns()
        ledger = self.ledger
        if ledger is None:
            return
        seq, data = int(msg.subject[len(self.prefix) :]), msg.data
        if not data and msg.headers and msg.headers.get("Status") == "503":
            self._refused(seq, NO_RESPONDERS, now)
        elif data.startswith(ERROR_ANSWER):
            reason, code = _api_error(data)
            if code in RETRIABLE_ERRORS:
                self._refused(seq, reason, now)
            elif self.inflight.pop(seq, None) is not None:
                self.give_up(seq, reason)
        else:
            if self.retrying and b'"duplicate"' in data:  # only a retry can be one
                ledger.duplicate_acks += 1
            entry = self.inflight.pop(seq, None) or self.refused.pop(seq, None)
            if entry is None:
                return  # an earlier try's answer: the message is settled already
            ledger.on_ack(seq, entry[0], now)
            self.settle(seq)

    def _refused(self, seq: int, reason: str, now: int) -> None:
        entry = self.inflight.pop(seq, None)
        if entry is None:
            return  # an earlier try's answer: the message is settled or waiting already
        stamp, first, _ = entry
        if self.retrying and now + self.retry_wait_ns - first < self.delivery_timeout_ns:
            self.refused[seq] = (stamp, first)
            self.backoff.append((now + self.retry_wait_ns, seq))
        else:
            self.give_up(seq, reason)

    def give_up(self, seq: int, reason: str) -> None:
        """No more tries: failed (refused every time) or unknown (a try went unanswered)."""
        assert self.ledger is not None
        if seq in self.uncertain:
            self.ledger.on_unknown(reason)
        else:
            self.ledger.on_failed(seq, reason)
        self.settle(seq)

    def settle(self, seq: int) -> None:
        """Message `seq` is done with: its slot of the window is free."""
        if self.uncertain:
            self.uncertain.discard(seq)
        self.window.release()
        if not self.sending:
            self._check_done()

    def _check_done(self) -> None:
        if not self.sending and self.ledger is not None and self.ledger.unresolved <= 0:
            self.all_answered.set()

    async def resend_due(self, now: int) -> None:
        """Retry what waited out its backoff, and what went unanswered or was lost."""
        backoff, refused, inflight = self.backoff, self.refused, self.inflight
        while backoff and backoff[0][0] <= now:
            _, seq = backoff.popleft()
            waiting = refused.pop(seq, None)
            if waiting is not None:
                await self._retry(seq, *waiting, now)
        cutoff = max(now - self.ack_timeout_ns, self.resend_before_ns)
        while inflight:
            seq = next(iter(inflight))
            stamp, first, last = inflight[seq]
            if last > cutoff:
                break
            del inflight[seq]
            self.uncertain.add(seq)
            if self.retrying and now - first < self.delivery_timeout_ns:
                await self._retry(seq, stamp, first, now)
            else:
                self.give_up(seq, TIMEOUT)

    async def _retry(self, seq: int, stamp: int, first: int, now: int) -> None:
        assert self.ledger is not None and self._write is not None
        self.inflight[seq] = (stamp, first, now)
        self.ledger.retries += 1
        await self._write(self.command(seq, stamp))


class Requester(Producer):
    """Sends requests to the responders of its subject: one try each, done when the reply
    comes back (its round trip is the latency) or timed out after the plan's timeout."""

    def __init__(self, index: int, settings: PublishSettings, subject: str) -> None:
        super().__init__(index, settings.model_copy(update={"delivery_timeout": 0.0}), subject, "")

    async def run(self, plan: PublishPlan, ledger: ProducerLedger) -> None:
        assert plan.request_timeout_s is not None
        self.ack_timeout_ns = round(plan.request_timeout_s * NS_PER_S)
        await super().run(plan, ledger)

    async def on_reply(self, msg: Msg) -> None:
        now = self.last_answer_ns = now_ns()
        ledger = self.ledger
        if ledger is None:
            return
        seq = int(msg.subject[len(self.prefix) :])
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            self._refused(seq, NO_RESPONDERS, now)
            return
        entry = self.inflight.pop(seq, None)
        if entry is None:
            ledger.on_answer_again(seq)  # a second reply, or one after the timeout
        else:
            ledger.on_ack(seq, entry[0], now)
            self.settle(seq)


class InFlightWindow:
    """At most `size` messages in flight, for the one task that sends them: a counter and one
    waiter (asyncio.Semaphore.locked() scans its waiters on every call: ~7% of a producer)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiter: asyncio.Future[None] | None = None

    async def opened(self) -> None:
        """Returns once a slot is free."""
        while not self.free:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def release(self) -> None:
        self.free += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Supervised(Protocol):
    """What supervise() looks after: a producer's answers, retries and waits."""

    all_answered: asyncio.Event
    blocked_since: int | None
    last_answer_ns: int

    async def resend_due(self, now: int) -> None: ...


async def supervise(
    sending: Iterable[asyncio.Task[None]], producers: Sequence[Supervised], timeout: float
) -> None:
    """Look after the producers' retries until every message is settled, or `timeout` after
    the last was sent; fail them if one waited `timeout` for its window without a single
    answer coming back (the broker stopped answering)."""
    limit = round(timeout * NS_PER_S)
    tasks: set[asyncio.Future[Any]] = set(sending)
    answered = asyncio.ensure_future(asyncio.gather(*(p.all_answered.wait() for p in producers)))
    waiting = {*tasks, answered}
    sent_ns: int | None = None
    try:
        while not answered.done():
            done, waiting = await asyncio.wait(
                waiting, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done & tasks:
                task.result()  # re-raise a producer's error
            now = now_ns()
            for producer in producers:
                await producer.resend_due(now)
                since = producer.blocked_since
                if since is not None and now - max(since, producer.last_answer_ns) > limit:
                    raise PublishStalled(
                        f"publishing stalled: the in-flight window was full and no JetStream "
                        f"answer came for {timeout:g}s"
                    )
            if not waiting & tasks:
                sent_ns = sent_ns or now
                if now - sent_ns > limit:
                    return  # what is still unsettled is counted as unknown
    finally:
        answered.cancel()


def _api_error(data: bytes) -> tuple[str, int | None]:
    """The reason of a JetStream error answer (e.g. 'maximum messages exceeded') and its
    error code (err_code)."""
    try:
        error = json.loads(data)["error"]
        reason = str(error.get("description") or f"error code {error.get('err_code')}")
        return reason, error.get("err_code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unreadable JetStream answer", None
