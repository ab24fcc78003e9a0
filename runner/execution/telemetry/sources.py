"""Which URLs a trial's broker is read from: its embedded nodes', or those the spec gives."""

from __future__ import annotations

from runner.execution.brokers.base import RunningBroker
from runner.execution.telemetry.samples import Source, SourceKind
from schemas.spec import Broker, KafkaBroker

# The endpoint each embedded node publishes its figures on (see the broker launchers).
NODE_ENDPOINT = {"nats": "monitor", "prometheus": "metrics"}


def telemetry_sources(broker: RunningBroker, config: Broker) -> list[Source]:
    """Every node to read, in node order; none when telemetry is off or has nowhere to read."""
    settings = config.telemetry
    if not settings.enabled:
        return []
    kind: SourceKind = "prometheus" if isinstance(config, KafkaBroker) else "nats"
    if not broker.embedded:
        urls = settings.prometheus if kind == "prometheus" else settings.url
        return [Source(number, kind, url) for number, url in enumerate(urls, start=1)]
    endpoint = NODE_ENDPOINT[kind]
    return [
        Source(node.number, kind, node.endpoints[endpoint])
        for node in broker.nodes
        if endpoint in node.endpoints
    ]
