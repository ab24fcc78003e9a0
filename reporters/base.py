"""The reporter plugin contract (entry-point group `exprun.reporters`).

A reporter is a class, instantiated without arguments, with a `name` and a pure `render`
that turns a computed Report into files: {file name: content}. Writing them is the caller's
job, so reporters do no I/O and a third-party package can add one by registering a class.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, runtime_checkable

from schemas.report import Report

REPORTER_GROUP = "exprun.reporters"

Files = dict[str, str | bytes]


@runtime_checkable
class Reporter(Protocol):
    name: str

    def render(self, report: Report) -> Files:
        """File name (relative to the run folder) -> text or bytes."""
        ...


def installed_reporters() -> dict[str, EntryPoint]:
    """Every reporter installed in this environment, by name."""
    return {ep.name: ep for ep in entry_points(group=REPORTER_GROUP)}
