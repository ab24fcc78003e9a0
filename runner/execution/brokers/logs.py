"""Broker log tails, for error messages and post-mortems."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from runner.execution.brokers.errors import BrokerStartError

# Lines of the broker's own log that go into a BrokerStartError message.
ERROR_TAIL_LINES = 20


def tail_file(path: Path, lines: int) -> list[str]:
    """Last lines of a text file (reads at most the last 256 KiB)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:] if lines > 0 else []


def tail_files(paths: Sequence[Path], lines: int, *, heading: str = "") -> str:
    """Tails of several logs; each headed by its file name when more than one has content.

    heading (e.g. a node's name) goes before each file name, and then every tail gets a head.
    """
    tails = [(p, tail_file(p, lines)) for p in paths]
    tails = [(p, t) for p, t in tails if t]
    if len(tails) == 1 and not heading:
        return "\n".join(tails[0][1])
    prefix = f"{heading} " if heading else ""
    return "\n".join(f"==> {prefix}{p.name} <==\n" + "\n".join(t) for p, t in tails)


def start_error(what: str, log_files: Sequence[Path], *, heading: str = "") -> BrokerStartError:
    """A BrokerStartError saying what failed, followed by the broker's own log tail."""
    return with_log_tail(what, tail_files(log_files, ERROR_TAIL_LINES, heading=heading))


def with_log_tail(what: str, tail: str) -> BrokerStartError:
    """A BrokerStartError saying what failed, followed by a log tail (if any)."""
    body = f"\n--- broker log (last {ERROR_TAIL_LINES} lines) ---\n{tail}" if tail else ""
    return BrokerStartError(what + body)


def is_port_conflict(log_files: Sequence[Path]) -> bool:
    """True if the broker log says a port was taken (a free-port race worth retrying)."""
    text = tail_files(log_files, 200).lower()
    return "address already in use" in text
