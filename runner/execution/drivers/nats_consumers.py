"""JetStream subscriptions of one trial: a consumer per subscription, read by `count` clients.

`consumer.kind` says how: ordered (one client, no acks: the fastest reliable read), push (a
durable consumer with a deliver group its clients share) or pull (fetches of `batch`); the
default is today's: ordered for one client, a shared pull consumer without acks for several.
With `ack: explicit` (or `all`), a message is acked once its handler has finished with it, and
a delivery the server repeats (ack wait expired, nak) counts as redelivered, not duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from runner.execution.drivers.base import DriverError, MessageSink
from schemas.spec import NatsConsumer

PULL_EXPIRES_NS = 500_000_000  # a pull request's life when the stream is idle
# A reader asks for more once fewer than this many batches are still owed to it.
REFILL_BELOW_BATCHES = 1
# Twice a request's life without an answer: the request was lost.
PULL_WATCH_S = 2 * PULL_EXPIRES_NS / 1e9
ACK_POLICIES = {"none": AckPolicy.NONE, "explicit": AckPolicy.EXPLICIT, "all": AckPolicy.ALL}


class Subscriber:
    """One subscription: its JetStream consumer on `stream`, and its clients' reads."""

    def __init__(
        self,
        stream: str,
        settings: NatsConsumer,
        sink: MessageSink,
        connections: list[NATS],
        timeout: float,
        count: int,
    ) -> None:
        self.stream, self.settings, self.sink = stream, settings, sink
        self.connections, self.timeout = connections, timeout
        self.count = count  # clients of the subscription over all processes (these: connections)
        self.name = f"exprun-s{sink.subscription}"
        self.subscriptions: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def kind(self) -> str:
        if self.settings.kind is not None:
            return self.settings.kind
        return "ordered" if self.count == 1 else "pull"

    async def start(self) -> None:
        """Create the consumer and start every client reading it."""
        try:
            if self.kind == "ordered":
                await self._ordered()
            elif self.kind == "push":
                await self._push()
            else:
                await self._pull()
        except (TimeoutError, NatsError) as error:
            raise DriverError(f"cannot create the JetStream consumer: {why(error)}") from None

    def _config(self, **extra: Any) -> ConsumerConfig:
        settings = self.settings
        return ConsumerConfig(
            ack_policy=ACK_POLICIES[settings.ack],
            max_ack_pending=settings.max_ack_pending,
            ack_wait=settings.ack_wait,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=self.stream,
            **extra,
        )

    async def _ordered(self) -> None:
        js = self.connections[0].jetstream(timeout=self.timeout)
        self.subscriptions.append(
            await js.subscribe(
                self.stream,
                stream=self.stream,
                cb=unacked_handler(self.sink),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )
        )

    async def _push(self) -> None:
        on_message = self._handler()
        for nc in self.connections:
            js = nc.jetstream(timeout=self.timeout)
            self.subscriptions.append(
                await js.subscribe(
                    self.stream,
                    queue=self.name,
                    stream=self.stream,
                    cb=on_message,
                    manual_ack=True,
                    config=self._config(),
                )
            )

    async def _pull(self) -> None:
        js = self.connections[0].jetstream(timeout=self.timeout)
        info = await js._jsm.add_consumer(self.stream, self._config(durable_name=self.name))
        for nc in self.connections:
            reader = PullReader(nc, self.stream, info.name, self.settings, self.sink)
            self.subscriptions.append(await reader.start())
            self.tasks.append(asyncio.create_task(reader.watch(), name="exprun-pull-watch"))

    def _handler(self) -> Callable[[Msg], Awaitable[None]]:
        """Per message: hand it over with its ack (when the consumer acks)."""
        sink = self.sink
        if not self.settings.acks:
            return unacked_handler(sink)

        async def on_message(msg: Msg) -> None:
            await sink.deliver(msg.data, msg.ack, msg.metadata.num_delivered > 1)

        return on_message

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        # Unsubscribing first, as a careful application does: it also stops nats-py's heartbeat
        # and flow-control tasks, which a bare close() leaves running for up to 10 s.
        for subscription in self.subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self.subscriptions = []


class PullReader:
    """One client of a pull consumer, on core NATS: pull requests for `batch` messages each,
    answered onto an inbox whose callback hands each message over.

    nats-py's own fetch() awaits every message with a timer of its own: measured here at about
    7,000 msg/s against nats bench's 50,000. Like nats.go's consume, this keeps up to two
    batches requested, and asks for more as messages arrive; a request that ends early (it
    expired, or the ack-pending limit was reached) says in its status how many it still owed.
    """

    def __init__(
        self, nc: NATS, stream: str, consumer: str, settings: NatsConsumer, sink: MessageSink
    ) -> None:
        self.nc, self.settings, self.sink = nc, settings, sink
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = nc.new_inbox()
        self.request = json.dumps({"batch": settings.batch, "expires": PULL_EXPIRES_NS}).encode()
        self.owed = 0  # messages asked for and not yet delivered
        self.answers = 0  # messages and statuses received, for the watch
        self.closed = False
        self.acks, self.publish = settings.acks, nc.publish
        self.deliver_now = sink.deliver_now if sink.immediate and not settings.acks else None

    async def start(self) -> Any:
        subscription = await self.nc.subscribe(self.inbox, cb=self._on_message)
        await self._refill()
        return subscription

    async def _refill(self) -> None:
        batch = self.settings.batch
        while not self.closed and self.owed < (REFILL_BELOW_BATCHES + 1) * batch:
            self.owed += batch
            await self.nc.publish(self.next_subject, self.request, reply=self.inbox)

    async def watch(self) -> None:
        """Ask again when requests stop being answered: a request sent to a node that died,
        or lost while the client reconnected, would never end, nor say what it still owed."""
        seen = self.answers
        while not self.closed:
            await asyncio.sleep(PULL_WATCH_S)
            if self.answers == seen and self.owed > 0:
                self.owed = 0
                with contextlib.suppress(NatsError):
                    await self._refill()
            seen = self.answers

    async def _on_message(self, msg: Msg) -> None:
        self.answers += 1
        headers = msg.headers
        if headers and not msg.data and "Status" in headers:
            # The request ended: what it did not deliver is no longer owed.
            self.owed -= int(headers.get("Nats-Pending-Messages", "0") or 0)
            await self._refill()
            return
        self.owed -= 1
        if self.deliver_now is not None:
            self.deliver_now(msg.data)
        elif self.acks:
            reply = msg.reply
            await self.sink.deliver(msg.data, partial(self.publish, reply, b""), redelivered(reply))
        else:
            await self.sink.deliver(msg.data)
        if self.owed < REFILL_BELOW_BATCHES * self.settings.batch:
            await self._refill()


def unacked_handler(sink: MessageSink) -> Callable[[Msg], Awaitable[None]]:
    """The callback of a client that does not ack: each message straight to `sink`."""
    deliver_now = sink.deliver_now

    async def at_once(msg: Msg) -> None:
        deliver_now(msg.data)

    async def handed_over(msg: Msg) -> None:
        await sink.deliver(msg.data)

    return at_once if sink.immediate else handed_over


def redelivered(reply: str) -> bool:
    """From the ack subject: $JS.ACK.<stream>.<consumer>.<delivered>.<...4 more> (with a domain
    and an account hash, two tokens more before the stream)."""
    index = 4 if reply.count(".") == 8 else 6
    return reply.split(".", index + 1)[index] != "1"


def why(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, TimeoutError):
        text = "timed out"
    return text.removeprefix("nats: ")
