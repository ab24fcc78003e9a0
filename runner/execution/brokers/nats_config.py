"""nats-server configuration: exprun's own settings merged with a spec's, in NATS syntax."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Server-wide limits set high so only the limits a spec declares on a stream can ever bite.
MAX_PAYLOAD = 8 * 1024 * 1024  # NATS warns above 8 MiB
MAX_PENDING = 256 * 1024 * 1024  # per-client buffer; must exceed max_payload
MAX_MEMORY_STORE = 8 * 1024**3
MAX_FILE_STORE = 1024**4
CLUSTER_NAME = "exprun"
# exprun's own blocks, which a flat "block.key" override reaches (as "jetstream.key" always did).
SPLIT_BLOCKS = ("jetstream", "cluster")

# A config value: a scalar, a list (a NATS array) or a mapping (a NATS block), nested at will.
ConfValue = Any

_BARE_LITERAL = re.compile(r"^\d+(\.\d+)?[A-Za-z]*$")  # sizes/durations like 8MB, 250ms
_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ClusterMember:
    """What a nats-server needs to join its cluster: its name, route port, the others' ports."""

    server_name: str
    route_port: int
    peer_route_ports: Sequence[int]


@dataclass(frozen=True)
class ServerTls:
    """A node's certificate and key, and the CA its cluster peers are checked against."""

    cert: Path
    key: Path
    ca: Path

    def block(self) -> dict[str, ConfValue]:
        return {"cert_file": str(self.cert), "key_file": str(self.key), "ca_file": str(self.ca)}


def nested_overrides(overrides: Mapping[str, ConfValue]) -> dict[str, ConfValue]:
    """Overrides with the flat form of exprun's blocks ("jetstream.max_memory_store") nested.

    Only those blocks' prefixes are split: elsewhere a dot may belong to the key (a subject).
    """
    nested: dict[str, ConfValue] = {}
    for key, value in overrides.items():
        block, dot, name = key.partition(".")
        if dot and block in SPLIT_BLOCKS:
            nested[block] = merged(nested.get(block), {name: value})
        else:
            nested[key] = merged(nested.get(key), value)
    return nested


def merged(base: ConfValue, override: ConfValue) -> ConfValue:
    """override on top of base: blocks merge key by key (recursively), anything else replaces."""
    if not isinstance(override, Mapping):
        return override
    result = dict(base) if isinstance(base, Mapping) else {}
    for key, value in override.items():
        result[key] = merged(result.get(key), value)
    return result


def conf_value(value: ConfValue) -> str:
    """Render one value in NATS config syntax: scalars, [arrays] and inline {maps}."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{conf_key(k)}: {conf_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(conf_value(v) for v in value) + "]"
    text = str(value)
    return text if _BARE_LITERAL.match(text) else json.dumps(text)


def conf_key(key: str) -> str:
    """A key as NATS reads it: bare when it is a plain name, else quoted (e.g. a subject)."""
    return key if _BARE_KEY.match(key) else json.dumps(key)


def render_block(items: Mapping[str, ConfValue], depth: int = 0) -> list[str]:
    """Lines of a config block: its plain entries first, then its nested blocks."""
    pad = "  " * depth
    lines = [
        f"{pad}{conf_key(k)}: {conf_value(v)}"
        for k, v in items.items()
        if not isinstance(v, Mapping)
    ]
    for key, value in items.items():
        if isinstance(value, Mapping):
            lines += [f"{pad}{conf_key(key)} {{", *render_block(value, depth + 1), f"{pad}}}"]
    return lines


def exprun_config(
    *,
    port: int,
    monitor_port: int,
    store_dir: Path,
    member: ClusterMember | None,
    tls: ServerTls | None = None,
    authorization: Mapping[str, ConfValue] | None = None,
) -> dict[str, ConfValue]:
    """What exprun itself sets: loopback ports, high limits, JetStream, the cluster, and TLS
    (clients and routes alike) and the login when the server is secured."""
    config: dict[str, ConfValue] = {
        "listen": f"127.0.0.1:{port}",
        "http": f"127.0.0.1:{monitor_port}",
        "max_payload": MAX_PAYLOAD,
        "max_pending": MAX_PENDING,
        "logtime": True,
    }
    if member is not None:
        config["server_name"] = member.server_name
    if tls is not None:
        config["tls"] = tls.block()
    if authorization is not None:
        config["authorization"] = dict(authorization)
    config["jetstream"] = {
        "store_dir": str(store_dir),
        "max_memory_store": MAX_MEMORY_STORE,
        "max_file_store": MAX_FILE_STORE,
    }
    if member is not None:
        config["cluster"] = {
            "name": CLUSTER_NAME,
            "listen": f"127.0.0.1:{member.route_port}",
            "routes": [f"nats-route://127.0.0.1:{p}" for p in member.peer_route_ports],
        }
        if tls is not None:
            config["cluster"]["tls"] = tls.block()
    return config


def render_config(
    *,
    port: int,
    monitor_port: int,
    store_dir: Path,
    overrides: Mapping[str, ConfValue],
    member: ClusterMember | None = None,
    tls: ServerTls | None = None,
    authorization: Mapping[str, ConfValue] | None = None,
) -> str:
    """The server config: exprun's settings with the overrides merged in.

    Overrides may be flat ("write_deadline"), dotted ("jetstream.max_memory_store") or nested
    ({"jetstream": {...}}); a nested block merges into exprun's block of that name.
    """
    base = exprun_config(
        port=port,
        monitor_port=monitor_port,
        store_dir=store_dir,
        member=member,
        tls=tls,
        authorization=authorization,
    )
    return "\n".join(render_block(merged(base, nested_overrides(overrides)))) + "\n"
