"""The Prometheus JMX exporter java agent of embedded Kafka nodes with telemetry on: its jar
(fetched from Maven Central once, then cached) and a config exporting only what exprun reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runner.execution.brokers.cache import (
    MVN_TIMEOUT,
    cache_root,
    fill_once,
    find_mvn,
    mvn_failure,
)
from runner.execution.brokers.errors import BrokerStartError
from runner.execution.brokers.processes import run_tool

# 1.1+ is not published on Maven Central under this artifact id.
JMX_EXPORTER_VERSION = "1.0.1"
JMX_AGENT_ARTIFACT = f"io.prometheus.jmx:jmx_prometheus_javaagent:{JMX_EXPORTER_VERSION}"
JMX_AGENT_JAR = f"jmx_prometheus_javaagent-{JMX_EXPORTER_VERSION}.jar"
# A jar to use instead of Maven's (e.g. on a machine without access to Maven Central).
JMX_AGENT_ENV = "EXPRUN_JMX_AGENT"
TELEMETRY_OFF_HINT = (
    "To run the broker without it (and without broker telemetry), set `telemetry: off` on the "
    "broker in the spec."
)

# The attributes Kafka's Yammer meters and histograms publish besides the one exprun reads:
# excluded, so a scrape every second computes no rate or percentile snapshot it throws away.
_METER_RATES = ("MeanRate", "OneMinuteRate", "FiveMinuteRate", "FifteenMinuteRate")
_HISTOGRAM_REST = (
    *("Count", "Min", "Max", "Mean", "StdDev"),
    *("50thPercentile", "75thPercentile", "95thPercentile", "98thPercentile", "999thPercentile"),
)
# exprun's server.properties name the client listener so (the other one is CONTROLLER).
CLIENT_LISTENER = "PLAINTEXT"


@dataclass(frozen=True)
class KafkaMetric:
    """One attribute of the Kafka MBeans matching bean, exported as one metric."""

    bean: str  # ObjectName in Kafka's own key order (rule patterns follow it); one value may be *
    attribute: str
    name: str  # the metric's name; a counter's sample gets `_total` appended
    counter: bool = False
    label: str = ""  # the label the * value becomes: one sample per bean
    skip: tuple[str, ...] = ()  # attributes the agent need not read

    @property
    def sample(self) -> str:
        """The sample name a scrape carries."""
        return f"{self.name}_total" if self.counter else self.name

    def rule(self) -> dict[str, Any]:
        """The agent's rule turning the attribute into the metric."""
        domain, keys = self.bean.split(":", 1)
        keys = keys.replace(",", ", ").replace("=*", "=([^,]+)")
        rule: dict[str, Any] = {
            "pattern": f"{domain}<{keys}><>{self.attribute}",
            "name": self.name,
            "type": "COUNTER" if self.counter else "GAUGE",
        }
        if self.label:
            rule["labels"] = {self.label: "$1"}
        # Matches depend on the bean's name only, never its value: safe to cache.
        rule["cache"] = True
        return rule


def _bean(domain: str, type_: str, **keys: str) -> str:
    return ",".join([f"{domain}:type={type_}", *(f"{k}={v}" for k, v in keys.items())])


def _gauge(bean: str, name: str, label: str = "") -> KafkaMetric:
    return KafkaMetric(bean, "Value", name, label=label)


def _meter_count(bean: str, name: str) -> KafkaMetric:
    return KafkaMetric(bean, "Count", name, counter=True, skip=_METER_RATES)


def _p99(bean: str, name: str) -> KafkaMetric:
    return KafkaMetric(bean, "99thPercentile", name, skip=_HISTOGRAM_REST)


_SERVER, _NETWORK, _CONTROLLER = "kafka.server", "kafka.network", "kafka.controller"
# Keyed by the key of the reading (runner.execution.telemetry.kafka_reading) each one feeds.
KAFKA_METRICS: dict[str, KafkaMetric] = {
    # The broker pool's own meter: on a combined node RequestHandlerAvgIdlePercent spreads idle
    # time over the controller's handler threads too, so it reads ~50% idle at saturation.
    "handler_idle_ns": _meter_count(
        _bean(_SERVER, "KafkaRequestHandlerPool", name="BrokerRequestHandlerAvgIdlePercent"),
        "exprun_kafka_broker_request_handler_idle_ns",
    ),
    # Per network thread of the client listener: on a combined node the controller's
    # SocketServer registers NetworkProcessorAvgIdlePercent first, so that gauge averages the
    # CONTROLLER listener's threads instead.
    "network_idle_pct": KafkaMetric(
        _bean(_SERVER, "socket-server-metrics", listener=CLIENT_LISTENER, networkProcessor="*"),
        "io-wait-ratio",
        "exprun_kafka_network_io_wait_ratio",
        label="processor",
    ),
    "produce_p99_ms": _p99(
        _bean(_NETWORK, "RequestMetrics", name="TotalTimeMs", request="Produce"),
        "exprun_kafka_produce_total_time_p99_ms",
    ),
    "fetch_p99_ms": _p99(
        _bean(_NETWORK, "RequestMetrics", name="TotalTimeMs", request="FetchConsumer"),
        "exprun_kafka_fetch_consumer_total_time_p99_ms",
    ),
    "request_queue_p99_ms": _p99(
        _bean(_NETWORK, "RequestMetrics", name="RequestQueueTimeMs", request="Produce"),
        "exprun_kafka_produce_request_queue_time_p99_ms",
    ),
    "bytes_in": _meter_count(
        _bean(_SERVER, "BrokerTopicMetrics", name="BytesInPerSec"), "exprun_kafka_bytes_in"
    ),
    "bytes_out": _meter_count(
        _bean(_SERVER, "BrokerTopicMetrics", name="BytesOutPerSec"), "exprun_kafka_bytes_out"
    ),
    "under_replicated": _gauge(
        _bean(_SERVER, "ReplicaManager", name="UnderReplicatedPartitions"),
        "exprun_kafka_under_replicated_partitions",
    ),
    "leader_count": _gauge(
        _bean(_SERVER, "ReplicaManager", name="LeaderCount"), "exprun_kafka_leader_count"
    ),
    "isr_shrinks": _meter_count(
        _bean(_SERVER, "ReplicaManager", name="IsrShrinksPerSec"), "exprun_kafka_isr_shrinks"
    ),
    "isr_expands": _meter_count(
        _bean(_SERVER, "ReplicaManager", name="IsrExpandsPerSec"), "exprun_kafka_isr_expands"
    ),
    "offline_partitions": _gauge(
        _bean(_CONTROLLER, "KafkaController", name="OfflinePartitionsCount"),
        "exprun_kafka_offline_partitions",
    ),
    "active_controller": _gauge(
        _bean(_CONTROLLER, "KafkaController", name="ActiveControllerCount"),
        "exprun_kafka_active_controller_count",
    ),
    # Partition 0 of every topic the node hosts; Kafka reports its ISR size only on the leader.
    "topic_leader": _gauge(
        _bean("kafka.cluster", "Partition", name="InSyncReplicasCount", topic="*", partition="0"),
        "exprun_kafka_partition0_in_sync_replicas",
        label="topic",
    ),
}


def exporter_config() -> str:
    """The agent's YAML config: exprun's Kafka MBeans only, named for exprun's parser."""
    metrics = KAFKA_METRICS.values()
    config = {
        "includeObjectNames": [m.bean for m in metrics],
        "excludeObjectNameAttributes": {m.bean: list(m.skip) for m in metrics if m.skip},
        "rules": [m.rule() for m in metrics],
    }
    return yaml.safe_dump(config, sort_keys=False, width=1000)


def jmx_agent_jar() -> Path:
    """The agent's jar: $EXPRUN_JMX_AGENT, else fetched with Maven once into exprun's cache."""
    override = os.environ.get(JMX_AGENT_ENV)
    if override:
        if not Path(override).is_file():
            raise BrokerStartError(
                f"{JMX_AGENT_ENV}={override} is not a file. {TELEMETRY_OFF_HINT}"
            )
        return Path(override)
    libs = cache_root() / f"jmx-exporter-{JMX_EXPORTER_VERSION}" / "libs"
    try:
        return fill_once(libs, JMX_AGENT_ARTIFACT, _fetch) / JMX_AGENT_JAR
    except BrokerStartError as error:
        raise BrokerStartError(
            f"The Prometheus JMX exporter agent ({JMX_AGENT_ARTIFACT}) could not be resolved. "
            f"{error}\n{TELEMETRY_OFF_HINT}"
        ) from None


def _fetch(into: Path) -> None:
    """mvn dependency:copy of the agent's jar into the dir `into`."""
    mvn = find_mvn("the Prometheus JMX exporter agent", f"set {JMX_AGENT_ENV} to its jar")
    base = into.parent
    log = base / "mvn.log"
    log.write_bytes(b"")
    argv = [str(mvn), "-q", "-B", "dependency:copy", f"-Dartifact={JMX_AGENT_ARTIFACT}"]
    argv.append(f"-DoutputDirectory={into}")
    # No pom.xml in the cache dir, so Maven runs the goal outside any project.
    code = run_tool(argv, log_path=log, cwd=base, timeout=MVN_TIMEOUT)
    if code != 0 or not (into / JMX_AGENT_JAR).is_file():
        raise BrokerStartError(mvn_failure(argv, code, log))
