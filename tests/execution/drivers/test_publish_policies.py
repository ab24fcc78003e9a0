"""What each driver's producers do on a failed publish, from their settings (pure)."""

from __future__ import annotations

from runner.execution.drivers.kafka import producer_policy
from runner.execution.drivers.nats import NatsDriver
from schemas.spec import NatsBroker


def nats_policy(**publish: object) -> NatsDriver:
    config = NatsBroker.model_validate({"type": "nats", "publish": publish})
    return NatsDriver("nats://127.0.0.1:4222", config, "exprun-abc123-7", 10.0)


def test_librdkafka_defaults_retry_for_five_minutes_without_idempotence() -> None:
    policy = producer_policy({})
    assert policy.retried_by == "librdkafka" and policy.delivery_timeout_s == 300.0
    assert not policy.idempotent
    assert policy.settings == {
        "acks": "all",
        "enable.idempotence": "false",
        "message.timeout.ms": "300000",
        "retries": "2147483647",
    }


def test_kafka_aliases_and_idempotence_as_librdkafka_reads_them() -> None:
    policy = producer_policy({"enable.idempotence": True, "acks": 1, "delivery.timeout.ms": 30000})
    # Idempotence makes librdkafka use acks=all whatever else is written.
    assert policy.idempotent and policy.settings["acks"] == "all"
    assert policy.delivery_timeout_s == 30.0
    assert producer_policy({"retries": 0}).retried_by is None
    assert producer_policy({"message.timeout.ms": 0}).delivery_timeout_s is None  # no limit
    assert producer_policy({"request.required.acks": "1"}).settings["acks"] == "1"


def test_nats_default_retries_by_message_id_within_the_duplicate_window() -> None:
    policy = nats_policy().publish_policy()
    assert policy.retried_by == "exprun" and policy.idempotent
    assert policy.delivery_timeout_s == 30.0
    assert policy.settings["duplicate_window"] == "30s"
    one_try = nats_policy(delivery_timeout="0s").publish_policy()
    assert one_try.retried_by is None and not one_try.idempotent
    assert "duplicate_window" not in one_try.settings and "retry_wait" not in one_try.settings


def test_policies_differ_in_kind_only_by_retries_and_idempotence() -> None:
    nats, kafka = nats_policy().publish_policy(), producer_policy({})
    assert nats.unlike(kafka) == [
        "one retries idempotently, the other may store a retried message twice"
    ]
    assert nats.unlike(producer_policy({"enable.idempotence": True})) == []
    assert nats_policy(delivery_timeout="0s").publish_policy().unlike(kafka) == [
        "one retries a failed publish, the other gives up after one try"
    ]
    assert nats.describe().startswith("exprun retries by message id until 30s after the first try")
    assert producer_policy({"retries": 0}).describe().startswith("one try (acks all")
