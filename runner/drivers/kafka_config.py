"""Check librdkafka properties with librdkafka itself, without a broker."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Literal

from confluent_kafka import Consumer, KafkaException, Producer

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
    conf: dict[str, object] = {str(k): _librdkafka_value(v) for k, v in properties.items()}
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


def _librdkafka_value(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _other(role: Role) -> str:
    return "consumer" if role == "producer" else "producer"


def _offending(message: str) -> str | None:
    match = _PROPERTY_IN_MESSAGE.search(message)
    return match.group(1) if match else None
