"""Shared fixtures: real embedded brokers started through exprun's own code, and a leak check.

The session ends in failure if any broker or trial process started by this suite is still
alive: brokers descended from pytest, and anything started under the suite's own TMPDIR (so
processes of other people's concurrent runs are never counted).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator

import psutil
import pytest

from runner.execution.brokers import RunningBroker, start_kafka, start_nats

# Process command-line markers of the broker processes this suite may start.
BROKER_MAINS = ("kafka.Kafka", "kafka.tools.StorageTool")


# Everything this suite starts (exprun runs, their brokers and trial processes) inherits this
# temp dir, so whatever outlives the suite is found even after its parent exited.
SUITE_TMP = tempfile.mkdtemp(prefix="exprun-suite-")
os.environ["TMPDIR"] = SUITE_TMP
tempfile.tempdir = None
# Runs record into the default results store, in the user's data folder: the suite's is its
# own, and a store named in the caller's environment is not the suite's either.
os.environ["XDG_DATA_HOME"] = os.path.join(SUITE_TMP, "data")
os.environ.pop("EXPRUN_STORE", None)


def broker_processes() -> list[psutil.Process]:
    """Live nats-server / Kafka JVM processes descended from this pytest process."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.name() == "nats-server" or any(m in proc.cmdline() for m in BROKER_MAINS):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def suite_processes() -> list[psutil.Process]:
    """Brokers descended from pytest, and any process started under the suite's temp dir."""
    found = {p.pid: p for p in broker_processes()}
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if not proc.environ().get("TMPDIR", "").startswith(SUITE_TMP):
                continue
            # The forkserver and resource tracker of in-process trial runs end with pytest
            # itself, not before.
            if proc.ppid() == os.getpid() and "from multiprocessing." in " ".join(proc.cmdline()):
                continue
            found[proc.pid] = proc
        except psutil.Error:
            continue
    return list(found.values())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: runs real brokers or the exprun CLI end to end (deselect with "
        '-m "not integration" for the fast pure suite)',
    )
    config.addinivalue_line(
        "markers",
        "own_kafka: starts its own Kafka JVM; run first, before the session Kafka exists "
        "(2 cores: never two Kafkas at once)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run own_kafka tests before anything can start the session-scoped Kafka."""
    items.sort(key=lambda item: item.get_closest_marker("own_kafka") is None)


@pytest.fixture
def broker_pids() -> Callable[[], set[int]]:
    """Returns a function giving the pids of this suite's live broker processes."""
    return lambda: {p.pid for p in broker_processes()}


@pytest.fixture(scope="session")
def nats_broker() -> Iterator[RunningBroker]:
    """One embedded NATS server (JetStream on) for the whole session."""
    broker = start_nats()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[RunningBroker]:
    """One embedded single-node KRaft Kafka for the whole session."""
    broker = start_kafka()
    yield broker
    broker.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process started by this suite outlived it (then kill it)."""
    leftovers = suite_processes()
    if leftovers:
        _, leftovers = psutil.wait_procs(leftovers, timeout=5.0)
    if not leftovers:
        return
    lines = [f"  pid {p.pid}: {' '.join(_cmdline(p))[:200]}" for p in leftovers]
    for proc in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "leaked processes", red=True, bold=True)
        reporter.write_line(
            "FAILED: processes started by this test run were still alive at the end "
            "(now killed):\n" + "\n".join(lines),
            red=True,
        )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return ["?"]
