"""Trials spread over several load-generator processes: placement, and exact merged books.

The integration tests run real trials on the embedded brokers with `processes` > 1; the books
must come out exactly as a single process keeps them, for messages sent by one process and
received by another too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psutil
import pytest
from test_trials import (
    MESSAGES,
    assert_exact,
    kafka_config,
    make_request,
    nats_config,
)

from runner.execution.brokers import RunningBroker
from runner.execution.drivers.placement import Placement
from runner.execution.measure.accounting import Accounting
from runner.execution.measure.messages import HEADER
from runner.execution.measure.self_test import SelfTest
from runner.execution.trial.child import run_trial_here
from runner.execution.trial.parent import run_trial
from runner.execution.trial.request import TrialRequest
from runner.execution.trial.shares import account_received, received_record


def spread(request: TrialRequest, processes: int) -> TrialRequest:
    return request.model_copy(update={"processes": processes})


# --- placement and merging (pure logic) ---------------------------------------------------


def test_one_producer_and_one_consumer_run_in_different_processes() -> None:
    first, second = Placement(0, 2), Placement(1, 2)
    assert first.producers(1) == [0] and second.producers(1) == []
    assert not first.runs_consumer(0, 0, 1, False) and second.runs_consumer(0, 0, 1, False)


def test_every_client_runs_in_exactly_one_process() -> None:
    processes, producers, subscriptions, count = 3, 5, 2, 4
    places = [Placement(n, processes) for n in range(processes)]
    assert sorted(p for place in places for p in place.producers(producers)) == list(range(5))
    for whole in (False, True):
        for s in range(subscriptions):
            for c in range(count):
                running = [place for place in places if place.runs_consumer(s, c, count, whole)]
                assert len(running) == 1
            # A consumer group stays on one process.
            if whole:
                owners = {
                    n
                    for n, place in enumerate(places)
                    for c in range(count)
                    if place.runs_consumer(s, c, count, whole)
                }
                assert len(owners) == 1


@pytest.mark.parametrize(("workers", "count"), [(256, 2), (7, 3), (1, 2), (5, 1)])
def test_handler_workers_are_split_not_multiplied(workers: int, count: int) -> None:
    places = [Placement(n, 3) for n in range(3)]
    here = [place.workers(workers, 0, count, False) for place in places]
    serving = [n for n in here if n]
    assert len(serving) == min(count, 3)
    assert sum(serving) == max(workers, len(serving))


def test_records_from_two_processes_merge_exactly() -> None:
    """A message received by both processes is a duplicate; one neither received is lost."""
    accounting = Accounting(10, SelfTest())
    accounting.acked_seqs.update(range(10))
    subscription = accounting.subscriptions[0]

    def records(seqs: list[int]) -> bytes:
        return b"".join(received_record(HEADER.pack(s, 1_000), 3_000_000, False) for s in seqs)

    account_received(subscription, records([0, 1, 2, 3, 4, 5]))
    account_received(subscription, records([5, 6, 7, 8]))
    assert (subscription.received, subscription.duplicated, subscription.lost) == (9, 1, 1)
    assert subscription.latency.counts and sum(subscription.latency.counts.values()) == 9


# --- real trials ----------------------------------------------------------------------------


def broker_and_config(broker_type: str, request: pytest.FixtureRequest, **config: Any) -> Any:
    broker: RunningBroker = request.getfixturevalue(f"{broker_type}_broker")
    make = nats_config if broker_type == "nats" else kafka_config
    return broker, make(**config)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_sent_by_one_process_and_received_by_another(
    broker_type: str, request: pytest.FixtureRequest
) -> None:
    broker, config = broker_and_config(broker_type, request)
    result = run_trial(spread(make_request(broker, config), 2))
    assert_exact(result)
    # The trial's process and both load generators: their threads are counted together, and
    # each load generator's own figures are kept.
    assert result.metrics.threads_peak is not None and result.metrics.threads_peak >= 3
    figures = sorted(result.load_generators, key=lambda f: f.process)
    assert [f.process for f in figures] == [0, 1]
    for own in figures:
        assert own.threads_peak and own.rss_peak_mb and own.cpu_percent is not None
        assert own.leaked_threads == 0


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_producers_and_subscriptions_over_three_processes(
    broker_type: str, request: pytest.FixtureRequest
) -> None:
    extra = {"topic": {"partitions": 4}} if broker_type == "kafka" else {}
    broker, config = broker_and_config(broker_type, request, **extra)
    trial = make_request(
        broker, config, messages=6000, producers=3, subscriptions=2, consumers=2, topics=1
    )
    result = run_trial(spread(trial, 3))
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.received, m.lost, m.duplicated) == (6000, 6000, 12000, 0, 0)
    assert [s.received for s in result.subscriptions] == [6000, 6000]


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_self_test_faults_are_counted_across_processes(
    broker_type: str, request: pytest.FixtureRequest
) -> None:
    broker, config = broker_and_config(broker_type, request)
    faults = SelfTest(drop_every=10, duplicate_every=25)
    result = run_trial(spread(make_request(broker, config, self_test=faults), 2))
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.received, m.lost) == (MESSAGES, MESSAGES, 1800, 200)
    assert m.duplicated == len([s for s in range(MESSAGES) if s % 25 == 0 and s % 10 != 0])


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_kafka_consumer_group_over_processes(kafka_broker: RunningBroker) -> None:
    config = kafka_config(topic={"partitions": 4}, consumer_mode="group", commit="sync")
    trial = make_request(kafka_broker, config, producers=2, consumers=2, subscriptions=2)
    result = run_trial(spread(trial, 2))
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.received, m.lost, m.duplicated) == (MESSAGES, 2 * MESSAGES, 0, 0)
    assert m.consumers_ready_s and m.commit_latency_ms and m.commit_latency_ms.count


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_backlog_and_duration_over_processes(nats_broker: RunningBroker) -> None:
    consumer = {"kind": "pull", "ack": "explicit"}
    trial = make_request(
        nats_broker,
        nats_config(consumer=consumer),
        messages=None,
        duration="3s",
        rate="2000/s",
        backlog=1000,
        consumers=2,
    )
    result = run_trial(spread(trial, 2))
    m = result.metrics
    assert result.status == "ok", result.error
    assert m.sent == m.acked == m.received == 6000 and m.lost == m.duplicated == 0
    assert m.backlog_build_s and m.drain_s is not None and m.achieved_rate


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_load_generator_killed_mid_trial_fails_the_trial(nats_broker: RunningBroker) -> None:
    trial = spread(make_request(nats_broker, nats_config(), messages=8000, rate="2000/s"), 2)
    me = psutil.Process()
    before = {child.pid for child in me.children()}
    killed: list[int] = []

    def kill_a_share() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not killed:
            shares = [c for c in me.children() if c.pid not in before]
            if len(shares) == 2:
                time.sleep(1.0)  # well into the measured phase
                shares[1].kill()
                killed.append(shares[1].pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_share)
    killer.start()
    started = time.monotonic()
    result = asyncio.run(run_trial_here(trial, 0.0))
    killer.join()
    assert killed, "the load-generator processes were never seen"
    assert result.status == "failed"
    assert result.error and "load-generator process" in result.error
    assert "ended unexpectedly" in result.error
    assert time.monotonic() - started < 60
    assert not [c for c in me.children() if c.pid not in before]
