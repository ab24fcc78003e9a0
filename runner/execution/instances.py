"""The broker instances a run keeps alive: one per broker and distinct broker-side setting.

Variants may differ in `nodes`, `server` and `jvm`; each distinct setting of an embedded broker
is its own instance (a single node or a cluster), started before the first trial and kept for
the whole run, so that trials stay interleaved. Client-side settings (producer, consumer,
topic, stream, ...) are per trial and share an instance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

from runner.errors import ExprunError
from runner.execution.brokers import (
    BrokerStartError,
    RunningBroker,
    connect_external,
    estimated_memory_mb,
    start_kafka,
    start_nats,
)
from runner.execution.brokers.access import external_access
from runner.execution.plan import Plan, flat_settings
from runner.spec.server_settings import config_text
from schemas.spec import KafkaBroker, NatsBroker, NatsSecurity

BrokerConfig = KafkaBroker | NatsBroker


class BrokerUnavailable(ExprunError):
    """A broker could not be started or reached before the run (exit code 3)."""


class NotEnoughMemory(ExprunError):
    """The plan's broker instances would not fit in the machine's memory (exit code 3)."""


def setting_key(config: BrokerConfig) -> str:
    """What makes an instance: the broker's own settings, not the clients'."""
    jvm = config.jvm.model_dump(mode="json") if isinstance(config, KafkaBroker) else None
    security = config.security.model_dump(mode="json") if config.embedded else None
    return json.dumps(
        [config.type, config.endpoint, config.nodes, config.server, jvm, security], sort_keys=True
    )


@dataclass(frozen=True)
class Instance:
    """One embedded broker (or cluster) of the run, or one external broker."""

    broker: str  # the spec's broker name
    label: str  # the name, plus the variants using it when the broker has several instances
    config: BrokerConfig
    variants: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return self.broker, setting_key(self.config)

    @property
    def memory_mb(self) -> int:
        """Estimated memory of its nodes (0 for an external broker)."""
        config = self.config
        if not config.embedded:
            return 0
        heap = config.jvm.heap if isinstance(config, KafkaBroker) else None
        return estimated_memory_mb(config.type, config.nodes, heap, config.server)

    def describe(self) -> str:
        """Its settings in a line: nodes, server entries, heap."""
        config = self.config
        if not config.embedded:
            return f"external at {config.endpoint}"
        parts = [f"{config.nodes} node{'s' if config.nodes > 1 else ''}"]
        security = config.security
        if security.tls_on if isinstance(security, NatsSecurity) else security.tls:
            parts.append("TLS")
        login = security.auth if isinstance(security, NatsSecurity) else security.sasl
        if login != "none":
            parts.append(f"login {login}")
        parts += [f"{key}={value}" for key, value in flat_settings(config.server)]
        if isinstance(config, KafkaBroker):
            if config.jvm.heap:
                parts.append(f"heap {config.jvm.heap}")
            parts += config.jvm.options
        return ", ".join(parts)


def plan_instances(plan: Plan, brokers: Sequence[str] | None = None) -> list[Instance]:
    """The instances the plan's trials need (only of `brokers`, when given), in spec order."""
    found: dict[tuple[str, str], list[str]] = {}
    configs: dict[tuple[str, str], BrokerConfig] = {}
    for config in plan.cells:
        name = config.cell.broker
        if brokers is not None and name not in brokers:
            continue
        key = (name, setting_key(config.broker))
        configs.setdefault(key, config.broker)
        variants = found.setdefault(key, [])
        if config.cell.variant not in variants:
            variants.append(config.cell.variant)
    per_broker: dict[str, int] = {}
    for name, _ in found:
        per_broker[name] = per_broker.get(name, 0) + 1
    return [
        Instance(
            broker=name,
            label=name if per_broker[name] == 1 else f"{name}[{', '.join(variants)}]",
            config=configs[name, key],
            variants=tuple(variants),
        )
        for (name, key), variants in found.items()
    ]


def available_memory_mb() -> int:
    return int(psutil.virtual_memory().available // (1024 * 1024))


def render_instances(instances: Sequence[Instance]) -> str:
    """The instances a run keeps alive, with their settings and memory estimates."""
    lines = ["broker instances (each kept alive for the whole run):"]
    for instance in instances:
        memory = f" - ~{instance.memory_mb:,} MB" if instance.memory_mb else ""
        lines.append(f"  {instance.label}: {instance.describe()}{memory}")
    needed = sum(instance.memory_mb for instance in instances)
    if needed:
        total = psutil.virtual_memory().total // (1024 * 1024)
        lines.append(f"  total ~{needed:,} MB (this machine has {total:,} MB)")
    return "\n".join(lines)


def check_memory(instances: Sequence[Instance], available_mb: int | None = None) -> None:
    """Refuse, before anything starts, instances that would not fit in the memory available."""
    needed = sum(instance.memory_mb for instance in instances)
    if available_mb is None:
        available_mb = available_memory_mb()
    if needed <= available_mb:
        return
    lines = [f"  {i.label}: ~{i.memory_mb:,} MB ({i.describe()})" for i in instances if i.memory_mb]
    raise NotEnoughMemory(
        f"the broker instances this run keeps alive need ~{needed:,} MB, but the machine has "
        f"{available_mb:,} MB available:\n" + "\n".join(lines) + "\nrun fewer at once "
        "(--broker / --variant), or give them fewer nodes or a smaller jvm.heap"
    )


def start_instance(instance: Instance, others: Sequence[str] = ()) -> RunningBroker:
    """The instance started embedded (every node, the cluster formed), or reached."""
    config = instance.config
    try:
        if not config.embedded:
            return connect_external(config.type, config.endpoint, access=external_access(config))
        if isinstance(config, KafkaBroker):
            return start_kafka(
                nodes=config.nodes,
                overrides=kafka_server_properties(config.server),
                heap=config.jvm.heap,
                jvm_opts=config.jvm.options,
                telemetry=config.telemetry.enabled,
                security=config.security,
            )
        return start_nats(nodes=config.nodes, overrides=config.server, security=config.security)
    except BrokerStartError as error:
        hint = ""
        if others:
            flags = " ".join(f"--broker {other}" for other in others)
            hint = f" (to run the rest of the spec without it: {flags})"
        why = f"broker {instance.label!r} ({config.type}): {error}{hint}"
        raise BrokerUnavailable(why) from None


def kafka_server_properties(server: Mapping[str, object]) -> dict[str, str]:
    """server.properties values as Kafka reads them (YAML booleans as true / false)."""
    return {key: config_text(value) for key, value in server.items()}
