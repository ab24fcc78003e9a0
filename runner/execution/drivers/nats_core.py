"""Core NATS (`jetstream: false`): plain subjects, at most once, no stream and no acks.

A publish is confirmed when a PING sent after it is answered: the server has read every
command before the PING, so from then on a message it did not deliver was dropped by it (a
slow consumer) or by the client (its pending limit), and counts as lost. Confirmations go
out every CONFIRM_BATCH messages, before a paced producer sleeps, and on each supervision
tick, so a publish's latency is its time to the server plus at most that batching.

Subscribers of a subscription share it as a queue group; before the measured phase each
producer probes its subject until every subscription of its topic answers, so no message
is published before the interest in it reached the producer's server (on a cluster, a
subscription is known to the other nodes a moment after it was made).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from runner.execution.drivers.base import DriverError, MessageSink, PublishPlan
from runner.execution.drivers.nats_producers import Write, command_writer, pub
from runner.execution.measure.ledger import TIMEOUT, ProducerLedger
from runner.execution.measure.messages import HEADER_SIZE, NS_PER_S, now_ns

CONFIRM_BATCH = 1000  # messages per PING when unpaced
PROBE_HEADER = "Exprun-Probe"  # a probe, answered with the subscription's index, not delivered
PROBE_WAIT_S = 0.2  # for the answers to one probe
CONFIRM_TIMEOUT_S = 5  # for a PONG; then what it would confirm is unknown
DISCONNECTED = "connection lost before the server confirmed"


class CoreProducer:
    """Publishes without acks; the server's PONGs confirm what it has read (see module doc)."""

    def __init__(self, index: int, subject: str) -> None:
        self.index = index  # of the layout's producers: it sends seq index, index + n, ...
        self.subject = subject
        self.nc: NATS | None = None
        self._write: Write | None = None
        self.ledger: ProducerLedger | None = None
        self.pending: list[tuple[int, int]] = []  # (seq, stamp) sent since the last PING
        self.confirming: set[asyncio.Task[None]] = set()
        self.sending = False
        self.blocked_since: int | None = None  # never: nothing waits for the broker
        self.last_answer_ns = 0
        self.all_answered = asyncio.Event()

    async def listen(self, nc: NATS) -> None:
        self.nc, self._write = nc, command_writer(nc)

    def disconnected(self) -> None:
        # What went out since the last PING may or may not have reached the server (the PINGs
        # already sent time out, and count theirs as unknown too).
        if self.ledger is not None:
            for _ in self.pending:
                self.ledger.on_unknown(DISCONNECTED)
        self.pending = []

    def reconnected(self) -> None:
        pass

    async def run(self, plan: PublishPlan, ledger: ProducerLedger) -> None:
        self.ledger, self.sending = ledger, True
        write = self._write
        assert write is not None
        subject, pieces, due = self.subject, plan.codec.pieces, plan.due
        paced, until = plan.rate is not None, plan.until_ns
        for seq in plan.seqs(self.index):
            stamp, wait = due(seq)
            if wait > 0:
                self.confirm()
                await asyncio.sleep(wait)
            if until is not None and stamp >= until:
                break
            ledger.on_send(seq, stamp)
            await write(pub(subject, "", *pieces(seq, stamp)))
            self.pending.append((seq, stamp))
            if not paced and len(self.pending) >= CONFIRM_BATCH:
                self.confirm()
        ledger.sending_done_ns = now_ns()
        self.sending = False
        self.confirm()
        self._check_done()

    def confirm(self) -> None:
        """PING after what was sent since the last one; its PONG acks all of it."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        task = asyncio.create_task(self._confirmed(batch), name="exprun-nats-confirm")
        self.confirming.add(task)
        task.add_done_callback(self.confirming.discard)

    async def _confirmed(self, batch: list[tuple[int, int]]) -> None:
        nc, ledger = self.nc, self.ledger
        assert nc is not None and ledger is not None
        try:
            # The batch goes onto the socket first: nats-py writes a PING past its buffer.
            await nc._flush_pending(force_flush=True)
            await nc.flush(CONFIRM_TIMEOUT_S)
        except (TimeoutError, NatsError, OSError) as error:
            reason = TIMEOUT if isinstance(error, TimeoutError) else DISCONNECTED
            for _ in batch:
                ledger.on_unknown(reason)
        else:
            now = self.last_answer_ns = now_ns()
            for seq, stamp in batch:
                ledger.on_ack(seq, stamp, now)
        self._check_done()

    def _check_done(self) -> None:
        if not self.sending and self.ledger is not None and self.ledger.unresolved <= 0:
            self.all_answered.set()

    async def resend_due(self, now: int) -> None:
        """Nothing is ever resent; each supervision tick confirms what is still pending."""
        self.confirm()


async def await_subscriptions(nc: NATS, subject: str, subscriptions: int, timeout: float) -> None:
    """Returns once each of `subject`'s `subscriptions` answers a probe published on it."""
    inbox = nc.new_inbox()
    answered: set[bytes] = set()
    everyone = asyncio.Event()

    async def on_answer(msg: Msg) -> None:
        answered.add(msg.data)
        if len(answered) >= subscriptions:
            everyone.set()

    subscription = await nc.subscribe(inbox, cb=on_answer)
    deadline = now_ns() + round(timeout * NS_PER_S)
    try:
        while not everyone.is_set():
            if now_ns() >= deadline:
                raise DriverError(
                    f"core NATS: {len(answered)} of {subscriptions} subscriptions of {subject} "
                    f"answered within {timeout:g}s"
                )
            await nc.publish(subject, b"", reply=inbox, headers={PROBE_HEADER: "1"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone.wait(), PROBE_WAIT_S)
    finally:
        with contextlib.suppress(NatsError):
            await subscription.unsubscribe()


class CoreSubscriber:
    """One subscription's clients: a queue group on the subject, each on its connection.
    Responders (`replies`) answer each request once handled, with the request's header."""

    def __init__(
        self, subject: str, sink: MessageSink, connections: list[NATS], *, replies: bool = False
    ) -> None:
        self.subject, self.sink, self.connections = subject, sink, connections
        self.replies = replies
        self.queue = f"exprun-s{sink.subscription}"
        self.subscriptions: list[Any] = []

    def _handler(self, nc: NATS) -> Callable[[Msg], Awaitable[None]]:
        sink, answer, write = self.sink, str(self.sink.subscription).encode(), command_writer(nc)
        replies = self.replies
        deliver_now = sink.deliver_now if sink.immediate and not replies else None

        async def on_message(msg: Msg) -> None:
            headers = msg.headers
            if headers and PROBE_HEADER in headers:
                await msg.respond(answer)
            elif deliver_now is not None:
                deliver_now(msg.data)
            elif replies:
                reply = pub(msg.reply, "", msg.data[:HEADER_SIZE])
                await sink.deliver(msg.data, reply=partial(write, reply))
            else:
                await sink.deliver(msg.data)

        return on_message

    async def start(self) -> None:
        try:
            for nc in self.connections:
                self.subscriptions.append(
                    await nc.subscribe(self.subject, queue=self.queue, cb=self._handler(nc))
                )
                await nc.flush()  # the server knows the interest before anyone publishes
        except (TimeoutError, NatsError) as error:
            raise DriverError(f"cannot subscribe to {self.subject}: {error}") from None

    async def stop(self) -> None:
        for subscription in self.subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self.subscriptions = []
