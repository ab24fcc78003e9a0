"""Broker lifecycle: embedded NATS/Kafka brokers (one node or a cluster) started and stopped by
exprun, or external ones; and control of an embedded broker's nodes for fault injection."""

from runner.execution.brokers.base import RunningBroker, stop_all_brokers
from runner.execution.brokers.errors import BrokerStartError, LeaderUnknown
from runner.execution.brokers.external import connect_external
from runner.execution.brokers.kafka import KAFKA_VERSION, kafka_classpath, start_kafka
from runner.execution.brokers.memory import estimated_memory_mb
from runner.execution.brokers.nats import start_nats
from runner.execution.brokers.node import BrokerNode

__all__ = [
    "KAFKA_VERSION",
    "BrokerNode",
    "BrokerStartError",
    "LeaderUnknown",
    "RunningBroker",
    "connect_external",
    "estimated_memory_mb",
    "kafka_classpath",
    "start_kafka",
    "start_nats",
    "stop_all_brokers",
]
