"""Broker handle: a started (embedded) or reached (external) broker, and its temp dir.

An embedded broker is one or more BrokerNode processes (see node.py for how they are spawned
and die with exprun). Brokers still running at interpreter exit are stopped by an atexit hook.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runner.execution.brokers.access import PLAIN, ClientAccess
from runner.execution.brokers.errors import BrokerStartError, LeaderUnknown
from runner.execution.brokers.logs import tail_files
from runner.execution.brokers.node import (
    STOP_TIMEOUT,
    BrokerNode,
    nodes_log_tail,
    retire_nodes,
)

# Set to keep a failed or stopped broker's temp dir for post-mortem debugging.
KEEP_DIR_ENV = "EXPRUN_KEEP_BROKER_DIR"
OWNER_FILE = "exprun.owner"


class EmbeddedLauncher(Protocol):
    """What knows how to start, check and query one embedded broker's nodes."""

    @property
    def version(self) -> str | None: ...

    @property
    def endpoints(self) -> dict[str, str]: ...

    @property
    def log_files(self) -> list[Path]: ...

    @property
    def access(self) -> ClientAccess:
        """What clients need to reach it (TLS files, a login); plain when not secured."""
        ...

    def launch(self, new_ports: bool, timeout: float | None) -> list[BrokerNode]:
        """Start every node (afresh on new ports, or in place) and wait until they form."""
        ...

    def wait_formed(self, nodes: Sequence[BrokerNode], timeout: float | None) -> None:
        """Return once the started nodes form the broker; else BrokerStartError."""
        ...

    def leader(self, nodes: Sequence[BrokerNode], destination: str, timeout: float) -> BrokerNode:
        """The node leading destination; else LeaderUnknown."""
        ...


@dataclass(eq=False)
class RunningBroker:
    """A started (embedded) or reached (external) broker; stop() it when done.

    alive() is True only while every node's process runs and none is paused (a paused node
    answers nothing, so the broker cannot take a trial). External brokers have no nodes.
    """

    kind: str  # "kafka" | "nats"
    # kafka: "127.0.0.1:PORT[,127.0.0.1:PORT2...]" (bootstrap.servers);
    # nats: "nats://127.0.0.1:PORT[,nats://127.0.0.1:PORT2...]"
    address: str
    version: str | None
    embedded: bool
    workdir: Path | None = None
    endpoints: dict[str, str] = field(default_factory=dict)  # e.g. {"monitor": "http://..."}
    log_files: list[Path] = field(default_factory=list)
    start_seconds: float | None = None  # wall time of the last (re)start until formed (embedded)
    nodes: list[BrokerNode] = field(default_factory=list)
    access: ClientAccess = field(default=PLAIN, repr=False)  # TLS files and login of clients
    _launcher: EmbeddedLauncher | None = field(default=None, repr=False)
    _probe: Callable[[], bool] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.nodes:
            _register(self)

    @property
    def pid(self) -> int | None:
        """The first node's process id (None for external brokers)."""
        return self.nodes[0].pid if self.nodes else None

    @property
    def pids(self) -> list[int]:
        """Every node's process id, in node order."""
        return [pid for pid in (n.pid for n in self.nodes) if pid is not None]

    def alive(self) -> bool:
        """True while every node runs unpaused (embedded) or the address accepts TCP (external)."""
        if self._stopped:
            return False
        if self.nodes:
            return all(n.alive() and not n.paused for n in self.nodes)
        return self._probe() if self._probe is not None else False

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the broker's own logs (each node's headed by its name); "" if external."""
        if len(self.nodes) > 1:
            return nodes_log_tail(self.nodes, lines)
        return tail_files(self.log_files, lines)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Idempotent: SIGTERM every node, SIGKILL after timeout, wait, remove the temp dir."""
        if self._stopped:
            return
        self._stopped = True
        try:
            retire_nodes(self.nodes, timeout)
        finally:
            _unregister(self)
            remove_workdir(self.workdir)

    def restart(self, timeout: float | None = None, *, new_ports: bool = False) -> None:
        """Restart every node of an embedded broker (e.g. after one died mid-run).

        Same ports keep the broker's data; new_ports=True starts it afresh (empty data) on new
        free ports and updates address/endpoints. Raises BrokerStartError (and stops) on failure.
        """
        launcher = self._embedded_launcher("restart")
        retire_nodes(self.nodes)
        started = time.monotonic()
        try:
            nodes = launcher.launch(new_ports, timeout)
        except BaseException:
            self.stop()
            raise
        self.nodes = nodes
        self.address = ",".join(n.address for n in nodes)
        self.start_seconds = time.monotonic() - started

    def revive(self, timeout: float | None = None) -> None:
        """Start every dead node again in place, resume paused ones, and wait until formed.

        Dead nodes keep their ports and data, so they rejoin. start_seconds is left as it was.
        Raises BrokerStartError (with the lagging node's log tail) if the broker does not form;
        the nodes are left running then, for restart() or stop() to deal with.
        """
        launcher = self._embedded_launcher("revive")
        for node in self.nodes:
            node.resume()
            node.start()
        launcher.wait_formed(self.nodes, timeout)

    def wait_formed(self, timeout: float) -> None:
        """Return once the broker can take a trial (every node up and joined); else raise.

        Raises BrokerStartError naming the node that is not there, with its log tail; an
        external broker only has to accept TCP.
        """
        if self._stopped:
            raise BrokerStartError(f"the {self.kind} broker {self.address} was stopped")
        if self._launcher is not None:
            self._launcher.wait_formed(self.nodes, timeout)
            return
        deadline = time.monotonic() + timeout
        while not self.alive():
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"the external {self.kind} broker {self.address} is not reachable"
                )
            time.sleep(0.1)

    def leader(self, destination: str, timeout: float = 5.0) -> BrokerNode:
        """The node leading a Kafka topic's partition 0 or a JetStream stream.

        Asks the nodes that run unpaused, and polls until one reports a leader whose process
        runs (a dead node's stale leadership does not count); else LeaderUnknown.
        """
        if self._launcher is None or not self.nodes:
            raise LeaderUnknown(f"the external {self.kind} broker has no nodes exprun controls")
        if self._stopped:
            raise LeaderUnknown(f"the {self.kind} broker was stopped")
        return self._launcher.leader(self.nodes, destination, timeout)

    def _embedded_launcher(self, action: str) -> EmbeddedLauncher:
        if not self.embedded or self._launcher is None:
            where = f"the external {self.kind} broker {self.address}"
            raise BrokerStartError(f"cannot {action} {where}")
        if self._stopped:
            raise BrokerStartError(f"cannot {action} the {self.kind} broker: it was stopped")
        return self._launcher

    def __enter__(self) -> RunningBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- registry: stop whatever is still running when the interpreter exits -----------------

_LIVE: list[RunningBroker] = []
_LIVE_LOCK = threading.Lock()


def _register(broker: RunningBroker) -> None:
    with _LIVE_LOCK:
        _LIVE.append(broker)


def _unregister(broker: RunningBroker) -> None:
    with _LIVE_LOCK, contextlib.suppress(ValueError):
        _LIVE.remove(broker)


@atexit.register
def stop_all_brokers() -> None:
    """Stop every embedded broker still running, newest first."""
    with _LIVE_LOCK:
        brokers = list(reversed(_LIVE))
    for broker in brokers:
        with contextlib.suppress(Exception):
            broker.stop()


def start_embedded(
    kind: str, launcher: EmbeddedLauncher, workdir: Path, timeout: float
) -> RunningBroker:
    """First launch of an embedded broker; its temp dir goes if it fails to start."""
    started = time.monotonic()
    try:
        nodes = launcher.launch(False, timeout)
    except BaseException:
        remove_workdir(workdir)
        raise
    return RunningBroker(
        kind=kind,
        address=",".join(n.address for n in nodes),
        version=launcher.version,
        embedded=True,
        workdir=workdir,
        endpoints=launcher.endpoints,
        log_files=launcher.log_files,
        start_seconds=time.monotonic() - started,
        nodes=nodes,
        access=launcher.access,
        _launcher=launcher,
    )


# --- temp dirs -----------------------------------------------------------------------------


def make_workdir(kind: str, parent: Path | None) -> Path:
    """A fresh private temp dir for one embedded broker, marked with our pid."""
    _sweep_stale_workdirs(parent)
    path = Path(tempfile.mkdtemp(prefix=f"exprun-{kind}-", dir=parent))
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_workdirs(parent: Path | None) -> None:
    """Remove temp dirs left by exprun processes that were killed (-9) before cleaning up."""
    root = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    for path in root.glob("exprun-*-*"):
        try:
            owner = int((path / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if owner != os.getpid() and not _pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)


def remove_workdir(path: Path | None) -> None:
    """Remove a broker temp dir unless EXPRUN_KEEP_BROKER_DIR asks to keep it."""
    if path is not None and not os.environ.get(KEEP_DIR_ENV):
        shutil.rmtree(path, ignore_errors=True)


# --- sockets -------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Distinct free loopback TCP ports (held open together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to host:port succeeds within timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
