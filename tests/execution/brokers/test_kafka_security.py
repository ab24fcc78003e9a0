"""Embedded Kafka secured with TLS and / or SASL, against real KRaft JVMs over real sockets.

exprun makes the CA, the certificates and the login; clients reach the broker with nothing but
RunningBroker.access. Few starts (each costs seconds of a 2-core box): tests check several
things on one broker.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from runner.execution.brokers import BrokerStartError, RunningBroker, start_kafka
from runner.execution.brokers import kafka as kafka_module
from runner.execution.brokers.reported import reported_settings
from schemas.spec import KafkaSecurity

pytestmark = pytest.mark.integration

MESSAGES = [f"message-{i}".encode() for i in range(100)]
Conf = dict[str, str | int | float | bool]


def _conf(broker: RunningBroker, **extra: str | int | float | bool) -> Conf:
    return {"bootstrap.servers": broker.address, "log_level": 0, **broker.access.kafka, **extra}


def _create_topic(broker: RunningBroker, topic: str, replicas: int = 1) -> None:
    admin = AdminClient(_conf(broker))  # kept: the futures fail once their client is collected
    new = NewTopic(topic, 1, replicas, config={"min.insync.replicas": str(min(2, replicas))})
    admin.create_topics([new])[topic].result(timeout=30)


def _round_trip(broker: RunningBroker, topic: str, replicas: int = 1) -> None:
    """Every message of MESSAGES produced with acks=all comes back, in order."""
    _create_topic(broker, topic, replicas)
    producer = Producer(_conf(broker, acks="all"))
    failures: list[str] = []

    def on_delivery(error: object, _msg: object) -> None:
        if error is not None:
            failures.append(str(error))

    for value in MESSAGES:
        producer.produce(topic, value, on_delivery=on_delivery)
    assert producer.flush(60) == 0 and failures == []

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({**_conf(broker), "group.id": group, "enable.auto.commit": False})
    got: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while len(got) < len(MESSAGES) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(bytes(msg.value() or b""))
    finally:
        consumer.close()
    assert got == MESSAGES


def _client_errors(conf: Conf, wait: float = 20.0) -> list[KafkaError]:
    """What librdkafka's error_cb reports for an AdminClient with conf asking for metadata."""
    errors: list[KafkaError] = []
    with_errors: dict[str, Any] = {**conf, "error_cb": errors.append}
    admin = AdminClient(with_errors)
    deadline = time.monotonic() + wait
    while not errors and time.monotonic() < deadline:
        with contextlib.suppress(KafkaException):  # no metadata: error_cb says why
            admin.list_topics(timeout=1.0)
        admin.poll(0.1)
    return errors


def _password_kept_secret(broker: RunningBroker) -> None:
    """The password is in the server.properties files (their JAAS config) and nowhere else."""
    password = broker.access.kafka["sasl.password"]
    assert len(password) >= 24
    assert broker.workdir is not None
    holders = [
        path.relative_to(broker.workdir)
        for path in sorted(broker.workdir.rglob("*"))
        if path.is_file() and password.encode() in path.read_bytes()
    ]
    configs = [node.workdir / "server.properties" for node in broker.nodes]
    assert holders == [path.relative_to(broker.workdir) for path in configs]
    logs = [*broker.log_files, *(node.workdir / "format.log" for node in broker.nodes)]
    assert all(log.is_file() for log in logs)  # looked at above, not missing
    assert password not in broker.log_tail(500)


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_sasl_ssl_scram_single_node(tmp_path: Path) -> None:
    security = KafkaSecurity(tls=True, sasl="scram-sha-512")
    with start_kafka(security=security, workdir_parent=tmp_path) as broker:
        print(f"SASL_SSL Kafka ready in {broker.start_seconds:.2f} s")
        access = broker.access.kafka
        assert broker.workdir is not None
        assert access == {
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(broker.workdir / "tls" / "ca.pem"),
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "exprun",
            "sasl.password": access["sasl.password"],
        }
        _round_trip(broker, "secured")
        # exprun's own admin clients: the leader lookup and the reported server settings.
        assert broker.leader("secured", 10.0) is broker.nodes[0]
        assert reported_settings(broker, {"num.io.threads": 8}) == {"num.io.threads": "8"}

        wrong = _client_errors(_conf(broker, **{"sasl.password": "not-the-password"}))
        assert wrong and wrong[0].code() == KafkaError._AUTHENTICATION, wrong
        assert "SCRAM-SHA-512" in wrong[0].str()

        plaintext: Conf = {"bootstrap.servers": broker.address, "log_level": 0}
        with pytest.raises(KafkaException):
            AdminClient(plaintext).list_topics(timeout=3.0)

        # The node's certificate is checked: with the system's CAs instead of exprun's, no TLS.
        untrusted = {k: v for k, v in _conf(broker).items() if k != "ssl.ca.location"}
        errors = _client_errors(untrusted)
        assert errors and errors[0].code() == KafkaError._SSL, errors

        _password_kept_secret(broker)


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_ssl_only_keeps_its_certificates_across_a_restart_on_new_ports(tmp_path: Path) -> None:
    with start_kafka(security=KafkaSecurity(tls=True), workdir_parent=tmp_path) as broker:
        access = broker.access
        assert access.kafka == {
            "security.protocol": "SSL",
            "ssl.ca.location": access.kafka["ssl.ca.location"],
        }
        ca = Path(access.kafka["ssl.ca.location"]).read_bytes()
        _round_trip(broker, "tls-only")
        address = broker.address

        broker.restart(new_ports=True)
        assert broker.address != address and broker.access == access
        assert Path(access.kafka["ssl.ca.location"]).read_bytes() == ca
        _round_trip(broker, "tls-only-again")
        assert "sasl.password" not in access.kafka


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sasl", ["plain", "scram-sha-256"])
def test_sasl_plaintext(tmp_path: Path, sasl: str) -> None:
    with start_kafka(security=KafkaSecurity(sasl=sasl), workdir_parent=tmp_path) as broker:
        access = broker.access.kafka
        assert access["security.protocol"] == "SASL_PLAINTEXT"
        assert access["sasl.mechanism"] == sasl.upper() and "ssl.ca.location" not in access
        assert broker.workdir is not None and not (broker.workdir / "tls").exists()
        _round_trip(broker, "sasl")
        wrong = _client_errors(_conf(broker, **{"sasl.password": "not-the-password"}))
        assert wrong and wrong[0].code() == KafkaError._AUTHENTICATION, wrong
        _password_kept_secret(broker)


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_sasl_ssl_cluster_replicates_and_finds_leaders(tmp_path: Path) -> None:
    security = KafkaSecurity(tls=True, sasl="scram-sha-512")
    with start_kafka(nodes=3, heap="512m", security=security, workdir_parent=tmp_path) as broker:
        print(f"SASL_SSL 3-node Kafka formed in {broker.start_seconds:.2f} s")
        brokers = AdminClient(_conf(broker)).list_topics(timeout=10).brokers
        assert set(brokers) == {1, 2, 3}
        _round_trip(broker, "replicated", replicas=3)
        assert broker.leader("replicated", 10.0) in broker.nodes
        metadata = AdminClient(_conf(broker)).list_topics("replicated", timeout=10)
        assert sorted(metadata.topics["replicated"].partitions[0].isrs) == [1, 2, 3]
        _password_kept_secret(broker)


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_start_failure_does_not_show_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "sentinel-password-" + uuid.uuid4().hex
    monkeypatch.setattr(kafka_module.secrets, "token_urlsafe", lambda _n=None: password)
    security = KafkaSecurity(tls=True, sasl="scram-sha-512")
    with socket.socket() as taken:
        # Formatted, then the node fails at start-up, after it read the config with the password.
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerStartError) as err:
            start_kafka(port=port, security=security, workdir_parent=tmp_path)
    message = str(err.value)
    assert "SASL_SSL" in message and "already in use" in message.lower()
    assert password not in message
