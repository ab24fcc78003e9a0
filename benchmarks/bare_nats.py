"""The Python client's own JetStream ceiling: bare nats-py loops, nothing of exprun.

`python -m benchmarks.bare_nats --server URL --messages N --mode M [--consume]` prints one
JSON line: {"mode", "messages", "msgs_per_s", "e2e_msgs_per_s", "stored"}.
Modes: `async` is nats-py's documented `JetStream.publish_async` (a future and a JSON parse per
ack); `window` is the leanest loop the client allows: core publishes with a reply inbox and at
most P in flight, acks counted, not parsed. With --consume, a forked process reads the stream
meanwhile with an ordered push consumer that only counts, as exprun's trials consume.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
import uuid
from multiprocessing.connection import Connection

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, StorageType, StreamConfig

CONSUMER_TIMEOUT_S = 120.0


async def publish_async_loop(nc: Client, subject: str, payload: bytes, n: int, window: int) -> None:
    """nats-py's own async publishing: at most `window` unacknowledged futures."""
    js = nc.jetstream(publish_async_max_pending=window)
    for _ in range(n):
        await js.publish_async(subject, payload)
    await js.publish_async_completed()


async def window_loop(nc: Client, subject: str, payload: bytes, n: int, window: int) -> None:
    """Core publishes whose acks come to one wildcard inbox; a semaphore bounds the window."""
    slots = asyncio.Semaphore(window)
    done = asyncio.Event()
    answered = 0
    prefix = f"{nc.new_inbox()}."

    async def on_ack(_: Msg) -> None:
        nonlocal answered
        slots.release()
        answered += 1
        if answered == n:
            done.set()

    await nc.subscribe(f"{prefix}*", cb=on_ack)
    for seq in range(n):
        await slots.acquire()
        await nc.publish(subject, payload, reply=f"{prefix}{seq}")
    await done.wait()


LOOPS = {"async": publish_async_loop, "window": window_loop}


async def publish(
    server: str, stream: str, messages: int, size: int, window: int, mode: str
) -> tuple[int, int, int]:
    """(first send ns, last ack ns, messages stored) of one publishing loop."""
    nc = await nats.connect(server)
    try:
        started = time.monotonic_ns()
        await LOOPS[mode](nc, stream, bytes(size), messages, window)
        finished = time.monotonic_ns()
        stored = (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()
    return started, finished, stored


async def consume(server: str, stream: str, messages: int, conn: Connection) -> None:
    """Count the stream's messages; send "ready" once subscribed, then the last one's time."""
    nc = await nats.connect(server)
    done = asyncio.Event()
    received = 0

    async def on_message(_: Msg) -> None:
        nonlocal received
        received += 1
        if received == messages:
            done.set()

    js = nc.jetstream()
    await js.subscribe(
        stream,
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    conn.send("ready")
    await asyncio.wait_for(done.wait(), CONSUMER_TIMEOUT_S)
    conn.send(time.monotonic_ns())
    await nc.close()


def _consumer_process(server: str, stream: str, messages: int, conn: Connection) -> None:
    asyncio.run(consume(server, stream, messages, conn))


async def admin(server: str, stream: str, create: bool) -> None:
    nc = await nats.connect(server)
    js = nc.jetstream()
    try:
        if create:
            config = StreamConfig(name=stream, subjects=[stream], storage=StorageType.MEMORY)
            await js.add_stream(config)
        else:
            await js.delete_stream(stream)
    finally:
        await nc.close()


def run(args: argparse.Namespace) -> dict[str, object]:
    stream = f"bare-{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(args.server, stream, create=True))
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    consumer = multiprocessing.get_context("fork").Process(
        target=_consumer_process, args=(args.server, stream, args.messages, theirs), daemon=True
    )
    try:
        if args.consume:
            consumer.start()
            if not ours.poll(CONSUMER_TIMEOUT_S) or ours.recv() != "ready":
                raise RuntimeError("the consumer process did not start")
        first, last_ack, stored = asyncio.run(
            publish(args.server, stream, args.messages, args.size, args.max_pending, args.mode)
        )
        e2e = None
        if args.consume:
            if not ours.poll(CONSUMER_TIMEOUT_S):
                raise RuntimeError("the consumer did not receive every message")
            e2e = args.messages * 1e9 / (ours.recv() - first)
    finally:
        if consumer.is_alive():
            consumer.kill()
        asyncio.run(admin(args.server, stream, create=False))
    return {
        "mode": args.mode,
        "messages": args.messages,
        "msgs_per_s": args.messages * 1e9 / (last_ack - first),
        "e2e_msgs_per_s": e2e,
        "stored": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--max-pending", type=int, default=4096)
    parser.add_argument("--mode", choices=sorted(LOOPS), default="async")
    parser.add_argument("--consume", action="store_true", help="a consumer process reads along")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
