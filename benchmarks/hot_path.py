"""exprun's own work per message, without a broker: each side's CPU time, side by side.

`python -m benchmarks.hot_path [--messages N] [--rounds R]` prints, per message, the best of R
rounds of each side (one JSON line at the end):

- consumer: what a zero-work subscription does with each delivered message (taken by its
  handler pool, accounted by the books when the event loop turns, every 64 messages as nats-py
  hands over a socket read), against a callback that only counts;
- JetStream producer: sending and acking each message (command built, written to the client's
  outgoing buffer, its ack matched, books and window settled) against a stub client that
  answers every command at once, against the bare window loop on the same stub (nats-py's
  `pub_cmd` and a semaphore, without the subject checks of its `publish()`: a floor);
- Kafka delivery reports: what a producer does with the reports of each `poll()` (every
  POLL_EVERY messages, as its send loop polls), against a callback that only counts.

The end-to-end rows of benchmarks.harness say what this costs against the broker; this says
where, and moves when a change to the hot path does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.protocol.command import pub_cmd

from runner.execution.drivers.base import PublishPlan
from runner.execution.drivers.kafka import POLL_EVERY, ProducerSlot
from runner.execution.drivers.nats_producers import Producer
from runner.execution.measure.accounting import Accounting
from runner.execution.measure.handlers import HandlerPool
from runner.execution.measure.messages import MessageCodec, now_ns
from runner.execution.measure.self_test import SelfTest
from runner.execution.measure.series import Schedule
from schemas.spec import PublishSettings

SIZE = 1024
WINDOW = 4096
PER_TURN = 64  # messages nats-py hands over between two turns of the event loop
SUBJECT = "exprun-bench-0123456789ab"
ACK = b'{"stream":"exprun-bench-0123456789ab","seq":123456}'


class _Delivered:
    """What nats-py hands a callback: here only the payload, or a reply's subject and data."""

    __slots__ = ("data", "headers", "subject")

    def __init__(self, data: bytes, subject: str = "") -> None:
        self.data, self.subject, self.headers = data, subject, None


class _StubClient:
    """Just enough of a nats-py client: commands land in a list the test answers from."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._flush_queue = None
        self.is_closed = False

    def new_inbox(self) -> str:
        return "_INBOX.abcdefghijklmnopqrstuv"

    async def subscribe(self, subject: str, cb: Any) -> None:
        self.on_reply = cb

    async def _send_command(self, command: bytes) -> None:
        self._pending.append(command)

    def taken(self) -> list[bytes]:
        taken, self._pending = self._pending, []
        return taken


class _Report:
    """What confluent-kafka hands a delivery callback: here only the payload."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


class _StubProducer:
    """A confluent-kafka producer whose every poll() serves the next POLL_EVERY reports."""

    def __init__(self, reports: list[_Report], on_delivery: Callable[[Any, Any], None]) -> None:
        self._reports, self._served, self._on_delivery = reports, 0, on_delivery

    def poll(self, timeout: float) -> int:
        batch = self._reports[self._served : self._served + POLL_EVERY]
        for report in batch:
            self._on_delivery(None, report)
        self._served += len(batch)
        return len(batch)


def cpu_ns_per_message(run: Callable[[], Coroutine[Any, Any, None]], messages: int) -> float:
    started = time.process_time_ns()
    asyncio.run(run())
    return (time.process_time_ns() - started) / messages


def consumer_sides(messages: int) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
    codec, sent = MessageCodec(SIZE), now_ns()
    delivered = [_Delivered(codec.encode(seq, sent)) for seq in range(messages)]

    async def feed(on_message: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
        for index, message in enumerate(delivered):
            await on_message(message)
            if index % PER_TURN == PER_TURN - 1:
                await asyncio.sleep(0)

    async def bare() -> None:
        received = 0

        async def on_message(_: Any) -> None:
            nonlocal received
            received += 1

        await feed(on_message)
        assert received == messages

    async def exprun() -> None:
        [books] = Accounting(messages, SelfTest()).subscriptions
        pool = HandlerPool(256, 0.0, books)
        deliver_now = pool.deliver_now

        async def on_message(message: Any) -> None:
            deliver_now(message.data)

        await feed(on_message)
        await pool.idle()
        assert books.received == messages and books.latency.count == messages

    return {"bare": bare, "exprun": exprun}


def producer_sides(messages: int) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
    async def answer(client: _StubClient, on_reply: Any, done: Callable[[], bool]) -> None:
        while not done():
            await asyncio.sleep(0)
            for command in client.taken():
                reply = command.split(b" ", 3)[2].decode()
                await on_reply(_Delivered(ACK, reply))

    async def exprun() -> None:
        client, start = _StubClient(), now_ns()
        settings = PublishSettings.model_validate({"max_pending": WINDOW, "delivery_timeout": 0})
        producer = Producer(0, settings, SUBJECT, "")
        await producer.listen(client)  # type: ignore[arg-type]
        ledger = Accounting(messages, SelfTest()).ledger()
        plan = PublishPlan(messages, 1, None, MessageCodec(SIZE), Schedule(start, start))

        def done() -> bool:
            return not producer.sending and not producer.inflight

        producer.sending = True
        await asyncio.gather(producer.run(plan, ledger), answer(client, client.on_reply, done))
        assert ledger.acked == messages

    async def bare() -> None:
        client, slots, answered = _StubClient(), asyncio.Semaphore(WINDOW), 0
        prefix, payload = f"{client.new_inbox()}.", bytes(SIZE)

        async def on_ack(_: Any) -> None:
            nonlocal answered
            slots.release()
            answered += 1

        async def send() -> None:
            for seq in range(messages):
                await slots.acquire()
                await client._send_command(pub_cmd(SUBJECT, f"{prefix}{seq}", payload))

        await asyncio.gather(send(), answer(client, on_ack, lambda: answered == messages))

    return {"bare": bare, "exprun": exprun}


def kafka_report_sides(messages: int) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
    codec, sent = MessageCodec(SIZE), now_ns()
    reports = [_Report(codec.encode(seq, sent)) for seq in range(messages)]
    polls = -(-messages // POLL_EVERY)

    async def bare() -> None:
        answered = 0

        def on_delivery(error: Any, _: Any) -> None:
            nonlocal answered
            if error is None:
                answered += 1

        producer = _StubProducer(reports, on_delivery)
        for _ in range(polls):
            producer.poll(0)
        assert answered == messages

    async def exprun() -> None:
        slot = ProducerSlot(0, SUBJECT, 1)
        slot.producer = _StubProducer(reports, slot.on_delivery)  # type: ignore[assignment]
        ledger = slot.ledger = Accounting(messages, SelfTest()).ledger()
        for _ in range(polls):
            slot.serve(0)
        assert ledger.acked == messages and ledger.latency.count == messages

    return {"bare": bare, "exprun": exprun}


PATHS = {
    "consumer": consumer_sides,
    "producer": producer_sides,
    "kafka_reports": kafka_report_sides,
}


def measure(messages: int, rounds: int) -> dict[str, dict[str, int]]:
    """Best of `rounds` (ns of CPU per message) of each side of each path."""
    figures: dict[str, dict[str, int]] = {}
    for path, make in PATHS.items():
        runs = make(messages)
        best = {
            side: min(cpu_ns_per_message(run, messages) for _ in range(rounds))
            for side, run in runs.items()
        }
        sides = figures[path] = {side: round(value) for side, value in best.items()}
        sides["exprun_extra_ns"] = sides["exprun"] - sides["bare"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = measure(args.messages, args.rounds)
    for path, sides in figures.items():
        print(
            f"{path:13} exprun {sides['exprun']:6.0f} ns  bare {sides['bare']:6.0f} ns  "
            f"exprun's own {sides['exprun_extra_ns']:6.0f} ns a message"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
