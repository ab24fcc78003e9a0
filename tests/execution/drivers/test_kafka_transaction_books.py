"""A transactional Kafka producer's books (pure: a stand-in client answers commit and abort).

A message is acked when its transaction commits and failed when it aborts; a failed message
that reaches a consumer all the same is reported, never absorbed.
"""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from runner.execution.drivers.base import PublishPlan
from runner.execution.drivers.kafka import ABORTED, ProducerSlot
from runner.execution.measure.accounting import Accounting
from runner.execution.measure.messages import MessageCodec, now_ns
from runner.execution.measure.self_test import SelfTest
from runner.execution.measure.series import Schedule
from schemas.results import Metrics
from schemas.spec import KafkaTransactions

ABORTABLE = KafkaError(KafkaError.INVALID_TXN_STATE, "planted", txn_requires_abort=True)
RETRIABLE = KafkaError(KafkaError._TIMED_OUT, "planted", retriable=True)
FATAL = KafkaError(KafkaError._FENCED, "planted", fatal=True)


class StandIn:
    """Takes every message; commit number n answers answers[n] (an error) once, if given."""

    def __init__(self, answers: dict[int, KafkaError]) -> None:
        self.answers = answers
        self.payloads: list[bytes] = []
        self.commits = self.aborts = self.begins = 0

    def produce(self, topic: str, value: bytes, *args: Any) -> None:
        self.payloads.append(value)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def begin_transaction(self) -> None:
        self.begins += 1

    def commit_transaction(self, timeout: float = -1) -> None:
        self.commits += 1
        error = self.answers.pop(self.commits, None)
        if error is not None:
            raise KafkaException(error)

    def abort_transaction(self, timeout: float = -1) -> None:
        self.aborts += 1

    def __len__(self) -> int:
        return 0


def publish(answers: dict[int, KafkaError], messages: int = 1000) -> tuple[ProducerSlot, Any]:
    accounting = Accounting(messages, SelfTest())
    ledger = accounting.ledger()
    slot = ProducerSlot(0, "t", 1, KafkaTransactions(per=100))
    client = StandIn(answers)
    slot.producer = client  # type: ignore[assignment]
    start = now_ns()
    plan = PublishPlan(messages, 1, None, MessageCodec(64), Schedule(start, start))
    slot.run_transactions(plan, ledger, 5.0, threading.Event())
    return slot, (accounting, ledger, client)


def test_an_aborted_transaction_fails_its_messages_and_the_next_one_goes_on() -> None:
    slot, (_, ledger, client) = publish({3: ABORTABLE, 5: RETRIABLE})
    # Commit 3 needed an abort; commit 5 was tried again and went through.
    assert (client.begins, client.aborts, slot.aborted, slot.failure) == (10, 1, 1, None)
    assert (ledger.sent, ledger.acked, ledger.failed, ledger.unknown) == (1000, 900, 100, 0)
    assert dict(ledger.errors) == {ABORTED: 100}
    assert sorted(ledger.failed_seqs) == list(range(200, 300))
    assert slot.commit_latency.counts and sum(slot.commit_latency.counts.values()) == 9
    assert ledger.latency.count == 900  # each acked message, as of its commit


def test_a_failed_message_that_is_delivered_all_the_same_is_reported() -> None:
    _, (accounting, _, client) = publish({3: ABORTABLE})
    subscription = accounting.subscriptions[0]
    for payload in client.payloads:  # as if read_uncommitted: the aborted ones arrive too
        subscription.on_delivery(payload, now_ns())
    accounting.publishing_done()
    metrics = Metrics()
    accounting.fill(metrics, last_handled_ns=None)
    assert (metrics.acked, metrics.received, metrics.lost, metrics.duplicated) == (900, 1000, 0, 0)
    assert (metrics.publish_failed, metrics.failed_delivered) == (100, 100)


def test_a_fatal_error_stops_the_producer_and_leaves_the_open_transaction_unknown() -> None:
    slot, (_, ledger, client) = publish({2: FATAL})
    assert slot.failure is not None and "cannot commit a Kafka transaction" in slot.failure
    assert client.commits == 2 and client.aborts == 0
    assert (ledger.sent, ledger.acked, ledger.failed, ledger.unknown) == (200, 100, 0, 100)
