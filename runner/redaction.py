"""Keep secrets from `${ENV}` references out of every output."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_data(data: Any, secrets: Iterable[str]) -> Any:
    """The same structure with every string masked; keys included."""
    secrets = list(secrets)
    if not secrets:
        return data
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, dict):
        return {redact_data(k, secrets): redact_data(v, secrets) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(redact_data(v, secrets) for v in data)
    return data
