"""Topology and consumers on real embedded brokers: consumer kinds and acks, consumer groups
and commits, several topics, fan-out with exact books per subscription, redeliveries."""

from __future__ import annotations

from typing import Any

import pytest
from test_trials import kafka_config, make_request, nats_config

from runner.execution.brokers import RunningBroker
from runner.execution.measure.self_test import SelfTest
from runner.execution.trial.parent import run_trial
from schemas.results import TrialResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def exact(result: TrialResult, sent: int, subscriptions: int = 1) -> None:
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.received) == (sent, sent, sent * subscriptions)
    assert (m.lost, m.duplicated, m.publish_errors, m.success_rate) == (0, 0, {}, 100.0)


@pytest.mark.parametrize(
    ("kind", "ack", "consumers"),
    [
        ("ordered", "none", 1),
        ("push", "none", 2),
        ("push", "explicit", 2),
        ("pull", "none", 2),
        ("pull", "explicit", 1),
        ("pull", "all", 2),
    ],
)
def test_every_jetstream_consumer_kind_and_ack_policy(
    nats_broker: RunningBroker, kind: str, ack: str, consumers: int
) -> None:
    consumer = {"kind": kind, "ack": ack, "batch": 100}
    config = nats_config(consumer=consumer)
    result = run_trial(make_request(nats_broker, config, messages=2000, consumers=consumers))
    exact(result, 2000)
    m = result.metrics
    if ack == "none":
        assert m.redelivered is None and m.ack_pending_peak is None
    else:
        assert m.redelivered == 0 and m.ack_pending_peak is not None and m.ack_pending_peak >= 1
    assert m.consumers_ready_s is not None and m.consumers_ready_s > 0


def test_acks_after_the_handler_are_bounded_by_max_ack_pending(nats_broker: RunningBroker) -> None:
    # 64 handlers at 20 ms each, but only 16 deliveries may wait for their ack at once.
    consumer = {"kind": "pull", "ack": "explicit", "max_ack_pending": 16, "batch": 16}
    request = make_request(
        nats_broker,
        nats_config(consumer=consumer, workers=64),
        messages=400,
        processing_time="20ms",
    )
    result = run_trial(request)
    exact(result, 400)
    assert result.metrics.ack_pending_peak == 16


def test_redeliveries_are_counted_apart_from_duplicates(nats_broker: RunningBroker) -> None:
    # Each handler takes 600 ms, the server waits 300 ms for an ack: it delivers again.
    consumer = {"kind": "pull", "ack": "explicit", "ack_wait": "300ms", "batch": 50}
    request = make_request(
        nats_broker,
        nats_config(consumer=consumer, workers=100),
        messages=100,
        processing_time="600ms",
        drain_timeout="20s",
    )
    result = run_trial(request)
    exact(result, 100)
    assert result.metrics.redelivered is not None and result.metrics.redelivered > 0
    assert result.metrics.duplicated == 0


@pytest.mark.parametrize("commit", ["auto", "sync", "async"])
def test_kafka_consumer_group_with_commits(kafka_broker: RunningBroker, commit: str) -> None:
    config = kafka_config(topic={"partitions": 6}, consumer_mode="group", commit=commit)
    result = run_trial(make_request(kafka_broker, config, messages=4000, consumers=3))
    exact(result, 4000)
    m = result.metrics
    assert m.consumers_ready_s is not None and m.consumers_ready_s > 0
    assert m.rebalances == 0
    if commit == "auto":
        assert m.commit_latency_ms.count == 0
    else:
        assert m.commit_latency_ms.count > 0 and (m.commit_latency_ms.p50 or 0) > 0


def test_kafka_commit_every_n_messages(kafka_broker: RunningBroker) -> None:
    config = kafka_config(
        topic={"partitions": 2}, consumer_mode="group", commit="sync", commit_every=1000
    )
    result = run_trial(make_request(kafka_broker, config, messages=5000))
    exact(result, 5000)
    # A commit at most every 1,000 messages (batches can be larger than the rest to 1,000).
    assert 1 <= result.metrics.commit_latency_ms.count <= 5


@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_topics_keys_and_payloads_keep_the_books_exact(
    broker_type: str, request: pytest.FixtureRequest
) -> None:
    broker = request.getfixturevalue(f"{broker_type}_broker")
    config = nats_config() if broker_type == "nats" else kafka_config(topic={"partitions": 3})
    workload: dict[str, Any] = {
        "messages": 3000,
        "topics": 3,
        "producers": 2,
        "keys": "random",
        "payload": {"compressibility": 0.5},
    }
    result = run_trial(make_request(broker, config, **workload))
    exact(result, 3000)
    assert [f.sent for f in result.subscriptions] == [1000, 1000, 1000]
    assert [f.topic for f in result.subscriptions] == [0, 1, 2]


@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_fan_out_with_a_starved_subscription(
    broker_type: str, request: pytest.FixtureRequest
) -> None:
    broker = request.getfixturevalue(f"{broker_type}_broker")
    config = nats_config() if broker_type == "nats" else kafka_config(consumer_mode="group")
    # Subscription 2 of 3 discards every 10th message; the others receive everything.
    self_test = SelfTest(drop_every=10, subscription=2)
    result = run_trial(
        make_request(broker, config, self_test=self_test, messages=2000, subscriptions=3)
    )
    m = result.metrics
    assert result.status == "ok", result.error
    lost = {f.subscription: f.lost for f in result.subscriptions}
    assert lost == {0: 0, 1: 0, 2: 200}
    assert (m.sent, m.received, m.lost, m.duplicated) == (2000, 3 * 2000 - 200, 200, 0)
    assert m.success_rate == 90.0
