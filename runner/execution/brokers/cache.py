"""Artifacts fetched with Maven once into ${XDG_CACHE_HOME:-~/.cache}/exprun, then reused.

Concurrent exprun processes fetch each artifact once: they serialise on a file lock, fill a
scratch dir, and rename it into place with a marker that says it is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from runner.execution.brokers.errors import BrokerStartError
from runner.execution.brokers.logs import tail_files

COMPLETE_MARKER = ".exprun-complete"
MVN_TIMEOUT = 900.0
MVN_HINT = "apt-get install maven"
MVN_LOG_LINES = 20


def cache_root() -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/exprun."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "exprun"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so concurrent exprun processes fetch an artifact only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_complete(directory: Path, key: str) -> bool:
    """True if directory was filled completely for key (its marker holds the key)."""
    try:
        return (directory / COMPLETE_MARKER).read_text().strip() == key
    except OSError:
        return False


def fill_once(target: Path, key: str, fill: Callable[[Path], None]) -> Path:
    """target, filled by fill(scratch dir) unless already complete for key; returns target.

    fill raises to fail (the scratch dir is removed); a changed key refills. The lock and
    scratch dir live next to target.
    """
    if is_complete(target, key):
        return target
    with file_lock(target.parent / ".lock"):
        # Another process may have finished while we waited for the lock.
        if is_complete(target, key):
            return target
        scratch = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            fill(scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        (scratch / COMPLETE_MARKER).write_text(key + "\n")
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    return target


def find_mvn(purpose: str, alternative: str) -> Path:
    """`mvn` from MAVEN_HOME or PATH; else BrokerStartError saying why exprun needs it."""
    maven_home = os.environ.get("MAVEN_HOME")
    if maven_home and os.access(Path(maven_home) / "bin" / "mvn", os.X_OK):
        return Path(maven_home) / "bin" / "mvn"
    on_path = shutil.which("mvn")
    if on_path is None:
        raise BrokerStartError(
            f"Maven (`mvn`) not found: exprun fetches {purpose} from Maven Central with it "
            f"(once, then from its cache). Install it, e.g. `{MVN_HINT}`, or {alternative}."
        )
    return Path(on_path)


def mvn_failure(argv: Sequence[str], code: int | None, log: Path) -> str:
    """How a Maven run failed: the command and its log tail."""
    why = "timed out" if code is None else f"failed (exit {code})"
    return (
        f"Maven {why}: {' '.join(argv)}\n"
        f"--- mvn output (last {MVN_LOG_LINES} lines, full log {log}) ---\n"
        f"{tail_files([log], MVN_LOG_LINES)}"
    )
