"""Core NATS trials (`jetstream: false`) on real embedded servers: exact books at most once.

Nothing is stored, so the books are the same sequence numbers as JetStream's, with a publish
acked once the server has read it; what a subscriber misses is lost, counted, and explained.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_trials import assert_exact, make_request, nats_config, nats_stream_exists

from runner.execution.brokers import RunningBroker, start_nats
from runner.execution.measure.self_test import SelfTest
from runner.execution.trial.parent import run_trial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def choking_nats() -> Iterator[RunningBroker]:
    """A server that cuts off a subscriber with more than 64 KiB waiting for it."""
    broker = start_nats(overrides={"max_pending": 65536, "max_payload": 8192})
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def nats_cluster() -> Iterator[RunningBroker]:
    broker = start_nats(nodes=3)
    try:
        yield broker
    finally:
        broker.stop()


def test_core_nats_trial_is_exact_and_stores_nothing(nats_broker: RunningBroker) -> None:
    request = make_request(nats_broker, nats_config(jetstream=False))
    result = run_trial(request)
    assert_exact(result)
    policy = result.publish_policy
    assert policy is not None and policy.at_most_once and not policy.retrying
    assert result.metrics.publish_retries is None
    assert not nats_stream_exists(nats_broker.address, request.topic)


def test_core_nats_planted_loss_and_duplicate_are_found(nats_broker: RunningBroker) -> None:
    config = nats_config(jetstream=False)
    dropped = run_trial(make_request(nats_broker, config, self_test=SelfTest(drop_every=10)))
    m = dropped.metrics
    assert dropped.status == "ok", dropped.error
    assert (m.sent, m.acked, m.received, m.lost, m.duplicated) == (2000, 2000, 1800, 200, 0)
    doubled = run_trial(make_request(nats_broker, config, self_test=SelfTest(duplicate_every=10)))
    m = doubled.metrics
    assert doubled.status == "ok", doubled.error
    assert (m.sent, m.acked, m.received, m.lost, m.duplicated) == (2000, 2000, 2000, 0, 200)


def test_core_nats_fans_out_to_every_subscription_over_processes(
    nats_broker: RunningBroker,
) -> None:
    """Two topics, two subscriptions each shared by two consumers, clients in two processes:
    each subscription gets every message of its topic once (queue groups, probes first)."""
    request = make_request(
        nats_broker,
        nats_config(jetstream=False),
        topics=2,
        producers=2,
        subscriptions=2,
        consumers=2,
        rate="4000/s",
    ).model_copy(update={"processes": 2})
    result = run_trial(request)
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.lost, m.duplicated) == (2000, 2000, 0, 0)
    assert m.received == 2 * 2000  # two subscriptions of every topic
    assert [(f.received, f.lost) for f in result.subscriptions] == [(1000, 0)] * 4


def test_core_nats_overload_counts_the_loss(choking_nats: RunningBroker) -> None:
    """The server cuts off a subscriber that falls behind (a slow consumer): the trial goes
    on, reconnected, and every message it missed is counted lost, none twice."""
    request = make_request(
        choking_nats,
        nats_config(jetstream=False, workers=1),
        messages=100_000,
        message_size="1KiB",
        producers=2,
    )
    result = run_trial(request)
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.duplicated) == (100_000, 100_000, 0)
    assert m.lost > 0 and m.received + m.lost == m.sent


def test_core_nats_on_a_cluster_is_exact_with_clients_on_every_node(
    nats_cluster: RunningBroker,
) -> None:
    """Clients spread over three nodes (nats-py picks one at random): messages cross the
    routes to every subscription's queue group, each delivered once."""
    for _ in range(3):
        request = make_request(
            nats_cluster,
            nats_config(jetstream=False),
            producers=3,
            subscriptions=2,
            consumers=2,
        )
        result = run_trial(request)
        m = result.metrics
        assert result.status == "ok", result.error
        assert (m.sent, m.acked, m.received, m.lost, m.duplicated) == (2000, 2000, 4000, 0, 0)
