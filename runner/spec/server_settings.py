"""Check the broker-side settings of a spec (`server:`) against catalogs taken from the brokers:
Kafka's broker ConfigDef (names and types) and the option names nats-server's parser takes."""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.problems import Loc
from schemas.resolve import lookup

ServerProblem = tuple[Loc, str]

# Both are checked against the real brokers by tests/spec/test_server_settings.py; the Kafka
# one is generated from the broker's jars by tests/spec/KafkaServerConfigs.java.
KAFKA_CATALOG_FILE = "kafka_server_configs.json"
NATS_CATALOG_FILE = "nats_server_options.json"

_LISTENERS = "exprun sets up the embedded node's listeners"
_QUORUM = "exprun sets up the nodes' roles and the controller quorum"
_DATA = "exprun keeps the broker's data in its own work dir"
# server.properties entries the embedded Kafka (runner/execution/brokers/kafka.py) is built on.
KAFKA_MANAGED: Mapping[str, str] = {
    "process.roles": _QUORUM,
    "node.id": _QUORUM,
    "broker.id": _QUORUM,
    "controller.quorum.voters": _QUORUM,
    "controller.quorum.bootstrap.servers": _QUORUM,
    "listeners": _LISTENERS,
    "advertised.listeners": _LISTENERS,
    "inter.broker.listener.name": _LISTENERS,
    # Kafka refuses it together with inter.broker.listener.name, which exprun sets.
    "security.inter.broker.protocol": _LISTENERS,
    "controller.listener.names": _LISTENERS,
    "listener.security.protocol.map": _LISTENERS,
    "log.dirs": _DATA,
    "log.dir": _DATA,
    "metadata.log.dir": _DATA,
}
# Per-listener overrides (listener.name.<listener>.<config>) of listeners exprun names itself.
KAFKA_MANAGED_PREFIXES: Mapping[str, str] = {"listener.name.": _LISTENERS}

_PORTS = "exprun picks the server's ports"
_MONITOR = "exprun runs the monitoring endpoint and polls it"
_LOG = "exprun reads the server's log from its output"
_STORE = "exprun keeps JetStream's store in its own work dir"
_CLUSTER = "exprun sets up clustering"
# nats-server options, as block paths, that the embedded server (brokers/nats.py) is built on.
NATS_MANAGED: Mapping[str, str] = {
    "listen": _PORTS,
    "host": _PORTS,
    "net": _PORTS,
    "port": _PORTS,
    "http": _MONITOR,
    "http_port": _MONITOR,
    "monitor_port": _MONITOR,
    "https": _MONITOR,
    "https_port": _MONITOR,
    "http_base_path": _MONITOR,
    "server_name": "exprun names the server",
    "log_file": _LOG,
    "logfile": _LOG,
    "syslog": _LOG,
    "remote_syslog": _LOG,
    "store_dir": _STORE,
    "storedir": _STORE,
    "jetstream.store_dir": _STORE,
    "jetstream.store": _STORE,
    "jetstream.storedir": _STORE,
    "jetstream.enabled": "exprun runs JetStream",
    "jetstream.enable": "exprun runs JetStream",
    "cluster.name": _CLUSTER,
    "cluster.listen": _CLUSTER,
    "cluster.host": _CLUSTER,
    "cluster.net": _CLUSTER,
    "cluster.port": _CLUSTER,
    "cluster.routes": _CLUSTER,
}
# Options exprun writes by default under these names: any other spelling of one would be a
# second entry in the config, and nats-server would take either of the two.
NATS_EXPRUN_DEFAULTS = frozenset(
    {
        "max_payload",
        "max_pending",
        "logtime",
        "jetstream.max_memory_store",
        "jetstream.max_file_store",
    }
)
# Blocks the server would also take as a single value (e.g. `jetstream: enabled`).
NATS_BLOCK_ONLY: Mapping[str, str] = {
    "jetstream": "exprun turns JetStream on itself; set its options as a block, "
    "e.g. {max_memory_store: 1GB}",
}

_NATS_BLOCK_KINDS = frozenset({"block", "map"})
_NATS_CHECKED_BLOCK_KINDS = frozenset({"block", "value_or_block"})
_NATS_NESTING_KINDS = frozenset({"block", "map", "value_or_block", "value_or_map"})
_JAVA_BLANKS = "".join(map(chr, range(0x21)))  # what Java's String.trim() strips
_JAVA_INTEGER = re.compile(r"[+-]?[0-9]+")
_JAVA_DOUBLE = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+)[fFdD]?)"
)
_JAVA_CLASS = re.compile(r"(?:[^\W\d]|\$)[\w$]*(?:\.(?:[^\W\d]|\$)[\w$]*)*")
# Java's literals: a YAML true or null can name no class (Kafka looks classes up by name).
_JAVA_LITERALS = frozenset({"true", "false", "null"})
_INTEGER_BITS = {"SHORT": 16, "INT": 32, "LONG": 64}


@dataclass(frozen=True)
class KafkaCatalog:
    """Kafka's broker configs: name -> ConfigDef type (INT, LONG, STRING, LIST, ...)."""

    kafka_version: str
    source: str
    configs: Mapping[str, str]


@dataclass(frozen=True)
class NatsBlock:
    """The options of one nats-server config block: name -> kind, and alias -> canonical name."""

    options: Mapping[str, str]
    canonical: Mapping[str, str]


@dataclass(frozen=True)
class NatsCatalog:
    """nats-server's option names per block path ("" top level, "jetstream", ...)."""

    nats_server_version: str
    blocks: Mapping[str, NatsBlock]


def _read_json(name: str) -> Any:
    return json.loads(importlib.resources.files("runner.spec").joinpath(name).read_text())


@functools.cache
def kafka_catalog() -> KafkaCatalog:
    """The shipped catalog of Kafka broker configs."""
    data = _read_json(KAFKA_CATALOG_FILE)
    return KafkaCatalog(data["kafka_version"], data["source"], data["configs"])


@functools.cache
def nats_catalog() -> NatsCatalog:
    """The shipped catalog of nats-server options."""
    data = _read_json(NATS_CATALOG_FILE)
    blocks = {
        path: NatsBlock(
            block["options"],
            {alias: names[0] for names in block["aliases"] for alias in names},
        )
        for path, block in data["blocks"].items()
    }
    return NatsCatalog(data["nats_server_version"], blocks)


def _key_loc(key: object) -> str | int:
    return key if isinstance(key, str | int) and not isinstance(key, bool) else str(key)


def _unknown(key: str, allowed: list[str], what: str) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}: not {what}"


# --- Kafka -----------------------------------------------------------------------------------


def kafka_server_problems(server: Mapping[str, Any]) -> list[ServerProblem]:
    """Problems of a Kafka broker's server.properties entries, located within `server`; values
    are type-checked as exprun writes them (true/false, str()), non-scalars left to the model."""
    catalog = kafka_catalog()
    allowed = sorted(name for name in catalog.configs if _kafka_managed(name) is None)
    found: list[ServerProblem] = []
    for key, value in server.items():
        name, loc = str(key), (_key_loc(key),)
        managed = _kafka_managed(name)
        if managed is not None:
            found.append((loc, f"{name} is set by exprun ({managed})"))
        elif name not in catalog.configs:
            what = f"a broker config of Kafka {catalog.kafka_version}"
            found.append((loc, _unknown(name, allowed, what)))
        else:
            problem = _kafka_value_problem(catalog.configs[name], value)
            if problem is not None:
                found.append((loc, problem))
    return found


def _kafka_managed(name: str) -> str | None:
    if name in KAFKA_MANAGED:
        return KAFKA_MANAGED[name]
    for prefix, reason in KAFKA_MANAGED_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return None


def config_text(value: object) -> str:
    """A YAML value as broker configs read it: booleans as true / false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _kafka_value_problem(kind: str, value: Any) -> str | None:
    """Why ConfigDef.parseType would refuse `value` as written to server.properties, if it would."""
    if not isinstance(value, str | int | float):
        return None  # not a scalar: the spec model's own field error
    text = config_text(value)
    trimmed = text.strip(_JAVA_BLANKS)
    if kind in _INTEGER_BITS:
        bound = 2 ** (_INTEGER_BITS[kind] - 1)
        if not _JAVA_INTEGER.fullmatch(trimmed):
            return f"expects an integer (Kafka type {kind})"
        if not -bound <= int(trimmed) < bound:
            return f"expects an integer from {-bound} to {bound - 1} (Kafka type {kind})"
    elif kind == "DOUBLE" and not _JAVA_DOUBLE.fullmatch(trimmed):
        return "expects a number (Kafka type DOUBLE)"
    elif kind == "BOOLEAN" and trimmed.lower() not in ("true", "false"):
        return "expects true or false (Kafka type BOOLEAN)"
    elif kind == "CLASS" and (
        not _JAVA_CLASS.fullmatch(trimmed) or _JAVA_LITERALS.intersection(trimmed.split("."))
    ):
        return "expects a Java class name (Kafka type CLASS)"
    # STRING, LIST and PASSWORD take any text.
    return None


# --- NATS ------------------------------------------------------------------------------------


def nats_server_problems(server: Mapping[str, Any]) -> list[ServerProblem]:
    """Problems of a nats-server's options, located within `server` (blocks as nested mappings):
    names and block shapes only, as nats-server checks the values itself."""
    found: list[ServerProblem] = []
    _nats_block_problems(server, (), (), found)
    return found


def _nats_block_problems(
    settings: Mapping[str, Any], path: tuple[str, ...], loc: Loc, found: list[ServerProblem]
) -> None:
    catalog = nats_catalog()
    block = catalog.blocks[".".join(path)]
    prefix = "".join(f"{part}." for part in path)
    allowed = sorted(name for name in block.options if prefix + name not in NATS_MANAGED)
    written: dict[str, str] = {}  # canonical option -> the name it was written as
    for key, value in settings.items():
        name = str(key)
        # nats-server matches option names case-insensitively.
        lowered = name.lower()
        here = (*loc, _key_loc(key))
        if prefix + lowered in NATS_MANAGED:
            found.append((here, f"{name} is set by exprun ({NATS_MANAGED[prefix + lowered]})"))
            continue
        kind = block.options.get(lowered)
        first, dot, rest = name.partition(".")
        if kind is None and dot and block.options.get(first.lower()) in _NATS_NESTING_KINDS:
            found.append((here, f"write it as a block: {first}: {{{rest}: ...}}"))
            continue
        if kind is None:
            where = f"the {'.'.join(path)} block" if path else "the top level"
            what = f"a nats-server {catalog.nats_server_version} option at {where}"
            found.append((here, _unknown(name, allowed, what)))
            continue
        canonical = block.canonical.get(lowered, lowered)
        if canonical in written:
            found.append(
                (here, f"{name} and {written[canonical]} are the same option: set it once")
            )
            continue
        written[canonical] = name
        if prefix + canonical in NATS_EXPRUN_DEFAULTS and name != canonical:
            found.append(
                (
                    here,
                    f"write {canonical} (nats-server reads {name} as {canonical}, which exprun "
                    "sets by default; with both the server takes either)",
                )
            )
            continue
        problem = _nats_shape_problem(prefix + canonical, kind, value)
        if problem is not None:
            found.append((here, problem))
        elif isinstance(value, Mapping) and kind in _NATS_CHECKED_BLOCK_KINDS:
            _nats_block_problems(value, (*path, canonical), here, found)


def _nats_shape_problem(option: str, kind: str, value: Any) -> str | None:
    """Why `value` has the wrong shape (block or single value) for the option, if it has."""
    is_block = isinstance(value, Mapping)
    if option in NATS_BLOCK_ONLY and not is_block:
        return f"expects a block of options: {NATS_BLOCK_ONLY[option]}"
    if kind in _NATS_BLOCK_KINDS and not is_block:
        written = "a list" if isinstance(value, list) else "a single value"
        return f"expects a block of options, not {written}"
    if kind == "value" and is_block:
        return "expects a single value, not a block"
    return None


def server_setting_problems(data: Any) -> list[tuple[Loc, str]]:
    """Each broker's `server` entries, and each variant's, checked against the broker's own
    option catalog (located, on the data as written)."""
    found: list[tuple[Loc, str]] = []
    brokers = lookup(data, "brokers")
    variants = lookup(data, "variants")
    for name, broker in brokers.items() if isinstance(brokers, Mapping) else ():
        kind = broker.get("type") if isinstance(broker, Mapping) else None
        check = {"kafka": kafka_server_problems, "nats": nats_server_problems}.get(str(kind))
        if check is None:
            continue
        places: list[tuple[str, ...]] = [("brokers", str(name))]
        for variant in variants if isinstance(variants, Mapping) else ():
            places.append(("variants", str(variant), "brokers", str(name)))
        for place in places:
            server = lookup(data, *place, "server")
            if isinstance(server, Mapping):
                found += [((*place, "server", *loc), message) for loc, message in check(server)]
    return found
