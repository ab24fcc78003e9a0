"""The Python client's own request-reply and key-value ceilings: nats-py loops, nothing of exprun.

`python -m benchmarks.bare_nats_patterns --server URL --pattern P --messages N [--size B]
[--reads R --keys K]` prints one JSON line: {"pattern", "messages", "per_s", "failed"}.
- request_reply: a forked responder answers each request with its first 16 bytes (as
  exprun's responders answer with the header); the requester awaits nc.request() one at a
  time, as `nats bench service request` does.
- kv: one client puts and gets the keys of a fresh direct-get bucket, one operation at a time,
  in the order exprun's kv pattern uses (the same hash picks the gets).
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
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError

from runner.execution.drivers.nats_kv import HASH, key_name

REPLY_SIZE = 16
REQUEST_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0


async def respond(server: str, subject: str, conn: Connection) -> None:
    """Answer every request on `subject`; "ready" once subscribed, then until killed."""
    nc = await nats.connect(server)

    async def on_request(msg: Msg) -> None:
        await msg.respond(msg.data[:REPLY_SIZE])

    await nc.subscribe(subject, cb=on_request)
    await nc.flush()
    conn.send("ready")
    await asyncio.Event().wait()


def _responder_process(server: str, subject: str, conn: Connection) -> None:
    asyncio.run(respond(server, subject, conn))


async def request_loop(server: str, subject: str, messages: int, size: int) -> tuple[float, int]:
    """(seconds for `messages` requests one at a time, how many timed out)."""
    nc = await nats.connect(server)
    payload, failed = bytes(size), 0
    try:
        started = time.monotonic()
        for _ in range(messages):
            try:
                await nc.request(subject, payload, timeout=REQUEST_TIMEOUT_S)
            except NatsTimeout:
                failed += 1
        return time.monotonic() - started, failed
    finally:
        await nc.close()


async def kv_loop(
    server: str, messages: int, size: int, reads: float, keys: int
) -> tuple[float, int]:
    """(seconds for `messages` operations one at a time, gets that found nothing)."""
    nc = await nats.connect(server)
    bucket = f"bare-{uuid.uuid4().hex[:10]}"
    js = nc.jetstream()
    kv = await js.create_key_value(
        KeyValueConfig(bucket=bucket, storage=StorageType.MEMORY, direct=True)
    )
    payload, gets_below, missed = bytes(size), round(reads * 2**32), 0
    try:
        started = time.monotonic()
        for seq in range(messages):
            key = key_name(seq % keys)
            if (seq * HASH) & 0xFFFFFFFF < gets_below:
                try:
                    await kv.get(key)
                except KeyNotFoundError:
                    missed += 1
            else:
                await kv.put(key, payload)
        return time.monotonic() - started, missed
    finally:
        await js.delete_key_value(bucket)
        await nc.close()


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.pattern == "kv":
        seconds, failed = asyncio.run(
            kv_loop(args.server, args.messages, args.size, args.reads, args.keys)
        )
    else:
        subject = f"bare-requests-{uuid.uuid4().hex[:10]}"
        fork = multiprocessing.get_context("fork")
        ours, theirs = fork.Pipe()
        responder = fork.Process(
            target=_responder_process, args=(args.server, subject, theirs), daemon=True
        )
        responder.start()
        try:
            if not ours.poll(START_TIMEOUT_S) or ours.recv() != "ready":
                raise RuntimeError("the responder process did not start")
            seconds, failed = asyncio.run(
                request_loop(args.server, subject, args.messages, args.size)
            )
        finally:
            responder.kill()
            responder.join()
    return {
        "pattern": args.pattern,
        "messages": args.messages,
        "per_s": args.messages / seconds,
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--pattern", choices=("request_reply", "kv"), required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--reads", type=float, default=0.5, help="kv: the share of gets")
    parser.add_argument("--keys", type=int, default=1000, help="kv: distinct keys")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
