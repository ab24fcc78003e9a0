"""What the run reads a broker's figures from, and one reading of one node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SourceKind = Literal["nats", "prometheus"]


@dataclass(frozen=True)
class Source:
    """Where one node's figures are read: a NATS monitoring base URL or a /metrics URL."""

    node: int
    kind: SourceKind
    url: str


@dataclass(frozen=True)
class Sample:
    """One reading of one node at a tick (monotonic ns); reading None with the error."""

    at_ns: int
    node: int
    reading: dict[str, float] | None
    error: str | None = None
