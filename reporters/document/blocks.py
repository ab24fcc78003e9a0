"""Format-neutral blocks of a report: headings, text, facts, bullets, tables, findings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Text:
    text: str
    style: Literal["plain", "strong", "note", "warning"] = "plain"


@dataclass(frozen=True)
class Facts:
    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    legend: str | None = None


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Finding:
    title: str
    severity: Literal["warning", "info"]
    lines: list[tuple[str, str]]


@dataclass(frozen=True)
class Findings:
    items: list[Finding]


Block = Heading | Text | Facts | Bullets | Table | Findings


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Document:
    title: str
    intro: list[Block]
    sections: list[Section]


def numeric_columns(headers: Sequence[str], text_columns: int = 3) -> list[bool]:
    """Right-aligned (numeric) columns: all after the first `text_columns`, but verdicts."""
    flags = [i >= text_columns for i in range(len(headers))]
    for i, header in enumerate(headers):
        if header in ("Verdict", "Test", "Result", "Significance"):
            flags[i] = False
    return flags
