"""The Python client's own Kafka ceiling: bare confluent-kafka loops, nothing of exprun.

`python -m benchmarks.bare_kafka --bootstrap HOST:PORT --messages N [--size B] [--property K=V]`
prints one JSON line: {"messages", "msgs_per_s", "e2e_msgs_per_s", "received"}. A producer
produces N messages of B bytes to a new one-partition topic (polling for its delivery
reports, as exprun's producers do) while a forked process reads the partition from the start
with an assigned consumer that only counts, as exprun's trials consume.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
import uuid
from multiprocessing.connection import Connection

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CONSUMER_TIMEOUT_S = 120.0
BATCH = 10_000  # messages per consume() call: librdkafka's own batching, not exprun's


def produce(
    bootstrap: str, topic: str, messages: int, size: int, props: dict[str, str]
) -> tuple[int, int]:
    """(first send ns, last delivery report ns) of one producing loop."""
    producer = Producer({"bootstrap.servers": bootstrap, **props})
    payload = bytes(size)
    delivered = 0

    def on_delivery(error: object, _: object) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1

    started = time.monotonic_ns()
    for _ in range(messages):
        while True:
            try:
                producer.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    producer.flush(CONSUMER_TIMEOUT_S)
    finished = time.monotonic_ns()
    if delivered != messages:
        raise RuntimeError(f"{delivered} of {messages} messages delivered")
    return started, finished


def consume(bootstrap: str, topic: str, messages: int, conn: Connection) -> None:
    """Count the partition's messages; send "ready" once assigned, then the last one's time."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bare-{topic}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    conn.send("ready")
    received, deadline = 0, time.monotonic() + CONSUMER_TIMEOUT_S
    while received < messages and time.monotonic() < deadline:
        received += sum(1 for m in consumer.consume(BATCH, 0.1) if m.error() is None)
    conn.send((time.monotonic_ns(), received))
    consumer.close()


def run(args: argparse.Namespace) -> dict[str, object]:
    topic = f"bare-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    props = dict(item.split("=", 1) for item in args.property)
    fork = multiprocessing.get_context("fork")
    ours, theirs = fork.Pipe()
    consumer = fork.Process(
        target=consume, args=(args.bootstrap, topic, args.messages, theirs), daemon=True
    )
    try:
        consumer.start()
        if not ours.poll(CONSUMER_TIMEOUT_S) or ours.recv() != "ready":
            raise RuntimeError("the consumer process did not start")
        first, last_ack = produce(args.bootstrap, topic, args.messages, args.size, props)
        if not ours.poll(CONSUMER_TIMEOUT_S):
            raise RuntimeError("the consumer did not finish")
        last_received, received = ours.recv()
    finally:
        if consumer.is_alive():
            consumer.kill()
        admin.delete_topics([topic])
    return {
        "messages": args.messages,
        "msgs_per_s": args.messages * 1e9 / (last_ack - first),
        "e2e_msgs_per_s": received * 1e9 / (last_received - first),
        "received": received,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--property", action="append", default=[], help="producer K=V")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
