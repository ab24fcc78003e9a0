"""Request-reply trials (`pattern: request_reply`) on real embedded brokers: every request
answered exactly once, a reply never matched twice, a request left unanswered timed out once.

The self-test faults act on the responders: a dropped request is never answered (it times
out), a duplicated one is handled and answered twice (the second reply is caught).
"""

from __future__ import annotations

import pytest
from test_trials import kafka_config, make_request, nats_config

from runner.execution.brokers import RunningBroker
from runner.execution.measure.self_test import SelfTest
from runner.execution.trial.parent import run_trial
from schemas.results import TrialResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REQUESTS = 2000


def requests(broker: RunningBroker, self_test: SelfTest | None = None, **workload: object):  # type: ignore[no-untyped-def]
    config = nats_config()
    settings = {"pattern": "request_reply", "timeout": "500ms", **workload}
    return make_request(broker, config, self_test=self_test, **settings)


def kafka_requests(broker: RunningBroker, self_test: SelfTest | None = None, **workload: object):  # type: ignore[no-untyped-def]
    # Replies wait at most 2 ms to be batched: one produce request per reply would swamp
    # the broker (see experiments/request_reply.yaml).
    config = kafka_config(producer={"linger.ms": 2}, consumer={"fetch.wait.max.ms": 5})
    settings = {"pattern": "request_reply", "timeout": "2s", **workload}
    return make_request(broker, config, self_test=self_test, **settings)


def assert_answered(result: TrialResult, answered: int = REQUESTS) -> None:
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.timeouts, m.duplicate_replies) == (REQUESTS, answered, 0, 0)
    assert m.latency_ms == m.publish_latency_ms and m.latency_ms.count == answered
    assert m.throughput == m.publish_throughput and m.throughput


def test_nats_requests_are_each_answered_once(nats_broker: RunningBroker) -> None:
    result = run_trial(requests(nats_broker, producers=2, consumers=3, rate="4000/s"))
    assert_answered(result)
    m = result.metrics
    assert (m.received, m.lost, m.duplicated) == (REQUESTS, 0, 0)  # each handled once
    assert result.publish_policy is not None and not result.publish_policy.retrying


def test_nats_unanswered_requests_time_out_once(nats_broker: RunningBroker) -> None:
    result = run_trial(requests(nats_broker, SelfTest(drop_every=10)))
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.timeouts, m.duplicate_replies) == (REQUESTS, 1800, 200, 0)
    assert m.publish_errors == {"timeout": 200} and m.publish_unknown == 200


def test_nats_a_second_reply_is_caught(nats_broker: RunningBroker) -> None:
    result = run_trial(requests(nats_broker, SelfTest(duplicate_every=10)))
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.timeouts, m.duplicate_replies) == (REQUESTS, REQUESTS, 0, 200)
    assert m.duplicated == 200  # handled twice by the responders


def test_nats_requests_with_handler_work_over_processes(nats_broker: RunningBroker) -> None:
    """Responders in two load-generator processes, each request's work 1 ms: the round trip
    includes it, and every request is answered once."""
    request = requests(nats_broker, consumers=2, processing_time="1ms", rate="1000/s").model_copy(
        update={"processes": 2}
    )
    result = run_trial(request)
    assert_answered(result)
    assert (result.metrics.latency_ms.p50 or 0) >= 1.0


def test_kafka_requests_are_each_answered_once(kafka_broker: RunningBroker) -> None:
    result = run_trial(kafka_requests(kafka_broker, producers=2, consumers=1, rate="1000/s"))
    assert_answered(result)
    m = result.metrics
    assert (m.received, m.lost, m.duplicated) == (REQUESTS, 0, 0)


def test_kafka_unanswered_requests_time_out_and_second_replies_are_caught(
    kafka_broker: RunningBroker,
) -> None:
    dropped = run_trial(kafka_requests(kafka_broker, SelfTest(drop_every=10)))
    m = dropped.metrics
    assert dropped.status == "ok", dropped.error
    assert (m.sent, m.acked, m.timeouts, m.duplicate_replies) == (REQUESTS, 1800, 200, 0)
    doubled = run_trial(kafka_requests(kafka_broker, SelfTest(duplicate_every=10)))
    m = doubled.metrics
    assert doubled.status == "ok", doubled.error
    assert (m.sent, m.acked, m.timeouts, m.duplicate_replies) == (REQUESTS, REQUESTS, 0, 200)


def test_kafka_requesters_and_responders_in_different_processes(
    kafka_broker: RunningBroker,
) -> None:
    """Each process reads the reply partitions of its own requesters only."""
    request = kafka_requests(kafka_broker, producers=3, consumers=2, rate="1500/s").model_copy(
        update={"processes": 2}
    )
    assert_answered(run_trial(request))
