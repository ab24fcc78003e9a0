"""Sizes, durations and rates as written in specs (`1KiB`, `250ms`, `unlimited`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
DURATION_UNITS: dict[str, float] = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Sub-second units divide by an exact integer, so that 100us is exactly 0.0001.
_PER_SECOND = {"us": 1_000_000, "ms": 1_000}

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*([A-Za-z]+)?\s*$")
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$"
DURATION_PATTERN = r"^\s*\d+(\.\d+)?(e[+-]?\d+)?\s*(us|ms|s|m|h)\s*$"


def _split(text: str, what: str, units: dict[str, Any]) -> tuple[float, str | None]:
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a {what}; write e.g. {_example(what)}")
    number, unit = float(match.group(1)), match.group(2)
    if unit is not None and unit not in units:
        raise ValueError(f"unknown {what} unit {unit!r} in {text!r}; use one of {', '.join(units)}")
    return number, unit


def _example(what: str) -> str:
    return "1KiB, 100MB" if what == "size" else "250ms, 2s"


def parse_size(value: object) -> int:
    """Bytes from `1KiB`, `100MB` or a plain number of bytes."""
    if isinstance(value, str):
        number, unit = _split(value, "size", SIZE_UNITS)
        number *= SIZE_UNITS[unit or "B"]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError("a size must be a number of bytes or a string like 1KiB")
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    if number < 0:
        raise ValueError("a size cannot be negative")
    return int(number)


def parse_duration(value: object) -> float:
    """Seconds from `250ms`, `2s`, `1m`; a bare number is only accepted for zero."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a string like 250ms or 2s")
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        raise ValueError(
            f"{value!r} has no unit; write e.g. {value}ms or {value}s (units: us, ms, s, m, h)"
        )
    if not isinstance(value, str):
        raise ValueError("a duration must be a string like 250ms or 2s")
    number, unit = _split(value, "duration", DURATION_UNITS)
    if unit is None:
        if number == 0:
            return 0.0
        raise ValueError(f"{value!r} has no unit; write e.g. {value}ms or {value}s")
    if unit in _PER_SECOND:
        return number / _PER_SECOND[unit]
    return number * DURATION_UNITS[unit]


def parse_rate(value: object) -> float | None:
    """Messages per second, or None for `unlimited`."""
    if value is None or value == "unlimited":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("rate must be 'unlimited' or a number of messages per second")
    if isinstance(value, str):
        text = value.strip().removesuffix("/s")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(
                f"rate {value!r} must be 'unlimited' or messages per second (e.g. 5000)"
            ) from None
    else:
        number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError("rate must be positive (or 'unlimited')")
    return number


def parse_rate_range(value: object) -> tuple[float, float]:
    """(low, high) messages per second from `1000/s..200000/s`."""
    if not isinstance(value, str) or value.count("..") != 1:
        raise ValueError("a rate range is written LOW..HIGH, e.g. 1000/s..200000/s")
    low_text, high_text = value.split("..")
    low, high = parse_rate(low_text.strip()), parse_rate(high_text.strip())
    if low is None or high is None:
        raise ValueError("both ends of a rate range are rates, not 'unlimited'")
    if low >= high:
        raise ValueError(f"the lower bound {low:g}/s must be below the upper bound {high:g}/s")
    return low, high


def format_size(size: int) -> str:
    """The shortest exact spelling of a size (1024 -> '1KiB')."""
    for unit in ("GiB", "MiB", "KiB", "GB", "MB", "KB"):
        if size and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return f"{size}B"


def format_duration(seconds: float) -> str:
    """The most readable spelling that parses back to exactly `seconds` (0.25 -> '250ms')."""
    if seconds == 0:
        return "0s"
    for unit in ("h", "m", "s", "ms", "us"):
        scale = DURATION_UNITS[unit]
        if seconds >= scale:
            text = f"{_in_unit(seconds, unit):g}{unit}"
            if parse_duration(text) == seconds:
                return text
            break
    return f"{seconds!r}s"


def _in_unit(seconds: float, unit: str) -> float:
    if unit in ("h", "m", "s"):
        return seconds / DURATION_UNITS[unit]
    return seconds * _PER_SECOND[unit]


def format_rate(rate: float | None) -> str:
    return "unlimited" if rate is None else f"{rate:g}/s"


def format_rate_range(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}/s..{bounds[1]:g}/s"


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "bytes, or a size with unit B, KB, MB, GB, KiB, MiB, GiB",
        }
    ),
]
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    # Written back as text so that a dumped spec or config validates again.
    PlainSerializer(lambda seconds: format_duration(seconds), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [{"const": 0}, {"type": "string", "pattern": DURATION_PATTERN}],
            "description": "a duration with unit us, ms, s or m (e.g. 250ms, 2s)",
        }
    ),
]
Rate = Annotated[
    float | None,
    BeforeValidator(parse_rate),
    WithJsonSchema(
        {
            "anyOf": [
                {"const": "unlimited"},
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*/s\s*$"},
            ],
            "description": "messages per second (5000 or 5000/s), or 'unlimited'",
        }
    ),
]
RateRange = Annotated[
    tuple[float, float],
    BeforeValidator(parse_rate_range),
    PlainSerializer(format_rate_range, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*\d+(\.\d+)?(/s)?\s*\.\.\s*\d+(\.\d+)?(/s)?\s*$",
            "description": "LOW..HIGH messages per second, e.g. 1000/s..200000/s",
        }
    ),
]


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


PositiveDuration = Annotated[
    float,
    BeforeValidator(_positive_duration),
    PlainSerializer(lambda seconds: format_duration(seconds), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "a duration with unit us, ms, s or m (e.g. 30s, 2m)",
        }
    ),
]


def parse_share(value: object) -> float:
    """A share from 0 to 1, written as a fraction (0.8) or a percentage ("80%")."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage; write e.g. 80%") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        share = float(value)
    else:
        raise ValueError(f"{value!r} is not a share; write e.g. 80% or 0.8")
    if not 0 <= share <= 1:
        raise ValueError(f"{value!r} is not between 0% and 100%")
    return share


def format_share(share: float) -> str:
    return f"{share * 100:g}%"


Share = Annotated[
    float,
    BeforeValidator(parse_share),
    PlainSerializer(format_share, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
            ],
            "description": "a share: a percentage (80%) or a fraction from 0 to 1 (0.8)",
        }
    ),
]


@dataclass(frozen=True)
class BacklogAmount:
    """A backlog as written: a number of messages, or a size in bytes."""

    messages: int | None = None
    bytes: int | None = None

    def in_messages(self, message_size: int) -> int:
        """Messages it takes (a size is rounded up to whole messages)."""
        if self.messages is not None:
            return self.messages
        assert self.bytes is not None
        return -(-self.bytes // message_size)

    def __str__(self) -> str:
        return (
            f"{self.messages:,} msgs" if self.messages is not None else format_size(self.bytes or 0)
        )


def parse_backlog(value: object) -> BacklogAmount:
    """`200000` (messages) or `100MB` (a size with its unit)."""
    if isinstance(value, BacklogAmount):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("a backlog must be more than 0 messages")
        return BacklogAmount(messages=value)
    if isinstance(value, str):
        number, unit = _split(value, "size", SIZE_UNITS)
        if unit is None:
            if not number.is_integer() or number <= 0:
                raise ValueError(f"{value!r} is not a positive whole number of messages")
            return BacklogAmount(messages=int(number))
        size = parse_size(value)
        if size <= 0:
            raise ValueError("a backlog must be larger than 0 bytes")
        return BacklogAmount(bytes=size)
    raise ValueError("a backlog is a number of messages (200000) or a size (100MB)")


def _written_backlog(amount: BacklogAmount) -> int | str:
    return amount.messages if amount.messages is not None else format_size(amount.bytes or 0)


Backlog = Annotated[
    BacklogAmount,
    BeforeValidator(parse_backlog),
    PlainSerializer(_written_backlog, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "a number of messages (200000), or a size with its unit (100MB)",
        }
    ),
]
