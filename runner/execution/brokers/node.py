"""One process of an embedded broker, and waiting for a set of them to form a broker."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from runner.execution.brokers.errors import BrokerStartError, LeaderUnknown
from runner.execution.brokers.logs import (
    ERROR_TAIL_LINES,
    is_port_conflict,
    start_error,
    tail_files,
    with_log_tail,
)
from runner.execution.brokers.processes import (
    kill_group,
    signal_group,
    spawn,
    terminate_groups,
)

# How long a stop waits for a broker's own clean shutdown before SIGKILL.
STOP_TIMEOUT = 10.0
# How long pause() / resume() wait for the kernel to stop / continue the process.
SIGNAL_TIMEOUT = 2.0


@dataclass(eq=False)
class BrokerNode:
    """One broker process: a single embedded broker, or one member of an embedded cluster.

    A node keeps its ports and data dir for life: relaunch() starts it again in place, so it
    rejoins its cluster. alive() is about the process only; a paused node is alive.
    """

    number: int  # 1-based: Kafka's node.id, NATS's server_name "n<number>"
    cluster_size: int
    address: str  # its own client address
    endpoints: dict[str, str]  # e.g. {"client": ..., "monitor": ...} or {"controller": ...}
    log_files: list[Path]
    workdir: Path
    argv: list[str]  # what start() runs
    console_log: Path  # where the process's stdout and stderr go
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _paused: bool = field(default=False, repr=False)
    _retired: bool = field(default=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def name(self) -> str:
        """The node's name, "n<number>": a NATS cluster member's server_name."""
        return f"n{self.number}"

    @property
    def label(self) -> str:
        """How error messages name the node: "node 2 of 3 (127.0.0.1:PORT)"."""
        return f"node {self.number} of {self.cluster_size} ({self.address})"

    @property
    def pid(self) -> int | None:
        """The process id of the current (or last) process; None before the first start."""
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def paused(self) -> bool:
        """True between pause() and resume() while the process lives."""
        return self._paused and self.alive()

    def alive(self) -> bool:
        """True while the node's process runs (paused or not)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code of the node's process once it has ended (negative: killed by a signal)."""
        proc = self._proc
        return proc.poll() if proc is not None else None

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of each of the node's logs, headed by the node's name and file."""
        return tail_files(self.log_files, lines, heading=self.name)

    def start(self) -> None:
        """Spawn the node's process in place (same ports, same data) if it is not running.

        Does not wait for readiness: RunningBroker.wait_formed() does.
        """
        with self._lock:
            if self._retired:
                raise BrokerStartError(f"cannot start {self.label}: its broker was stopped")
            if self.alive():
                return
            self._paused = False
            self._proc = spawn(self.argv, log_path=self.console_log, cwd=self.workdir)

    def relaunch(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the node if it runs (SIGTERM, SIGKILL after timeout), then start it in place."""
        with self._lock:
            self.stop(timeout)
            self.start()

    def pause(self) -> None:
        """SIGSTOP the node's process group: it keeps its sockets but answers nothing.

        Returns once the process is stopped (signals are delivered asynchronously).
        """
        with self._lock:
            if self._proc is not None and self.alive():
                signal_group(self._proc.pid, signal.SIGSTOP)
                self._paused = True
                wait_stopped(self._proc.pid, stopped=True)

    def resume(self) -> None:
        """SIGCONT a paused node's process group; returns once it runs again."""
        with self._lock:
            if self._paused and self._proc is not None:
                signal_group(self._proc.pid, signal.SIGCONT)
                wait_stopped(self._proc.pid, stopped=False)
            self._paused = False

    def kill(self) -> None:
        """SIGKILL the node's process group and reap it (no clean shutdown)."""
        with self._lock:
            self.resume()
            if self._proc is not None:
                kill_group(self._proc)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the node's process group, SIGKILL it after timeout, and reap it."""
        stop_nodes([self], timeout)

    def retire(self) -> None:
        """From now on start() refuses: the node's broker is being stopped for good."""
        with self._lock:
            self._retired = True


def wait_stopped(pid: int, *, stopped: bool, timeout: float = SIGNAL_TIMEOUT) -> None:
    """Wait until a process is (or is no longer) stopped by SIGSTOP; gone counts as done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (psutil.Process(pid).status() == psutil.STATUS_STOPPED) == stopped:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.005)


def stop_nodes(nodes: Sequence[BrokerNode], timeout: float = STOP_TIMEOUT) -> None:
    """Stop nodes together (a paused one is resumed first, so a SIGTERM reaches it)."""
    with contextlib.ExitStack() as locks:
        # One global order, so two threads stopping overlapping sets cannot deadlock.
        for node in sorted(nodes, key=id):
            locks.enter_context(node._lock)
        for node in nodes:
            node.resume()
        terminate_groups([n._proc for n in nodes if n._proc is not None], timeout)


def retire_nodes(nodes: Sequence[BrokerNode], timeout: float = STOP_TIMEOUT) -> None:
    """Stop nodes for good: none of them can be started again afterwards."""
    for node in nodes:
        node.retire()
    stop_nodes(nodes, timeout)


def nodes_log_tail(nodes: Sequence[BrokerNode], lines: int) -> str:
    """Every node's log tail, each headed by the node's name."""
    return "\n".join(tail for tail in (n.log_tail(lines) for n in nodes) if tail)


# --- forming -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotFormed:
    """Why a broker is not (yet) formed, and the node to blame when one can be named."""

    why: str  # completes "node 2 of 3 ..." when node is set, else a sentence of its own
    node: BrokerNode | None = None
    exited: bool = False  # the node's process ended: waiting longer cannot help


# Checks a started broker once: None when it is formed (ready to take a trial).
FormedCheck = Callable[[], NotFormed | None]


def await_formed(
    nodes: Sequence[BrokerNode], check: FormedCheck, *, deadline: float, interval: float
) -> NotFormed | None:
    """Poll check() until the nodes are formed; None then, else why not (at once if one exits)."""
    while True:
        for node in nodes:
            code = node.exit_code()
            if code is not None:
                return NotFormed(f"exited with code {code}", node, exited=True)
        lag = check()
        if lag is None:
            return None
        if time.monotonic() >= deadline:
            return lag
        time.sleep(interval)


def paused_node(nodes: Sequence[BrokerNode]) -> NotFormed | None:
    """A NotFormed for the first paused node, if any (a paused node answers nothing)."""
    for node in nodes:
        if node.paused:
            return NotFormed("is paused", node)
    return None


def launch_nodes(
    make: Callable[[bool], list[BrokerNode]],
    wait: Callable[[list[BrokerNode]], None],
    *,
    fresh: bool,
    tries: int,
) -> list[BrokerNode]:
    """Start the nodes make(fresh) prepares and wait(nodes) until they form.

    On failure every started node is stopped; a port taken meanwhile (another process won the
    race for a free port) gets a fresh try, up to tries in all.
    """
    for attempt in range(tries):
        nodes = make(fresh)
        try:
            for node in nodes:
                node.start()
            wait(nodes)
            return nodes
        except BaseException as exc:
            # Ctrl-C included: the nodes are not registered anywhere yet.
            retire_nodes(nodes, 5.0)
            conflict = any(is_port_conflict(n.log_files) for n in nodes)
            if isinstance(exc, BrokerStartError) and fresh and attempt + 1 < tries and conflict:
                continue
            raise
    raise AssertionError("unreachable")


def formation_error(
    title: str, nodes: Sequence[BrokerNode], lag: NotFormed, *, starting: bool
) -> BrokerStartError:
    """The BrokerStartError for a broker that did not form: which node, why, its log tail."""
    verb = "failed to start" if starting else "is not formed"
    node = lag.node
    if len(nodes) == 1 and starting:
        # The single broker's message, as it always was.
        why = "it did not become ready in time"
        if lag.exited:
            why = f"the process exited with code {nodes[0].exit_code()} during startup"
        return start_error(f"{title} {verb}: {why}.", nodes[0].log_files)
    if node is None:
        return with_log_tail(f"{title} {verb}: {lag.why}.", nodes_log_tail(nodes, ERROR_TAIL_LINES))
    when = "" if lag.exited or not starting else "it did not form in time: "
    heading = node.name if len(nodes) > 1 else ""
    what = f"{title} {verb}: {when}{node.label} {lag.why}."
    return start_error(what, node.log_files, heading=heading)


# --- leaders -------------------------------------------------------------------------------


def poll_leader(
    lookup: Callable[[], BrokerNode | str], what: str, timeout: float, interval: float = 0.1
) -> BrokerNode:
    """Poll lookup() (a node, or why none yet) until it names a node; else LeaderUnknown."""
    deadline = time.monotonic() + timeout
    while True:
        found = lookup()
        if isinstance(found, BrokerNode):
            return found
        if time.monotonic() >= deadline:
            raise LeaderUnknown(f"no leader of {what} within {timeout:g} s: {found}")
        time.sleep(interval)


def live_nodes(nodes: Sequence[BrokerNode]) -> list[BrokerNode]:
    """Nodes that can answer a request now: running and not paused."""
    return [n for n in nodes if n.alive() and not n.paused]
