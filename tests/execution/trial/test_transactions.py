"""Kafka transactions on a real embedded broker: a message counts once its transaction
committed, the books stay exact, and the self-test faults are still found."""

from __future__ import annotations

from typing import Any

import pytest
from test_trials import MESSAGES, assert_exact, kafka_config, make_request

from runner.execution.brokers import RunningBroker
from runner.execution.measure.self_test import SelfTest
from runner.execution.trial.parent import run_trial
from schemas.spec import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def transactional(**transactions: Any) -> KafkaBroker:
    return kafka_config(topic={"partitions": 2}, transactions=transactions)


def test_a_transactional_trial_is_exact_and_commits_every_per_messages(
    kafka_broker: RunningBroker,
) -> None:
    result = run_trial(make_request(kafka_broker, transactional(per=100), producers=2))
    assert_exact(result)
    m = result.metrics
    # 2 producers of 1,000 messages each, a commit every 100 of a producer's messages.
    assert m.transaction_commit_ms.count == MESSAGES // 100, m.transaction_commit_ms
    assert (m.transaction_commit_ms.p50 or 0) > 0
    assert m.transactions_aborted == 0
    assert result.config["broker"]["transactions"] == {"per": 100, "every": None}
    policy = result.publish_policy
    assert policy is not None and policy.idempotent and policy.settings["acks"] == "all"


def test_the_last_partial_transaction_is_committed_too(kafka_broker: RunningBroker) -> None:
    result = run_trial(make_request(kafka_broker, transactional(per=300)))
    assert_exact(result)
    # 2,000 messages: six full transactions of 300, and the last one of 200.
    assert result.metrics.transaction_commit_ms.count == 7


def test_time_based_commits_every_100ms(kafka_broker: RunningBroker) -> None:
    # 2,000 messages at 1,000/s: two seconds, about 20 commits of about 100 messages.
    result = run_trial(make_request(kafka_broker, transactional(every="100ms"), rate="1000/s"))
    assert_exact(result)
    m = result.metrics
    assert 15 <= m.transaction_commit_ms.count <= 25, m.transaction_commit_ms
    assert m.transactions_aborted == 0
    # Read committed: a message waits for its transaction's commit, up to 100 ms and more.
    assert (m.latency_ms.max or 0) >= 50, m.latency_ms


def test_without_transactions_there_are_no_transaction_figures(
    kafka_broker: RunningBroker,
) -> None:
    result = run_trial(make_request(kafka_broker, kafka_config()))
    assert_exact(result)
    assert result.metrics.transactions_aborted is None
    assert result.metrics.transaction_commit_ms.count == 0


@pytest.mark.parametrize(
    ("self_test", "expected"),
    [
        (SelfTest(drop_every=10), (2000, 2000, 1800, 200, 0)),
        (SelfTest(duplicate_every=10), (2000, 2000, 2000, 0, 200)),
    ],
    ids=["loss", "duplicate"],
)
def test_planted_loss_and_duplicates_are_found_in_transactions(
    kafka_broker: RunningBroker, self_test: SelfTest, expected: tuple[int, ...]
) -> None:
    request = make_request(kafka_broker, transactional(per=100), self_test=self_test)
    result = run_trial(request)
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.received, m.lost, m.duplicated) == expected
    assert m.transactions_aborted == 0 and m.failed_delivered == 0


def test_transaction_figures_of_producers_in_other_processes_are_merged(
    kafka_broker: RunningBroker,
) -> None:
    request = make_request(kafka_broker, transactional(per=100), producers=2)
    result = run_trial(request.model_copy(update={"processes": 2}))
    assert_exact(result)
    m = result.metrics
    assert m.transaction_commit_ms.count == MESSAGES // 100 and m.transactions_aborted == 0


def test_an_aborted_transaction_fails_its_messages_and_none_of_them_arrives(
    kafka_broker: RunningBroker,
) -> None:
    """Every 4th transaction of each producer is aborted on purpose (a self-test fault) on a
    real broker: its messages are failed, and read_committed consumers never get one."""
    request = make_request(
        kafka_broker, transactional(per=100), producers=2, self_test=SelfTest(abort_every=4)
    )
    result = run_trial(request)
    m = result.metrics
    assert result.status == "ok", result.error
    # 2 producers x 10 transactions of 100: the 4th and 8th of each aborted.
    assert m.transactions_aborted == 4 and m.transaction_commit_ms.count == 16
    assert (m.sent, m.acked, m.publish_failed, m.publish_unknown) == (2000, 1600, 400, 0)
    assert m.publish_errors == {"transaction aborted": 400}
    assert (m.received, m.lost, m.duplicated, m.failed_delivered) == (1600, 0, 0, 0)
