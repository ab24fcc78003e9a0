"""Isolated trials on real embedded brokers: exact accounting, faults caught, failures reported.

The self-test faults (runner.execution.measure.self_test) are the harness's own hooks: each has
an exact, predictable effect, so these tests prove the accounting counts what really happened.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats
import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from hdrh.histogram import HdrHistogram
from nats.js.errors import NotFoundError

from runner.execution.brokers import RunningBroker
from runner.execution.brokers.access import PLAIN
from runner.execution.brokers.base import free_ports
from runner.execution.drivers.kafka_consumers import low_watermark
from runner.execution.drivers.nats import PUBLISHER_ENV
from runner.execution.measure.latency import (
    HIGHEST_US,
    LOWEST_US,
    SIGNIFICANT_DIGITS,
    LatencyRecorder,
)
from runner.execution.measure.self_test import SelfTest
from runner.execution.trial.child import run_trial_here
from runner.execution.trial.parent import run_trial
from runner.execution.trial.request import TrialRequest, trial_timeout
from schemas.resolve import TrialSettings
from schemas.results import TrialResult
from schemas.spec import KafkaBroker, NatsBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MESSAGES = 2000


def nats_config(**settings: Any) -> NatsBroker:
    return NatsBroker.model_validate({"type": "nats", "workers": 256, **settings})


def kafka_config(**settings: Any) -> KafkaBroker:
    return KafkaBroker.model_validate(
        {"type": "kafka", "workers": 256, "producer": {"acks": "all", "linger.ms": 5}, **settings}
    )


def make_request(
    broker: RunningBroker | None,
    config: NatsBroker | KafkaBroker,
    *,
    address: str | None = None,
    self_test: SelfTest | None = None,
    **workload: Any,
) -> TrialRequest:
    settings = {
        "messages": MESSAGES,
        "message_size": "1KiB",
        "processing_time": "0s",
        "settle_time": "200ms",
        "drain_timeout": "10s",
        **workload,
    }
    return TrialRequest(
        index=7,
        broker=config.type,
        variant="v",
        scenario="s",
        repetition=2,
        warmup=False,
        address=address or (broker.address if broker else ""),
        broker_pids=tuple(broker.pids) if broker else (),
        broker_config=config,
        workload=TrialSettings.model_validate(settings),
        topic=f"exprun-test-{uuid.uuid4().hex[:12]}",
        self_test=self_test or SelfTest(),
        access=broker.access if broker else PLAIN,
    )


def assert_exact(result: TrialResult, messages: int = MESSAGES) -> None:
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.received) == (messages, messages, messages)
    assert (m.lost, m.duplicated, m.publish_errors) == (0, 0, {})
    assert m.success_rate == 100.0
    assert m.latency_ms.count == messages and m.latency_ms.p50 and m.latency_ms.p50 > 0
    assert m.publish_latency_ms.count == messages and (m.publish_latency_ms.max or 0) > 0
    assert m.throughput and m.publish_throughput and m.throughput > 0


def nats_stream_exists(address: str, name: str) -> bool:
    async def check() -> bool:
        nc = await nats.connect(address)
        try:
            await nc.jetstream().stream_info(name)
            return True
        except NotFoundError:
            return False
        finally:
            await nc.close()

    return asyncio.run(check())


def kafka_topic_exists(address: str, name: str) -> bool:
    admin = AdminClient({"bootstrap.servers": address})
    return name in admin.list_topics(timeout=10).topics


def test_nats_trial_is_exact_and_cleans_up(nats_broker: RunningBroker) -> None:
    request = make_request(nats_broker, nats_config())
    result = run_trial(request)
    assert_exact(result)
    m = result.metrics
    assert (result.index, result.broker, result.broker_type) == (7, "nats", "nats")
    assert (result.variant, result.scenario, result.repetition) == ("v", "s", 2)
    assert result.warmup is False
    assert result.config["workload"]["messages"] == MESSAGES
    assert result.config["broker"]["stream"]["discard"] == "old"
    assert result.started_at.endswith("+00:00")
    # nats-py runs on the event loop: the trial process has exactly one thread throughout.
    assert (m.threads_before, m.threads_after, m.leaked_threads, m.leaked_tasks) == (1, 1, 0, 0)
    assert m.tasks_peak is not None and m.tasks_peak >= 256  # the handler pool's workers
    assert m.broker_rss_mb and m.broker_rss_mb > 0 and m.broker_cpu_percent is not None
    assert m.rss_before_mb and m.rss_peak_mb and m.rss_peak_mb >= m.rss_before_mb
    assert m.duration_s and m.trial_duration_s and m.trial_duration_s > m.duration_s
    assert not nats_stream_exists(nats_broker.address, request.topic)


def test_kafka_trial_is_exact_and_cleans_up(kafka_broker: RunningBroker) -> None:
    request = make_request(kafka_broker, kafka_config(topic={"partitions": 2}))
    result = run_trial(request)
    assert_exact(result)
    m = result.metrics
    assert result.broker_type == "kafka"
    # librdkafka's threads count while the clients live, and are joined when they close.
    assert m.threads_peak is not None and m.threads_before is not None
    assert m.threads_peak > m.threads_before
    assert m.leaked_threads == 0
    assert not kafka_topic_exists(kafka_broker.address, request.topic)


def test_kafka_start_offset_waits_for_a_partition_still_being_created(
    kafka_broker: RunningBroker,
) -> None:
    """Asked before the topic's leader serves it, the lookup retries instead of failing."""
    topic = f"exprun-test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.address})
    consumer = Consumer({"bootstrap.servers": kafka_broker.address, "group.id": topic})
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])  # not awaited: the race is the point
        deadline = time.monotonic() + 15
        assert low_watermark(consumer, TopicPartition(topic, 0), deadline) == 0
    finally:
        consumer.close()
        admin.delete_topics([topic])[topic].result(timeout=15)


def test_worker_pool_size_matters(nats_broker: RunningBroker) -> None:
    """5 ms of work per message: 256 handlers must beat 8 by far (ideal ratio 32)."""
    small, large = (
        run_trial(make_request(nats_broker, nats_config(workers=w), processing_time="5ms"))
        for w in (8, 256)
    )
    assert small.status == large.status == "ok"
    assert small.metrics.received == large.metrics.received == MESSAGES
    assert small.metrics.throughput and large.metrics.throughput
    assert large.metrics.throughput > 3 * small.metrics.throughput


@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_dropped_messages_count_as_lost(broker_type: str, request: pytest.FixtureRequest) -> None:
    broker: RunningBroker = request.getfixturevalue(f"{broker_type}_broker")
    config = nats_config() if broker_type == "nats" else kafka_config()
    result = run_trial(make_request(broker, config, self_test=SelfTest(drop_every=10)))
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.received, m.lost, m.duplicated) == (2000, 2000, 1800, 200, 0)
    assert m.success_rate == 90.0
    assert m.latency_ms.count == 1800


@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_duplicated_messages_are_counted(broker_type: str, request: pytest.FixtureRequest) -> None:
    broker: RunningBroker = request.getfixturevalue(f"{broker_type}_broker")
    config = nats_config() if broker_type == "nats" else kafka_config()
    result = run_trial(make_request(broker, config, self_test=SelfTest(duplicate_every=10)))
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.received, m.lost, m.duplicated) == (2000, 2000, 2000, 0, 200)
    assert m.success_rate == 100.0


def test_jetstream_max_msgs_discard_new_reports_publish_errors(nats_broker: RunningBroker) -> None:
    """A fresh limits stream with discard new stores exactly max_msgs and refuses the rest."""
    config = nats_config(workers=8, stream={"max_msgs": 500, "discard": "new"})
    result = run_trial(make_request(nats_broker, config, processing_time="1ms"))
    m = result.metrics
    assert result.status == "ok", result.error
    assert m.sent == MESSAGES
    assert m.acked == 500
    assert m.publish_errors == {"maximum messages exceeded": 1500}
    assert m.sent == m.acked + sum(m.publish_errors.values())
    assert (m.received, m.lost) == (500, 0)
    assert m.success_rate == 25.0
    # A refusal for good is not retried: each counts as failed, and none arrived.
    assert (m.publish_failed, m.publish_unknown, m.publish_retries) == (1500, 0, 0)
    assert m.failed_delivered == 0


def test_leaked_thread_is_a_leak(nats_broker: RunningBroker) -> None:
    result = run_trial(make_request(nats_broker, nats_config(), self_test=SelfTest(leak_threads=1)))
    assert result.status == "ok", result.error
    assert result.metrics.leaked_threads == 1
    assert result.metrics.lingering_threads == 0


def test_lingering_thread_is_not_a_leak(nats_broker: RunningBroker) -> None:
    self_test = SelfTest(linger_threads_s=0.2)
    result = run_trial(
        make_request(nats_broker, nats_config(), self_test=self_test, settle_time="1s")
    )
    m = result.metrics
    assert result.status == "ok", result.error
    assert m.leaked_threads == 0
    assert m.lingering_threads is not None and m.lingering_threads >= 1
    assert m.threads_after_immediate is not None and m.threads_after is not None
    assert m.threads_after_immediate > m.threads_after


@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_dead_address_fails_fast(broker_type: str) -> None:
    (port,) = free_ports(1)
    if broker_type == "nats":
        config: NatsBroker | KafkaBroker = nats_config()
        address = f"nats://127.0.0.1:{port}"
    else:
        config, address = kafka_config(), f"127.0.0.1:{port}"
    request = make_request(None, config, address=address)
    started = time.monotonic()
    result = run_trial(request)
    elapsed = time.monotonic() - started
    assert result.status == "failed"
    assert result.error and "cannot" in result.error and str(port) in result.error
    assert "\n" not in result.error
    assert elapsed < min(10.0, trial_timeout(request))
    assert result.config["workload"]["messages"] == MESSAGES


def test_gone_broker_process_fails_without_running(nats_broker: RunningBroker) -> None:
    gone = psutil.Popen(["true"])
    gone.wait()
    request = make_request(nats_broker, nats_config()).model_copy(
        update={"broker_pids": (gone.pid,)}
    )
    result = run_trial(request)
    assert result.status == "failed"
    assert result.error and "gone" in result.error


def test_overrun_trial_is_stopped_with_partial_metrics(nats_broker: RunningBroker) -> None:
    """Past its timeout the trial process reports what it measured, then is gone."""
    request = make_request(nats_broker, nats_config(), settle_time="30s")
    started = time.monotonic()
    result = run_trial(request, timeout=2.0)
    assert time.monotonic() - started < 10.0
    assert result.status == "failed"
    assert result.error and "timed out after 2s" in result.error and "settling" in result.error
    assert result.metrics.received == MESSAGES  # the measured phase was over
    assert no_trial_processes()
    assert not nats_stream_exists(nats_broker.address, request.topic)


def no_trial_processes() -> bool:
    """No trial process is left: the forkserver (a child of ours) has no children."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        me = psutil.Process()
        brokers = {p.pid for p in me.children()}
        trials = [
            p
            for p in me.children(recursive=True)
            if p.pid not in brokers and p.status() != psutil.STATUS_ZOMBIE
        ]
        if not trials:
            return True
        time.sleep(0.05)
    return False


def test_latency_recorder_equals_an_hdr_histogram_of_every_value() -> None:
    """Counting per bucket (cheap on the event loop) builds exactly hdrh's histogram."""
    rng = random.Random(7)
    values = [int(rng.lognormvariate(13, 3)) for _ in range(20_000)]
    values += [0, 999, 2_047_999, 2_048_000, 2_049_000, 10**16]  # clamps and bucket edges
    recorder = LatencyRecorder()
    direct = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for value in values:
        recorder.record_ns(value)
        direct.record_value(min(max(value // 1000, LOWEST_US), HIGHEST_US))
    built = recorder.histogram()
    for percentile in (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0):
        assert built.get_value_at_percentile(percentile) == direct.get_value_at_percentile(
            percentile
        )
    assert built.get_total_count() == direct.get_total_count() == len(values)
    assert (built.get_min_value(), built.get_max_value()) == (
        direct.get_min_value(),
        direct.get_max_value(),
    )
    assert built.get_mean_value() == direct.get_mean_value()


@pytest.mark.parametrize("publisher", ["process", "loop"])
def test_nats_publisher_in_either_place_is_exact_and_reaped(
    publisher: str, nats_broker: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forked publisher process (default) and producers on the trial's own loop account
    alike, discard-new refusals included; the publisher's threads count in the trial's peak;
    no publisher process outlives the trial."""
    monkeypatch.setenv(PUBLISHER_ENV, publisher)
    children = {p.pid for p in psutil.Process().children()}
    exact = asyncio.run(run_trial_here(make_request(nats_broker, nats_config()), spawn_s=0.0))
    assert_exact(exact)
    m = exact.metrics
    assert m.threads_before is not None and m.threads_peak is not None
    if publisher == "process":
        # The publisher's two threads (its main one and its loop's) are the trial's too.
        assert m.threads_peak >= m.threads_before + 2
    config = nats_config(stream={"max_msgs": 500, "discard": "new"})
    refused = asyncio.run(run_trial_here(make_request(nats_broker, config), spawn_s=0.0))
    assert (refused.metrics.acked, refused.metrics.received) == (500, 500)
    assert refused.metrics.publish_errors == {"maximum messages exceeded": 1500}
    assert {p.pid for p in psutil.Process().children()} <= children  # reaped, no zombie


def test_trial_stopped_while_publishing_takes_its_publisher_along(
    nats_broker: RunningBroker,
) -> None:
    """Past its timeout mid-publish, the trial kills its forked publisher and cleans up."""
    request = make_request(nats_broker, nats_config(), rate=200)  # 2000 messages: 10 s
    result = run_trial(request, timeout=2.0)
    assert result.status == "failed"
    assert result.error and "publishing" in result.error
    assert no_trial_processes()
    assert not nats_stream_exists(nats_broker.address, request.topic)


LONG_RATE = 2_000  # msg/s
LONG_SECONDS = 120
HALF_WAY = LONG_RATE * LONG_SECONDS // 2  # the sequence number sent a minute in


@pytest.mark.timeout(300)
def test_a_two_minute_trial_counts_the_one_loss_and_the_one_duplicate_half_way(
    nats_broker: RunningBroker, kafka_broker: RunningBroker
) -> None:
    """Paced for two minutes, the books compacted every second: a message dropped and the
    next one duplicated a minute in are still counted, one each, by sequence number. The two
    brokers' trials run side by side (each is light), so the suite waits two minutes, not four."""
    # Every n-th message, counted from 1: message HALF_WAY is dropped and the next one is
    # accounted twice; the next multiples lie beyond the trial.
    planted = SelfTest(drop_every=HALF_WAY + 1, duplicate_every=HALF_WAY + 2)
    trials = [
        make_request(
            broker,
            config,
            self_test=planted,
            messages=None,
            duration=f"{LONG_SECONDS}s",
            rate=LONG_RATE,
            message_size=256,
            drain_timeout="30s",
        )
        for broker, config in ((nats_broker, nats_config()), (kafka_broker, kafka_config()))
    ]
    with ThreadPoolExecutor(max_workers=len(trials)) as pool:
        results = list(pool.map(run_trial, trials))
    for result in results:
        m = result.metrics
        assert result.status == "ok", f"{result.broker}: {result.error}"
        assert m.sent == LONG_RATE * LONG_SECONDS, (result.broker, m.sent)
        counts = (m.acked, m.received, m.lost, m.duplicated)
        assert counts == (m.sent, m.sent - 1, 1, 1), (result.broker, counts)
        assert m.latency_ms.count == m.sent - 1 and m.publish_errors == {}, result.broker
        assert result.series is not None and len(result.series.start_s) >= LONG_SECONDS
