"""The Python client's own core NATS ceiling: a bare nats-py publish loop and a subscriber.

`python -m benchmarks.bare_nats_core --server URL --messages N [--size B]` prints one JSON
line: {"messages", "msgs_per_s", "e2e_msgs_per_s", "received"}. A forked process subscribes
to a fresh subject and only counts; the publisher then publishes N messages as fast as
nats-py takes them and flushes (a PING answered: the server has read them all). Publish rate
is N over first publish to that answer; end to end, what was received over first publish to
the last arrival. At most once: the subscriber stops after a second without a message, and
says how many it got.
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
from nats.aio.msg import Msg

QUIET_S = 1.0  # the subscriber's end: this long without a message
START_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 60


async def subscribe(server: str, subject: str, messages: int, conn: Connection) -> None:
    """Count; send "ready" once subscribed, then (received, last arrival ns)."""
    nc = await nats.connect(server)
    received, last = 0, 0
    done = asyncio.Event()

    async def on_message(_: Msg) -> None:
        nonlocal received, last
        received += 1
        last = time.monotonic_ns()
        if received == messages:
            done.set()

    await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    conn.send("ready")
    while not done.is_set():
        before = received
        await asyncio.sleep(QUIET_S)
        if received == before and received > 0:
            break
    conn.send((received, last))
    await nc.close()


def _subscriber_process(server: str, subject: str, messages: int, conn: Connection) -> None:
    asyncio.run(subscribe(server, subject, messages, conn))


async def publish(server: str, subject: str, messages: int, size: int) -> tuple[int, int]:
    """(first publish ns, ns when the server had read every message)."""
    nc = await nats.connect(server)
    payload = bytes(size)
    try:
        started = time.monotonic_ns()
        for _ in range(messages):
            await nc.publish(subject, payload)
        await nc.flush(FLUSH_TIMEOUT_S)
        return started, time.monotonic_ns()
    finally:
        await nc.close()


def run(args: argparse.Namespace) -> dict[str, object]:
    subject = f"bare-core-{uuid.uuid4().hex[:10]}"
    fork = multiprocessing.get_context("fork")
    ours, theirs = fork.Pipe()
    subscriber = fork.Process(
        target=_subscriber_process, args=(args.server, subject, args.messages, theirs), daemon=True
    )
    subscriber.start()
    try:
        if not ours.poll(START_TIMEOUT_S) or ours.recv() != "ready":
            raise RuntimeError("the subscriber process did not start")
        first, confirmed = asyncio.run(publish(args.server, subject, args.messages, args.size))
        if not ours.poll(START_TIMEOUT_S):
            raise RuntimeError("the subscriber did not report")
        received, last = ours.recv()
    finally:
        if subscriber.is_alive():
            subscriber.kill()
    return {
        "messages": args.messages,
        "msgs_per_s": args.messages * 1e9 / (confirmed - first),
        "e2e_msgs_per_s": received * 1e9 / (last - first) if received else None,
        "received": received,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024)
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
