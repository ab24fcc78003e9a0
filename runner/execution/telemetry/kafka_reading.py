"""One reading of a Kafka node from its Prometheus JMX exporter's /metrics (pure parsing).

The metric names are those of exprun's exporter config (runner.execution.brokers.jmx_agent)
plus the JVM's, which the agent exports by default; an external broker's exporter may use the
JMX exporter's example Kafka rules instead. A metric the scrape lacks is left out of the
reading, never read as zero.
"""

from __future__ import annotations

import math
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from runner.execution.brokers.jmx_agent import KAFKA_METRICS

MB = 1024 * 1024
MS_PER_S = 1000.0
# Collectors whose time is concurrent work beside the application, not a pause (G1's
# concurrent cycles on Java 20+, ZGC's and Shenandoah's cycles).
_CONCURRENT_COLLECTORS = ("Concurrent", "Cycles")

# name -> [(labels, value)]
_Samples = dict[str, list[tuple[dict[str, str], float]]]

# An external Kafka's exporter usually runs the JMX exporter's example Kafka rules (lowercased
# kafka_<domain>_<type>_<name>, percentiles as quantile labels): read where exprun's own names
# are missing. The key, the sample's name, the labels it must carry, and a factor.
_EXAMPLE_RULES: tuple[tuple[str, str, dict[str, str], float], ...] = (
    ("under_replicated", "kafka_server_replicamanager_underreplicatedpartitions", {}, 1.0),
    ("leader_count", "kafka_server_replicamanager_leadercount", {}, 1.0),
    ("offline_partitions", "kafka_controller_kafkacontroller_offlinepartitionscount", {}, 1.0),
    ("active_controller", "kafka_controller_kafkacontroller_activecontrollercount", {}, 1.0),
    ("bytes_in", "kafka_server_brokertopicmetrics_bytesin_total", {}, 1.0),
    ("bytes_out", "kafka_server_brokertopicmetrics_bytesout_total", {}, 1.0),
    ("isr_shrinks", "kafka_server_replicamanager_isrshrinks_total", {}, 1.0),
    ("isr_expands", "kafka_server_replicamanager_isrexpands_total", {}, 1.0),
    (
        "produce_p99_ms",
        "kafka_network_requestmetrics_totaltimems",
        {"request": "Produce", "quantile": "0.99"},
        1.0,
    ),
    (
        "fetch_p99_ms",
        "kafka_network_requestmetrics_totaltimems",
        {"request": "FetchConsumer", "quantile": "0.99"},
        1.0,
    ),
    (
        "request_queue_p99_ms",
        "kafka_network_requestmetrics_requestqueuetimems",
        {"request": "Produce", "quantile": "0.99"},
        1.0,
    ),
    ("network_idle_pct", "kafka_network_socketserver_networkprocessoravgidlepercent", {}, 100.0),
    ("heap_used_mb", "jvm_memory_bytes_used", {"area": "heap"}, 1.0 / MB),
)
_EXAMPLE_PARTITION_ISR = "kafka_cluster_partition_insyncreplicascount"


def kafka_reading(text: str, topic: str) -> dict[str, float]:
    """The node's signals (schemas.telemetry names) for the trial whose topics are `topic`*.

    ValueError if text is not in the Prometheus text format.
    """
    samples = _samples(text)
    reading: dict[str, float] = {}
    for key, metric in KAFKA_METRICS.items():
        if metric.label:  # a sample per bean: combined below
            continue
        values = [value for _, value in samples.get(metric.sample, ())]
        if values:
            reading[key] = values[0]
    # Kafka averages its network threads the same way, capping each (a rate can overshoot).
    io_wait = [min(v, 1.0) for _, v in samples.get(KAFKA_METRICS["network_idle_pct"].sample, ())]
    if io_wait:
        reading["network_idle_pct"] = 100.0 * sum(io_wait) / len(io_wait)
    in_sync = _topic_in_sync(samples, topic)
    if in_sync is not None:
        reading["topic_leader"] = 1.0 if in_sync > 0 else 0.0
    gc = [
        value
        for labels, value in samples.get("jvm_gc_collection_seconds_sum", ())
        if not any(word in labels.get("gc", "") for word in _CONCURRENT_COLLECTORS)
    ]
    if gc:
        reading["gc_pause_ms"] = MS_PER_S * sum(gc)
    heap = [
        v for labels, v in samples.get("jvm_memory_used_bytes", ()) if labels.get("area") == "heap"
    ]
    if heap:
        reading["heap_used_mb"] = heap[0] / MB
    _read_example_rules(samples, topic, reading)
    return reading


def _read_example_rules(samples: _Samples, topic: str, reading: dict[str, float]) -> None:
    """Fill what exprun's names left out from the example rules' names, where present."""
    for key, name, wanted, factor in _EXAMPLE_RULES:
        if key in reading:
            continue
        for labels, value in samples.get(name, ()):
            if all(labels.get(k) == v for k, v in wanted.items()):
                reading[key] = value * factor
                break
    if "topic_leader" not in reading:
        for labels, value in samples.get(_EXAMPLE_PARTITION_ISR, ()):
            if labels.get("partition") == "0" and labels.get("topic") in (topic, f"{topic}-0"):
                reading["topic_leader"] = 1.0 if value > 0 else 0.0
                break


def _samples(text: str) -> _Samples:
    """Every sample of the scrape by name; NaN (a value Kafka could not compute) left out."""
    found: _Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not math.isnan(sample.value):
                found[sample.name].append((sample.labels, float(sample.value)))
    return found


def _topic_in_sync(samples: _Samples, topic: str) -> float | None:
    """In-sync replicas of partition 0 of the trial's (first) topic; None if not hosted here.

    A trial of several topics names them topic-0, topic-1, ...: the first one stands for them.
    """
    by_topic = {
        labels.get("topic"): value
        for labels, value in samples.get(KAFKA_METRICS["topic_leader"].sample, ())
    }
    for name in (topic, f"{topic}-0"):
        if name in by_topic:
            return by_topic[name]
    return None
