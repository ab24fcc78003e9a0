"""A Kafka node's reading from its JMX exporter scrape (pure), on a real captured scrape."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runner.execution.brokers.jmx_agent import KAFKA_METRICS, exporter_config
from runner.execution.telemetry.kafka_reading import kafka_reading

# A real scrape of an embedded node (see its header), trimmed.
SCRAPE = (Path(__file__).parent / "kafka_scrape.txt").read_text()
MB = 1024 * 1024
EVERY_KEY = {*KAFKA_METRICS, "gc_pause_ms", "heap_used_mb"}


def _without(text: str, *prefixes: str) -> str:
    """The scrape without the samples (and HELP / TYPE lines) of metrics named so."""
    kept = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith(("# HELP", "# TYPE")) else line
        if not name.startswith(prefixes):
            kept.append(line)
    return "\n".join(kept) + "\n"


def test_every_key_of_a_real_scrape() -> None:
    reading = kafka_reading(SCRAPE, "trial-7")
    assert reading == {
        "handler_idle_ns": 4.0676995034e10,
        # The client listener's three network threads, each capped at 1 as Kafka does.
        "network_idle_pct": pytest.approx(100 * (0.9951764918759232 + 0.9977429666642046 + 1) / 3),
        "produce_p99_ms": 71.0,
        "fetch_p99_ms": 506.0,
        "request_queue_p99_ms": 5.0,
        "bytes_in": 1050622.0,
        "bytes_out": 1098763.0,
        "under_replicated": 0.0,
        "leader_count": 51.0,  # trial-7 and the 50 partitions of __consumer_offsets
        "isr_shrinks": 0.0,
        "isr_expands": 0.0,
        "offline_partitions": 0.0,
        "active_controller": 1.0,
        "topic_leader": 1.0,
        "gc_pause_ms": pytest.approx(74.0),  # G1 Young 0.074 s + G1 Old 0 s
        "heap_used_mb": pytest.approx(1.81452256e8 / MB),  # area="heap", not a pool
    }
    assert set(reading) == EVERY_KEY


def test_topic_leader_is_zero_on_a_follower_and_absent_where_the_topic_is_not_hosted() -> None:
    follower = SCRAPE.replace('{topic="trial-7"} 1.0', '{topic="trial-7"} 0.0')
    assert follower != SCRAPE
    assert kafka_reading(follower, "trial-7")["topic_leader"] == 0.0
    assert "topic_leader" not in kafka_reading(SCRAPE, "trial-8")
    # A trial of several topics (trial-0, trial-1, ...): the first one stands for them.
    several = SCRAPE.replace('topic="trial-7"', 'topic="trial-0"')
    assert kafka_reading(several, "trial")["topic_leader"] == 1.0


def test_missing_metrics_leave_their_keys_out() -> None:
    lacking = _without(
        SCRAPE,
        "exprun_kafka_network_io_wait_ratio",
        "exprun_kafka_bytes_in",
        "exprun_kafka_partition0_in_sync_replicas",
        "jvm_gc_collection_seconds",
    )
    reading = kafka_reading(lacking, "trial-7")
    assert set(reading) == EVERY_KEY - {
        "network_idle_pct",
        "bytes_in",
        "topic_leader",
        "gc_pause_ms",
    }
    # Before Kafka registers its MBeans the agent serves the JVM's metrics only.
    jvm_only = _without(SCRAPE, "exprun_")
    assert kafka_reading(jvm_only, "trial-7") == {
        "gc_pause_ms": pytest.approx(74.0),
        "heap_used_mb": pytest.approx(1.81452256e8 / MB),
    }
    assert kafka_reading("", "trial-7") == {}


def test_an_answer_that_is_no_scrape_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        kafka_reading("<html><body>Not Found</body></html>", "trial-7")


def test_gc_pause_leaves_out_concurrent_collectors() -> None:
    concurrent = (
        "# TYPE jvm_gc_collection_seconds summary\n"
        'jvm_gc_collection_seconds_count{gc="G1 Young Generation"} 3\n'
        'jvm_gc_collection_seconds_sum{gc="G1 Young Generation"} 0.02\n'
        'jvm_gc_collection_seconds_count{gc="G1 Concurrent GC"} 2\n'
        'jvm_gc_collection_seconds_sum{gc="G1 Concurrent GC"} 1.5\n'
    )
    assert kafka_reading(concurrent, "t") == {"gc_pause_ms": pytest.approx(20.0)}


def test_the_exporter_config_exports_exactly_what_the_reading_reads() -> None:
    config = yaml.safe_load(exporter_config())
    beans = [metric.bean for metric in KAFKA_METRICS.values()]
    assert config["includeObjectNames"] == beans
    assert sorted(rule["name"] for rule in config["rules"]) == sorted(
        metric.name for metric in KAFKA_METRICS.values()
    )
    # Only exact beans get attribute exclusions: the agent matches them by name.
    assert all("*" not in bean for bean in config["excludeObjectNameAttributes"])
    # The captured scrape carries a sample for every metric the config names.
    for metric in KAFKA_METRICS.values():
        assert f"\n{metric.sample}" in SCRAPE, metric.sample


EXAMPLE_RULES_SCRAPE = """\
# TYPE kafka_server_replicamanager_underreplicatedpartitions gauge
kafka_server_replicamanager_underreplicatedpartitions 2.0
# TYPE kafka_server_brokertopicmetrics_bytesin_total counter
kafka_server_brokertopicmetrics_bytesin_total 12345.0
# TYPE kafka_network_requestmetrics_totaltimems gauge
kafka_network_requestmetrics_totaltimems{request="Produce",quantile="0.50"} 3.0
kafka_network_requestmetrics_totaltimems{request="Produce",quantile="0.99"} 41.0
kafka_network_requestmetrics_totaltimems{request="FetchConsumer",quantile="0.99"} 502.0
# TYPE kafka_network_socketserver_networkprocessoravgidlepercent gauge
kafka_network_socketserver_networkprocessoravgidlepercent 0.75
# TYPE kafka_cluster_partition_insyncreplicascount gauge
kafka_cluster_partition_insyncreplicascount{partition="0",topic="trial"} 3.0
kafka_cluster_partition_insyncreplicascount{partition="1",topic="trial"} 0.0
# TYPE jvm_memory_bytes_used gauge
jvm_memory_bytes_used{area="heap"} 2097152.0
jvm_memory_bytes_used{area="nonheap"} 9999999.0
"""


def test_an_external_exporter_with_the_example_kafka_rules_is_read_too() -> None:
    reading = kafka_reading(EXAMPLE_RULES_SCRAPE, "trial")
    assert reading == {
        "under_replicated": 2.0,
        "bytes_in": 12345.0,
        "produce_p99_ms": 41.0,
        "fetch_p99_ms": 502.0,
        "network_idle_pct": 75.0,
        "topic_leader": 1.0,
        "heap_used_mb": 2.0,
    }
