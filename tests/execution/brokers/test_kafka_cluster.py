"""Embedded Kafka clusters and node control, against real KRaft JVMs over real sockets.

One 3-node cluster serves the module (2 cores: one Kafka at a time, and a cluster takes tens of
seconds to form); each test gets it whole again through revive().
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from runner.execution.brokers import BrokerStartError, LeaderUnknown, RunningBroker, start_kafka

pytestmark = [pytest.mark.integration, pytest.mark.own_kafka]

HEAP = "768m"
SERVER_SETTINGS = {
    "num.io.threads": "5",
    # A killed leader is replaced once the controller misses its heartbeats: sooner than the
    # default 9 s keeps the test short.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _admin(address: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": address, "log_level": 0})


def _create_topic(address: str, topic: str) -> None:
    """RF 3, min.insync.replicas 2: acks=all needs two live replicas."""
    admin = _admin(address)  # kept: the futures fail once their client is collected
    new = NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})
    admin.create_topics([new])[topic].result(timeout=30)


def _produce(address: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": address, "acks": "all", "log_level": 0})
    failures: list[str] = []

    def on_delivery(error: object, _msg: object) -> None:
        if error is not None:
            failures.append(str(error))

    for value in values:
        producer.produce(topic, value, on_delivery=on_delivery)
    assert producer.flush(60) == 0 and failures == []


def _consume(address: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "log_level": 0,
        }
    )
    got: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(bytes(msg.value() or b""))
    finally:
        consumer.close()
    return got


def _isr(address: str, topic: str) -> list[int]:
    metadata = _admin(address).list_topics(topic=topic, timeout=10)
    return sorted(metadata.topics[topic].partitions[0].isrs)


def _wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One 3-node cluster for the module, with a heap and server settings of a spec."""
    parent = tmp_path_factory.mktemp("kafka-cluster")
    broker = start_kafka(nodes=3, heap=HEAP, overrides=SERVER_SETTINGS, workdir_parent=parent)
    print(f"3-node Kafka cluster formed in {broker.start_seconds:.2f} s")
    yield broker
    broker.stop()


@pytest.fixture
def cluster(kafka_cluster: RunningBroker) -> RunningBroker:
    """The module's cluster, whole again whatever a test before did to its nodes."""
    kafka_cluster.revive(timeout=90)
    return kafka_cluster


@pytest.mark.timeout(300)
def test_kafka_cluster_forms_with_every_node_a_broker(cluster: RunningBroker) -> None:
    assert cluster.kind == "kafka" and cluster.embedded and cluster.alive()
    assert [n.number for n in cluster.nodes] == [1, 2, 3]
    assert cluster.address == ",".join(n.address for n in cluster.nodes)
    assert all(a.startswith("127.0.0.1:") for a in cluster.address.split(","))
    assert len(set(cluster.pids)) == 3 and cluster.pid == cluster.pids[0]
    assert cluster.version and cluster.version.startswith("4.")
    assert set(_admin(cluster.address).list_topics(timeout=10).brokers) == {1, 2, 3}
    # Each node in its own folder, with its own logs.
    assert len({n.workdir for n in cluster.nodes}) == 3
    for node in cluster.nodes:
        assert all(log.parent == node.workdir for log in node.log_files)
        assert (node.workdir / "server.log").stat().st_size > 0
    assert "==> n3 server.log <==" in cluster.log_tail(5)


@pytest.mark.timeout(120)
def test_kafka_settings_and_heap_reach_every_node(cluster: RunningBroker) -> None:
    admin = _admin(cluster.address)
    for node in cluster.nodes:
        # One broker resource per call, says the AdminClient.
        resource = ConfigResource(ConfigResource.Type.BROKER, str(node.number))
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
        assert configs["num.io.threads"].value == "5"
        assert configs["offsets.topic.replication.factor"].value == "3"
        assert configs["transaction.state.log.min.isr"].value == "2"
        assert configs["min.insync.replicas"].value == "1"
    for node in cluster.nodes:
        assert node.pid is not None
        cmdline = psutil.Process(node.pid).cmdline()
        assert f"-Xms{HEAP}" in cmdline and f"-Xmx{HEAP}" in cmdline
        assert "-Xmx1g" not in cmdline and "kafka.Kafka" in cmdline


@pytest.mark.timeout(300)
def test_kafka_rf3_topic_survives_its_leader_killed_and_revive(cluster: RunningBroker) -> None:
    topic = f"rf3-{uuid.uuid4().hex[:6]}"
    _create_topic(cluster.address, topic)
    _produce(cluster.address, topic, [b"a%d" % i for i in range(10)])
    assert len(_consume(cluster.address, topic, 10)) == 10

    old = cluster.leader(topic, timeout=10.0)
    assert old in cluster.nodes
    old.kill()
    assert not old.alive() and not cluster.alive()
    new = cluster.leader(topic, timeout=30.0)  # waits out the dead leader's session
    assert new is not old and new.alive()
    _produce(cluster.address, topic, [b"b%d" % i for i in range(10)])  # 2 in sync: acks=all ok
    with pytest.raises(BrokerStartError, match=f"node {old.number} of 3"):
        cluster.wait_formed(1.0)

    cluster.revive(timeout=90)
    assert cluster.alive() and old.alive()
    cluster.wait_formed(30.0)
    assert _wait_for(lambda: _isr(cluster.address, topic) == [1, 2, 3], 60.0)
    assert len(_consume(cluster.address, topic, 20)) == 20


@pytest.mark.timeout(120)
def test_kafka_pause_and_resume_a_node(cluster: RunningBroker) -> None:
    topic = f"pause-{uuid.uuid4().hex[:6]}"
    _create_topic(cluster.address, topic)
    node = cluster.nodes[2]
    node.pause()
    try:
        assert node.paused and node.alive() and not cluster.alive()
        assert node.pid is not None
        assert psutil.Process(node.pid).status() == psutil.STATUS_STOPPED
        with pytest.raises(BrokerStartError, match=r"node 3 of 3 .* is paused"):
            cluster.wait_formed(0.5)
        assert cluster.leader(topic, timeout=10.0) in cluster.nodes  # asks the others
    finally:
        node.resume()
    assert not node.paused and cluster.alive()
    cluster.wait_formed(30.0)


@pytest.mark.timeout(60)
def test_kafka_leader_of_a_missing_topic_is_unknown(cluster: RunningBroker) -> None:
    with pytest.raises(LeaderUnknown, match="no-such-topic"):
        cluster.leader("no-such-topic", timeout=1.0)
    assert "no-such-topic" not in _admin(cluster.address).list_topics(timeout=10).topics


@pytest.mark.timeout(120)
def test_kafka_cluster_stop_leaves_no_process(
    kafka_cluster: RunningBroker, broker_pids: Callable[[], set[int]]
) -> None:
    # Last in the module: stops the module's cluster, one node paused and one dead.
    kafka_cluster.revive(timeout=90)
    pids, workdir = kafka_cluster.pids, kafka_cluster.workdir
    kafka_cluster.nodes[0].pause()
    kafka_cluster.nodes[1].kill()
    started = time.monotonic()
    kafka_cluster.stop()
    print(f"3-node Kafka cluster stopped in {time.monotonic() - started:.2f} s")
    assert all(_gone(pid) for pid in pids) and not set(pids) & broker_pids()
    assert workdir is not None and not workdir.exists() and not kafka_cluster.alive()


@pytest.mark.timeout(120)
def test_kafka_bad_setting_fails_with_log_tail(
    tmp_path: Path, broker_pids: Callable[[], set[int]]
) -> None:
    before = broker_pids()
    with pytest.raises(BrokerStartError) as err:
        start_kafka(nodes=2, overrides={"num.io.threads": "abc"}, workdir_parent=tmp_path)
    message = str(err.value)
    assert re.search(r"node [12] of 2", message) and "broker log" in message
    assert "num.io.threads" in message  # Kafka's own complaint, from the log tail
    assert broker_pids() - before == set()
    assert list(tmp_path.iterdir()) == []
