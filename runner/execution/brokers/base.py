"""Broker handle plus the process plumbing shared by embedded brokers.

Every embedded broker runs in its own session (so a terminal Ctrl-C reaches only exprun, which
then stops brokers in order) and with PR_SET_PDEATHSIG=SIGKILL (so it dies with exprun even on
kill -9). Brokers still running at interpreter exit are stopped by an atexit hook.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from runner.process import die_with_parent

T = TypeVar("T")

# Lines of the broker's own log that go into a BrokerStartError message.
ERROR_TAIL_LINES = 20
# Set to keep a failed or stopped broker's temp dir for post-mortem debugging.
KEEP_DIR_ENV = "EXPRUN_KEEP_BROKER_DIR"


class BrokerStartError(Exception):
    """A broker could not be started or reached.

    str(e) is one user-readable message: what failed, why, and the broker's log tail.
    """


# Relaunches an embedded broker: (new_ports, timeout or None for the default) -> (process, address).
Relauncher = Callable[[bool, float | None], tuple[subprocess.Popen[bytes], str]]


@dataclass(eq=False)
class RunningBroker:
    """A started (embedded) or reached (external) broker; stop() it when done."""

    kind: str  # "kafka" | "nats"
    address: str  # kafka: "127.0.0.1:PORT" (bootstrap.servers); nats: "nats://127.0.0.1:PORT"
    version: str | None
    embedded: bool
    pid: int | None
    workdir: Path | None = None
    endpoints: dict[str, str] = field(default_factory=dict)  # e.g. {"monitor": "http://..."}
    log_files: list[Path] = field(default_factory=list)
    start_seconds: float | None = None  # wall time of the last (re)start until ready (embedded)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _relaunch: Relauncher | None = field(default=None, repr=False)
    _probe: Callable[[], bool] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self._proc is not None:
            _register(self)

    def alive(self) -> bool:
        """True while the broker process runs (embedded) or its address accepts TCP (external)."""
        if self._stopped:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        return self._probe() if self._probe is not None else False

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the broker's own log; "" for external brokers."""
        return tail_files(self.log_files, lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Idempotent: SIGTERM the process group, SIGKILL after timeout, wait, remove temp dir."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._proc is not None:
                terminate_group(self._proc, timeout)
        finally:
            _unregister(self)
            remove_workdir(self.workdir)

    def restart(self, timeout: float | None = None, *, new_ports: bool = False) -> None:
        """Restart an embedded broker (e.g. after it died mid-run).

        Same ports keep the broker's data; new_ports=True starts it afresh (empty data) on new
        free ports and updates address/endpoints. Raises BrokerStartError (and stops) on failure.
        """
        if not self.embedded or self._relaunch is None:
            raise BrokerStartError(f"cannot restart the external {self.kind} broker {self.address}")
        if self._stopped:
            raise BrokerStartError(f"cannot restart the {self.kind} broker: it was stopped")
        if self._proc is not None:
            terminate_group(self._proc, 10.0)
        started = time.monotonic()
        try:
            proc, address = self._relaunch(new_ports, timeout)
        except BaseException:
            self._proc = None
            self.stop()
            raise
        self._proc, self.pid, self.address = proc, proc.pid, address
        self.start_seconds = time.monotonic() - started

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


# --- spawning ------------------------------------------------------------------------------


class _SpawnThread:
    """Forks children from one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the parent *thread* exits, so a broker started from a short-lived
    worker thread (anyio.to_thread, executors) would be killed when that thread retires.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        """Run fn on the main thread if we are on it, else on the spawn thread."""
        if threading.current_thread() is threading.main_thread():
            return fn()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="exprun-spawn", daemon=True)
                self._thread.start()
        done: Future[T] = Future()
        self._queue.put((fn, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            fn, done = self._queue.get()
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)


_SPAWNER = _SpawnThread()


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv in its own session with stdout+stderr appended to log_path."""

    def _popen() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),
                close_fds=True,
            )

    try:
        return _SPAWNER.run(_popen)
    except OSError as exc:
        raise BrokerStartError(f"could not run {argv[0]}: {exc}") from exc


def run_tool(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> int | None:
    """Run a helper command to completion; its exit code, or None if it timed out (then killed)."""
    proc = spawn(argv, log_path=log_path, cwd=cwd, env=env)
    try:
        return proc.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        terminate_group(proc, 2.0)
        return None
    except BaseException:
        # Ctrl-C while waiting: do not leave the helper behind.
        terminate_group(proc, 2.0)
        raise


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after timeout, and reap the child."""
    was_running = proc.poll() is None
    if was_running:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10.0)
    if was_running:
        # Leftover members of the group (the leader was just reaped, so the id is still ours).
        _killpg(proc.pid, signal.SIGKILL)


# --- small helpers -------------------------------------------------------------------------


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


def tail_files(paths: Sequence[Path], lines: int) -> str:
    """Tails of several logs; each headed by its file name when more than one has content."""
    tails = [(p, tail_file(p, lines)) for p in paths]
    tails = [(p, t) for p, t in tails if t]
    if len(tails) == 1:
        return "\n".join(tails[0][1])
    return "\n".join(f"==> {p.name} <==\n" + "\n".join(t) for p, t in tails)


def start_error(what: str, log_files: Sequence[Path]) -> BrokerStartError:
    """A BrokerStartError saying what failed, followed by the broker's own log tail."""
    tail = tail_files(log_files, ERROR_TAIL_LINES)
    body = f"\n--- broker log (last {ERROR_TAIL_LINES} lines) ---\n{tail}" if tail else ""
    return BrokerStartError(what + body)


OWNER_FILE = "exprun.owner"


class EmbeddedLauncher(Protocol):
    """What an embedded broker's launcher knows once it has started the broker."""

    @property
    def version(self) -> str | None: ...

    @property
    def endpoints(self) -> dict[str, str]: ...

    @property
    def log_files(self) -> list[Path]: ...

    def launch(
        self, new_ports: bool, timeout: float | None
    ) -> tuple[subprocess.Popen[bytes], str]: ...


def start_embedded(
    kind: str, launcher: EmbeddedLauncher, workdir: Path, timeout: float
) -> RunningBroker:
    """First launch of an embedded broker; its temp dir goes if it fails to start."""
    started = time.monotonic()
    try:
        proc, address = launcher.launch(False, timeout)
    except BaseException:
        remove_workdir(workdir)
        raise
    return RunningBroker(
        kind=kind,
        address=address,
        version=launcher.version,
        embedded=True,
        pid=proc.pid,
        workdir=workdir,
        endpoints=launcher.endpoints,
        log_files=launcher.log_files,
        start_seconds=time.monotonic() - started,
        _proc=proc,
        _relaunch=launcher.launch,
    )


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


def wait_until(
    ready: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes],
    deadline: float,
    interval: float = 0.02,
) -> str | None:
    """Poll ready() until true; None on success, else why not (process exited / timed out)."""
    while True:
        code = proc.poll()
        if code is not None:
            return f"the process exited with code {code} during startup"
        if ready():
            return None
        if time.monotonic() >= deadline:
            return "it did not become ready in time"
        time.sleep(interval)


def is_port_conflict(log_files: Sequence[Path]) -> bool:
    """True if the broker log says a port was taken (a free-port race worth retrying)."""
    text = tail_files(log_files, 200).lower()
    return "address already in use" in text
