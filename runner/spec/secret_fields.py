"""Settings that hold secrets: a spec gives them through `${ENV}`, never written in the file."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from schemas.problems import Loc

NATS_SECRETS = ("password", "token", "nkey_seed")
KAFKA_SECRETS = (
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
)
KAFKA_SIDES = ("client", "producer", "consumer")


def written_secrets(data: Mapping[str, Any], secrets: frozenset[str]) -> list[tuple[Loc, str]]:
    """Secret settings whose value did not come from the environment, located."""
    problems = []
    for loc, value in _secret_values(data):
        if not isinstance(value, str) or value not in secrets:
            problems.append(
                (
                    loc,
                    f"{loc[-1]} is a secret: give it as ${{ENV_VAR}} (read from the environment "
                    "when the spec loads, masked in every output), not in the spec's text",
                )
            )
    return problems


def _secret_values(data: Mapping[str, Any]) -> Iterator[tuple[Loc, object]]:
    places: list[tuple[Loc, object]] = [(("brokers",), data.get("brokers"))]
    variants = data.get("variants")
    if isinstance(variants, Mapping):
        places += [
            (("variants", name, "brokers"), variant.get("brokers"))
            for name, variant in variants.items()
            if isinstance(variant, Mapping)
        ]
    for where, brokers in places:
        if not isinstance(brokers, Mapping):
            continue
        for name, broker in brokers.items():
            if not isinstance(broker, Mapping):
                continue
            security = broker.get("security")
            if isinstance(security, Mapping):
                for key in NATS_SECRETS:
                    if key in security:
                        yield (*where, name, "security", key), security[key]
            for side in KAFKA_SIDES:
                properties = broker.get(side)
                if isinstance(properties, Mapping):
                    for key in KAFKA_SECRETS:
                        if key in properties:
                            yield (*where, name, side, key), properties[key]
