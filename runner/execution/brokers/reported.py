"""What a running embedded broker reports for the server settings a spec gave it.

Kept with the run's provenance (environment.json), so a reader can see that each instance ran
with its own settings: Kafka's values from the broker's own config description, nats-server's
from its /varz monitor page (in the server's units: nanoseconds, bytes).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from runner.execution.brokers.base import RunningBroker

TIMEOUT_S = 10.0
# nats-server option names under which /varz reports a JetStream setting otherwise.
VARZ_JETSTREAM_NAMES = {
    "max_memory_store": "max_memory",
    "max_mem_store": "max_memory",
    "max_mem": "max_memory",
    "max_file_store": "max_storage",
    "max_file": "max_storage",
}
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def reported_settings(broker: RunningBroker, server: Mapping[str, Any]) -> dict[str, Any]:
    """Each `server` setting (dotted for NATS blocks) as the broker reports it; a setting it
    does not report is left out, and an unreachable broker reports nothing."""
    if not server or not broker.nodes:
        return {}
    try:
        if broker.kind == "kafka":
            return _kafka(broker, list(server))
        return _nats(broker.nodes[0].endpoints["monitor"], server)
    except Exception:  # provenance is best effort: the run goes on without it
        return {}


def _kafka(broker: RunningBroker, keys: list[str]) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    conf: dict[str, str | int | float | bool] = {
        "bootstrap.servers": broker.address,
        "log_level": 0,
        **broker.access.kafka,  # a secured broker's TLS and login
    }
    admin = AdminClient(conf)
    node = str(broker.nodes[0].number)
    futures = admin.describe_configs([ConfigResource(ResourceType.BROKER, node)])
    entries = next(iter(futures.values())).result(timeout=TIMEOUT_S)
    return {key: entries[key].value for key in keys if key in entries}


def _nats(monitor: str, server: Mapping[str, Any]) -> dict[str, Any]:
    with _HTTP.open(f"{monitor}/varz", timeout=TIMEOUT_S) as response:
        varz = json.load(response)
    found: dict[str, Any] = {}
    for path in _paths(server):
        where: tuple[str, ...] = path
        if path[0] == "jetstream" and len(path) == 2:
            where = ("jetstream", "config", VARZ_JETSTREAM_NAMES.get(path[1], path[1]))
        value: Any = varz
        for part in where:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None and not isinstance(value, Mapping | list):
            found[".".join(path)] = value
    return found


def _paths(settings: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in settings.items():
        if isinstance(value, Mapping):
            yield from _paths(value, (*prefix, key))
        else:
            yield (*prefix, key)
