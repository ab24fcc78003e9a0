"""Broker lifecycle: embedded NATS/Kafka brokers started and stopped by exprun, or external ones."""

from runner.execution.brokers.base import BrokerStartError, RunningBroker, stop_all_brokers
from runner.execution.brokers.external import connect_external
from runner.execution.brokers.kafka import KAFKA_VERSION, kafka_classpath, start_kafka
from runner.execution.brokers.nats import start_nats

__all__ = [
    "KAFKA_VERSION",
    "BrokerStartError",
    "RunningBroker",
    "connect_external",
    "kafka_classpath",
    "start_kafka",
    "start_nats",
    "stop_all_brokers",
]
