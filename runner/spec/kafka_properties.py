"""Check librdkafka properties with librdkafka itself, without a broker."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, Producer

from schemas.problems import Loc
from schemas.resolve import lookup
from schemas.spec import KAFKA_FILE_SUFFIX, NATS_CONSUMER_KEYS

Role = Literal["producer", "consumer"]
ROLES: tuple[Role, ...] = ("producer", "consumer")
_PROPERTY_IN_MESSAGE = re.compile(r'property:? "?([A-Za-z0-9._-]+)"?')


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def property_problem(role: Role, properties: Mapping[str, object]) -> tuple[str | None, str] | None:
    """(offending property or None, librdkafka's message), or None when librdkafka accepts all."""
    collect = _Collect()
    logger = logging.getLogger(f"exprun.librdkafka.check.{role}")
    logger.propagate = False
    logger.handlers = [collect]
    conf = librdkafka_conf(properties)
    conf["logger"] = logger
    try:
        if role == "producer":
            Producer(conf).poll(0)
        else:
            consumer = Consumer({**conf, "group.id": "exprun-config-check"})
            consumer.poll(0)
            consumer.close()
    except KafkaException as error:
        message = error.args[0].str() if error.args else str(error)
        return _offending(message), message
    except (TypeError, ValueError) as error:
        return None, str(error)
    for message in collect.messages:
        # librdkafka warns, rather than fails, on a property of the other client role.
        if f"is a {_other(role)} property" in message:
            return _offending(message), message.split("]: ", 1)[-1]
    return None


def librdkafka_conf(properties: Mapping[str, object]) -> dict[str, object]:
    """Properties as librdkafka takes them: YAML booleans written as "true" / "false"."""
    return {
        str(key): ("true" if value else "false") if isinstance(value, bool) else value
        for key, value in properties.items()
    }


def _other(role: Role) -> str:
    return "consumer" if role == "producer" else "producer"


def _offending(message: str) -> str | None:
    match = _PROPERTY_IN_MESSAGE.search(message)
    return match.group(1) if match else None


def kafka_property_problems(data: Any) -> list[tuple[Loc, str, bool]]:
    """librdkafka's verdict on each Kafka broker's properties as each variant merges them:
    (where, message, whether at the key) per refused property."""
    found: list[tuple[Loc, str, bool]] = []
    checked: set[tuple[str, str]] = set()
    for broker_loc, role, properties, origin in _kafka_properties(data):
        key = (role, repr(sorted(properties.items())))
        if key in checked:
            continue
        checked.add(key)
        bad = _find_bad_property(role, properties)
        if bad is None:
            continue
        prop, message = bad
        if prop is None:
            found.append(((*broker_loc, role), f"librdkafka: {message}", False))
        else:
            found.append(((*origin[prop], prop), f"librdkafka: {message}", True))
    return found


def _kafka_properties(data: Any) -> Iterator[tuple[Loc, Role, dict[str, object], dict[str, Loc]]]:
    """Each Kafka broker's properties per role as each variant merges them, as written.

    Works on the data as written, so that a field error elsewhere does not hide these; values
    that are not scalars are field errors of their own and are left out. Yields the broker's
    place, the role, the merged properties and, per property, the broker or variant that set it.
    """
    brokers = lookup(data, "brokers")
    variants = lookup(data, "variants")
    names = [str(v) for v in variants] if isinstance(variants, Mapping) else []
    for name, broker in brokers.items() if isinstance(brokers, Mapping) else ():
        if not isinstance(broker, Mapping) or broker.get("type") != "kafka":
            continue
        for variant in names or [""]:
            sources: list[tuple[Loc, Any]] = [(("brokers", name), broker)]
            override = lookup(data, "variants", variant, "brokers", name) if variant else None
            if override is not None:
                sources.append((("variants", variant, "brokers", name), override))
            for role in ROLES:
                properties: dict[str, object] = {}
                origin: dict[str, Loc] = {}
                # `client` properties reach every client: checked as each role takes them.
                for side in ("client", role):
                    for loc, settings in sources:
                        written = lookup(settings, side)
                        for prop, value in written.items() if isinstance(written, Mapping) else ():
                            # A NATS consumer setting is a field error of its own; a file is
                            # checked where the spec's folder is known (schemas.resolve).
                            if (
                                isinstance(value, str | int | float)
                                and prop not in NATS_CONSUMER_KEYS
                                and not str(prop).endswith(KAFKA_FILE_SUFFIX)
                            ):
                                properties[str(prop)], origin[str(prop)] = value, (*loc, side)
                yield ("brokers", name), role, properties, origin


def _find_bad_property(
    role: Role, properties: Mapping[str, object]
) -> tuple[str | None, str] | None:
    problem = property_problem(role, properties)
    if problem is None or problem[0] in properties:
        return problem
    # librdkafka names a property by its canonical name (acks -> request.required.acks).
    for name, value in properties.items():
        alone = property_problem(role, {name: value})
        if alone is not None:
            return name, alone[1]
    return problem
