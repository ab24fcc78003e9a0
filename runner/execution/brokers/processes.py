"""Broker child processes: spawned in their own session, dying with exprun, stopped by group.

Every embedded broker process runs in its own session (so a terminal Ctrl-C reaches only
exprun, which then stops brokers in order) and with PR_SET_PDEATHSIG=SIGKILL (so it dies with
exprun even on kill -9).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from runner.execution.brokers.errors import BrokerStartError
from runner.process import die_with_parent

T = TypeVar("T")


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


def wait_tool(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Wait for a helper command; its exit code, or None if it timed out (then killed)."""
    try:
        return proc.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        terminate_group(proc, 2.0)
        return None
    except BaseException:
        # Ctrl-C while waiting: do not leave the helper behind.
        terminate_group(proc, 2.0)
        raise


def run_tool(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> int | None:
    """Run a helper command to completion; its exit code, or None if it timed out (then killed)."""
    return wait_tool(spawn(argv, log_path=log_path, cwd=cwd, env=env), timeout)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send sig to a process group; no error if it is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_groups(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM the children's process groups together, SIGKILL them after timeout, and reap."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10.0)
    for proc in running:
        # Leftover members of the group (the leader was just reaped, so the id is still ours).
        signal_group(proc.pid, signal.SIGKILL)


def terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after timeout, and reap the child."""
    terminate_groups([proc], timeout)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group at once and reap the child."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10.0)
