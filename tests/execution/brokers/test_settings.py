"""Server settings as written for the brokers, and the memory estimate: no broker runs here."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.execution.brokers import BrokerStartError, estimated_memory_mb
from runner.execution.brokers.kafka import heap_flags, render_server_properties
from runner.execution.brokers.memory import jvm_size_mb, nats_size_mb
from runner.execution.brokers.nats_config import ClusterMember, render_config

# What a single node was always given: a 1-node start must not change.
SINGLE_KAFKA = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=/w/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=8388608
num.io.threads=5
"""

SINGLE_NATS = """\
listen: "127.0.0.1:4222"
http: "127.0.0.1:8222"
max_payload: 8388608
max_pending: 268435456
logtime: true
write_deadline: 5s
jetstream {
  store_dir: "/w/store"
  max_memory_store: 1GB
  max_file_store: 1099511627776
}
"""


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_kafka_single_node_properties_are_unchanged() -> None:
    rendered = render_server_properties(
        port=9092, controller_port=9093, data_dir=Path("/w/data"), overrides={"num.io.threads": "5"}
    )
    assert rendered == SINGLE_KAFKA


def test_kafka_cluster_node_properties() -> None:
    props = _properties(
        render_server_properties(
            port=9094,
            controller_port=9095,
            data_dir=Path("/w/n2/data"),
            overrides={"min.insync.replicas": "2"},
            node_id=2,
            voters=[9093, 9095, 9097],
        )
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    )
    assert "controller.quorum.bootstrap.servers" not in props
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["share.coordinator.state.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["min.insync.replicas"] == "2"  # the override wins


def test_kafka_two_node_cluster_replicates_internal_topics_twice() -> None:
    props = _properties(
        render_server_properties(
            port=1, controller_port=2, data_dir=Path("/d"), overrides={}, voters=[2, 4]
        )
    )
    assert props["offsets.topic.replication.factor"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"


def test_kafka_heap_flags() -> None:
    assert heap_flags(None) == ("-Xms512m", "-Xmx1g")
    assert heap_flags("1G") == ("-Xms1G", "-Xmx1G")
    assert heap_flags("768m") == ("-Xms768m", "-Xmx768m")
    for bad in ("1 G", "1GB", "-Xmx1g", "", "big"):
        with pytest.raises(BrokerStartError, match="heap"):
            heap_flags(bad)


def test_nats_single_node_config_is_unchanged() -> None:
    overrides = {"write_deadline": "5s", "jetstream.max_memory_store": "1GB"}
    rendered = render_config(
        port=4222, monitor_port=8222, store_dir=Path("/w/store"), overrides=overrides
    )
    assert rendered == SINGLE_NATS


def test_nats_nested_overrides_merge_into_exprun_blocks() -> None:
    overrides = {
        "write_deadline": "5s",
        "max_payload": "4MB",
        "jetstream": {"max_memory_store": "1GB", "limits": {"max_ack_pending": 1000}},
        "jetstream.max_file_store": "10GB",
        "server_tags": ["fast", "ssd"],
        "mappings": {"orders.*": "o.{{wildcard(1)}}"},
    }
    rendered = render_config(
        port=4222, monitor_port=8222, store_dir=Path("/w/store"), overrides=overrides
    )
    assert rendered.count("jetstream {") == 1
    assert '  store_dir: "/w/store"\n' in rendered  # exprun's own entry kept
    assert "  max_memory_store: 1GB\n" in rendered and "  max_file_store: 10GB\n" in rendered
    assert "  limits {\n    max_ack_pending: 1000\n  }\n" in rendered
    assert "max_payload: 4MB\n" in rendered and "max_payload: 8388608" not in rendered
    assert 'server_tags: ["fast", "ssd"]\n' in rendered
    assert 'mappings {\n  "orders.*": "o.{{wildcard(1)}}"\n}\n' in rendered


def test_nats_cluster_member_config() -> None:
    member = ClusterMember("n2", 6223, [6222, 6224])
    rendered = render_config(
        port=4223,
        monitor_port=8223,
        store_dir=Path("/w/n2/store"),
        overrides={"cluster": {"pool_size": 3}},
        member=member,
    )
    assert 'server_name: "n2"\n' in rendered
    assert "cluster {\n" in rendered and '  name: "exprun"\n' in rendered
    assert '  listen: "127.0.0.1:6223"\n' in rendered
    assert '  routes: ["nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6224"]\n' in rendered
    assert "  pool_size: 3\n" in rendered


def test_sizes() -> None:
    assert jvm_size_mb("1g") == jvm_size_mb("1G") == 1024
    assert jvm_size_mb("512m") == 512 and jvm_size_mb("1048576k") == 1024
    assert jvm_size_mb("1") == 1  # bytes, rounded up
    assert nats_size_mb("1GB") == nats_size_mb("1G") == nats_size_mb("1GiB") == 1024
    assert nats_size_mb("512MB") == 512 and nats_size_mb(1024**3) == 1024
    for bad in ("lots", "1 XB"):
        with pytest.raises(ValueError):
            nats_size_mb(bad)


def test_estimated_memory_mb() -> None:
    one_kafka = estimated_memory_mb("kafka", 1, None, {})
    assert 1024 + 256 <= one_kafka <= 1024 + 400  # a 1 GiB max heap, plus the JVM's own
    assert estimated_memory_mb("kafka", 3, None, {}) == 3 * one_kafka
    big = estimated_memory_mb("kafka", 3, "8G", {})
    assert big >= 3 * (8192 + 300) and big % 3 == 0  # the JVM's own grows with its heap
    assert estimated_memory_mb("kafka", 2, "512m", {}) < 2 * one_kafka
    one_nats = estimated_memory_mb("nats", 1, None, {})
    assert 0 < one_nats < 1024
    nested = estimated_memory_mb("nats", 3, None, {"jetstream": {"max_memory_store": "1GB"}})
    flat = estimated_memory_mb("nats", 3, None, {"jetstream.max_memory_store": 1024**3})
    assert nested == flat == 3 * (one_nats + 1024)
    with pytest.raises(ValueError):
        estimated_memory_mb("rabbitmq", 1, None, {})
