"""The consumer-side handler pool: `workers` concurrent handlers, each busy `processing_time`.

Both drivers feed the same pool, so pool size matters the same way for every broker: with
5 ms of work per message, 48 handlers cap throughput near 9,600 msg/s and 256 near 51,200.
Each subscription has a pool of its own, as each is an application of its own. A message that
needs an ack (a JetStream consumer that acks) is acked once its handler has finished with it,
as an application does: so `max_ack_pending` against `workers` is a real knob.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from runner.execution.measure.messages import now_ns

Ack = Callable[[], Awaitable[None]]
# payload, its ack, whether the broker redelivered it, and its reply (a request's)
Delivery = tuple[bytes, Ack | None, bool, Ack | None]


class Books(Protocol):
    """Where a pool accounts what it handles: a Subscription, or (in a load-generator process
    of a trial spread over several) what sends it to the trial's own."""

    topic: int
    index: int
    ack_pending: int
    ack_pending_peak: int

    def on_delivery(self, payload: bytes, now_ns: int, redelivered: bool = False) -> int: ...

    def on_batch(self, payloads: Sequence[bytes], received_ns: Sequence[int]) -> None:
        """on_delivery of each payload, handled at its time in `received_ns`."""
        ...


class HandlerPool:
    """Worker tasks taking payloads from a bounded queue (a Go worker pool fed by a channel)."""

    def __init__(self, workers: int, processing_time: float, books: Books) -> None:
        self.workers = workers
        self.processing_time = processing_time
        self.books = books
        # Bounded like a channel of the pool's size: a full pool pushes back on the consumer
        # client (and through its flow control on the broker) instead of buffering unboundedly.
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=workers)
        self._tasks: list[asyncio.Task[None]] = []
        self.last_done_ns: int | None = None
        # Taken by deliver_now and not yet accounted: payloads and their receipt times.
        self._taken: list[bytes] = []
        self._taken_ns: list[int] = []

    @property
    def topic(self) -> int:
        return self.books.topic

    @property
    def subscription(self) -> int:
        return self.books.index

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._handle(), name=f"exprun-handler-{index}")
            for index in range(self.workers)
        ]

    async def deliver(
        self,
        payload: bytes,
        ack: Ack | None = None,
        redelivered: bool = False,
        reply: Ack | None = None,
    ) -> None:
        """Hand one message to the pool; waits while every handler is busy and the queue full.
        A request's `reply` is sent once handled, as often as the books counted it."""
        books = self.books
        if ack is not None:
            books.ack_pending += 1
            books.ack_pending_peak = max(books.ack_pending_peak, books.ack_pending)
        if self.processing_time == 0 and self._queue.empty():
            now = self.last_done_ns = now_ns()
            times = books.on_delivery(payload, now, redelivered)
            if ack is not None:
                await self._ack(ack)
            if reply is not None:
                for _ in range(times):
                    await reply()
            return
        await self._queue.put((payload, ack, redelivered, reply))

    @property
    def immediate(self) -> bool:
        """Handling takes no time: a message without ack or reply may be `deliver_now`."""
        return self.processing_time == 0

    def deliver_now(self, payload: bytes) -> None:
        """Take one message without ack or reply, when the pool is `immediate`: stamped now,
        and accounted with the others taken in this turn of the event loop, in one pass (a
        zero-work trial measures the clients' ceiling: a call per message less)."""
        taken = self._taken
        if not taken:
            asyncio.get_running_loop().call_soon(self._account_taken)
        taken.append(payload)
        self._taken_ns.append(now_ns())

    def _account_taken(self) -> None:
        taken, stamps = self._taken, self._taken_ns
        if taken:
            self.last_done_ns = stamps[-1]
            try:
                self.books.on_batch(taken, stamps)
            finally:  # a batch the books refused is not offered again
                taken.clear()
                stamps.clear()

    async def deliver_many(self, payloads: Sequence[bytes]) -> None:
        if self.immediate:
            now = self.last_done_ns = now_ns()
            self.books.on_batch(payloads, [now] * len(payloads))
            return
        for payload in payloads:
            await self.deliver(payload)

    async def idle(self) -> None:
        """Returns once every delivered message has been handled."""
        self._account_taken()
        await self._queue.join()

    async def close(self) -> None:
        self._account_taken()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _handle(self) -> None:
        queue, books, work = self._queue, self.books, self.processing_time
        while True:
            payload, ack, redelivered, reply = await queue.get()
            try:
                times = books.on_delivery(payload, now_ns(), redelivered)
                if times and work > 0:
                    await asyncio.sleep(work)  # the simulated handling of the message
                if ack is not None:
                    await self._ack(ack)
                if reply is not None:
                    for _ in range(times):
                        await reply()
            finally:
                self.last_done_ns = now_ns()
                queue.task_done()

    async def _ack(self, ack: Ack) -> None:
        try:
            await ack()
        finally:
            self.books.ack_pending -= 1


class Handlers:
    """The pools of every subscription of a trial."""

    def __init__(self, pools: list[HandlerPool]) -> None:
        self.pools = pools

    def start(self) -> None:
        for pool in self.pools:
            pool.start()

    async def idle(self) -> None:
        await asyncio.gather(*(pool.idle() for pool in self.pools))

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self.pools))

    @property
    def last_done_ns(self) -> int | None:
        return max((p.last_done_ns for p in self.pools if p.last_done_ns), default=None)
