"""One isolated trial: a fresh child process runs it, the parent gets a TrialResult back.

Process model. Trial processes are forked by a multiprocessing forkserver that has preloaded
the child side, runner.execution.trial.child (confluent-kafka, nats-py, hdrh, the drivers).
Measured on the 2-core dev machine: 0.015 s from start request to the trial running, against
0.16-0.21 s for a fresh `python -m` interpreter importing the same modules, i.e. ~15 s saved
over a 90-trial run. (A plain fork of exprun itself is unsafe: it holds threads and broker
handles.) A forked worker starts with one thread, so thread counts start clean, and the parent
never imports the client libraries.

The trial process never outlives exprun: it calls setsid() (a terminal Ctrl-C reaches only the
parent), sets PR_SET_PDEATHSIG=SIGKILL towards the forkserver, which itself exits as soon as
exprun's end of its pipe closes (also on kill -9), and the parent kills it in a `finally`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import multiprocessing
import multiprocessing.util
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

import psutil

from runner.execution.brokers.logs import tail_file
from runner.execution.measure.messages import now_ns
from runner.execution.trial.request import (
    FAULT_ORDER,
    PHASE_STARTED,
    PHASE_WINDOW,
    SETTLING,
    FaultDone,
    FaultOrder,
    PhaseStarted,
    PhaseWindow,
    TrialRequest,
    trial_timeout,
)
from schemas.results import TrialResult

# The trial process's own module, named rather than imported: the parent never loads the child
# side (nor, through it, the client libraries); the forkserver preloads it once per run.
CHILD_MODULE = "runner.execution.trial.child"
TERMINATE_GRACE_S = 5.0  # after SIGTERM, time the trial process has to report what it measured
REAP_TIMEOUT_S = 5.0
MAX_SOCKET_PARENT = 60  # leaves room for "/pymp-XXXXXXXX/listener-XXXXXXXX" within 107 bytes


_CONTEXT: ForkServerContext | None = None


def _context() -> ForkServerContext:
    global _CONTEXT
    if _CONTEXT is None:
        _short_socket_dir()
        context = multiprocessing.get_context("forkserver")
        assert isinstance(context, ForkServerContext)
        context.set_forkserver_preload([CHILD_MODULE])
        _CONTEXT = context
    return _CONTEXT


def _short_socket_dir() -> None:
    """Keep the forkserver's socket path short enough for AF_UNIX (at most 107 bytes).

    multiprocessing puts it in a folder under the temp dir and remembers that folder for the
    process; a deep TMPDIR would make the socket path too long, so create the folder in the
    system's short temp dir in that case. Trial processes still inherit TMPDIR itself.
    """
    if len(tempfile.gettempdir()) <= MAX_SOCKET_PARENT:
        return
    saved = tempfile.tempdir
    tempfile.tempdir = "/tmp" if os.path.isdir("/tmp") else saved
    try:
        multiprocessing.util.get_temp_dir()
    finally:
        tempfile.tempdir = saved


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start processes without multiprocessing re-running the parent's main module in them.

    A trial process needs nothing from __main__ (its target lives in the child module), yet
    multiprocessing re-imports the main module in every child it starts: for the `exprun` or
    `pytest` scripts that re-runs their module code once per trial. It skips a main module whose
    spec is named "__main__", so the main module is presented that way while a child starts.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _MAIN_LOCK:
        saved = getattr(main, "__spec__", None)
        main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
        try:
            yield
        finally:
            main.__spec__ = saved


def prestart() -> None:
    """Start the forkserver now (~0.5 s, once per run) rather than in the first trial."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def _trial_process(*args: Any) -> None:
    """Target of the trial process (its module is already imported there, by the forkserver)."""
    importlib.import_module(CHILD_MODULE).child_main(*args)


# Does a trial's fault on the broker and says what it did (runner.execution.faults).
FaultHandler = Callable[[FaultOrder], FaultDone]


class PhaseWatcher(Protocol):
    """Follows a trial's measured phase from the run's side (e.g. reads the broker meanwhile)."""

    def begin(self, started: PhaseStarted) -> None: ...

    def end(self) -> None:
        """The trial is done with the broker (or over): idempotent."""
        ...


class TrialProcess:
    """A started trial; `wait_settling()` returns once it is done with the broker."""

    def __init__(
        self,
        request: TrialRequest,
        timeout: float | None = None,
        unavailable: str | None = None,
        on_fault: FaultHandler | None = None,
        listener: socket.socket | None = None,
        watcher: PhaseWatcher | None = None,
        on_window: Callable[[PhaseWindow], None] | None = None,
    ) -> None:
        self.request = request
        self.on_fault = on_fault
        self.watcher = watcher
        self.on_window = on_window
        self.started_at = datetime.now(UTC).isoformat()
        self.limit = trial_timeout(request) if timeout is None else timeout
        self.deadline = time.monotonic() + self.limit
        self._result: TrialResult | None = None
        self._settling = False
        fd, self.log_path = tempfile.mkstemp(prefix=f"exprun-trial-{request.index}-", suffix=".log")
        os.close(fd)
        context = _context()
        self.reader, writer = context.Pipe(duplex=False)
        # The run's answers to fault orders travel back on a pipe of their own.
        answers: Connection | None = None
        self.answers: Connection | None = None
        if on_fault is not None:
            answers, self.answers = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_trial_process,
            args=(request, writer, self.log_path, now_ns(), answers, listener),
            name=f"exprun-trial-{request.index}",
            daemon=True,
        )
        try:
            gone = [pid for pid in request.broker_pids if not _running(pid)]
            if unavailable is None and gone:
                unavailable = f"the broker process {gone[0]} is gone"
            if unavailable is not None:
                self._result = _failed(request, self.started_at, unavailable)
                return
            with _main_not_reimported():
                self.process.start()
        except Exception as error:  # e.g. the forkserver could not start
            self._result = _failed(
                request, self.started_at, f"could not run the trial process: {error}"
            )
        finally:
            writer.close()  # so a dead child reads as EOF, not as a hang
            if answers is not None:
                answers.close()
            if listener is not None:
                listener.close()  # the trial process has its own

    def wait_settling(self) -> None:
        """Block until the trial settles (its broker work is over) or ends either way."""
        while self._result is None and not self._settling:
            self._receive()

    def done(self) -> bool:
        """True once the result is in (never blocks)."""
        while self._result is None and self.reader.poll(0):
            self._receive()
        return self._result is not None

    def result(self) -> TrialResult:
        """Wait for the trial's result (failed with the reason on crash or timeout)."""
        try:
            while self._result is None:
                self._receive()
            return self._result
        finally:
            self.close()

    def close(self) -> None:
        """Kill the trial process if it still runs; idempotent."""
        # On every way out, KeyboardInterrupt included: the trial process must not survive.
        _kill(self.process)
        if self.watcher is not None:
            self.watcher.end()
        self.reader.close()
        if self.answers is not None:
            self.answers.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    def _receive(self) -> None:
        remaining = self.deadline - time.monotonic()
        payload, reason = _collect(self.process, self.reader, remaining, self.limit)
        if payload is not None and payload.startswith(FAULT_ORDER) and reason is None:
            self._do_fault(FaultOrder.model_validate_json(payload[len(FAULT_ORDER) :]))
        elif payload is not None and payload.startswith(PHASE_STARTED) and reason is None:
            if self.watcher is not None:
                self.watcher.begin(PhaseStarted.model_validate_json(payload[len(PHASE_STARTED) :]))
        elif payload is not None and payload.startswith(PHASE_WINDOW) and reason is None:
            if self.on_window is not None:
                self.on_window(PhaseWindow.model_validate_json(payload[len(PHASE_WINDOW) :]))
        elif payload == SETTLING and reason is None:
            self._settling = True
            if self.watcher is not None:
                self.watcher.end()
        elif payload is not None and payload != SETTLING:
            result = TrialResult.model_validate_json(payload)
            if reason is not None:
                result = result.model_copy(
                    update={"status": "failed", "error": f"{reason} ({result.error})"}
                )
            self._result = result
        else:
            tail = [line for line in tail_file(Path(self.log_path), 5) if line.strip()]
            last = f": {tail[-1].strip()[:300]}" if tail else ""
            reason = reason or "the trial process ended without a result"
            self._result = _failed(self.request, self.started_at, f"{reason}{last}")

    def _do_fault(self, order: FaultOrder) -> None:
        assert self.on_fault is not None and self.answers is not None
        try:
            done = self.on_fault(order)
        except Exception as error:  # the run must answer, whatever went wrong
            done = FaultDone(error=f"{type(error).__name__}: {error}")
        with contextlib.suppress(OSError):
            self.answers.send_bytes(done.model_dump_json().encode())


def start_trial(
    request: TrialRequest,
    *,
    timeout: float | None = None,
    unavailable: str | None = None,
    on_fault: FaultHandler | None = None,
    listener: socket.socket | None = None,
    watcher: PhaseWatcher | None = None,
    on_window: Callable[[PhaseWindow], None] | None = None,
) -> TrialProcess:
    """Start one trial in a fresh child process; its result never raises for trial failures.

    `unavailable` (why the broker cannot be used) fails the trial at once without a process;
    `on_fault` does the trial's faults when it asks; `listener` is handed over to the trial
    process, for its load-generator processes on other hosts to connect to; `watcher` follows
    its measured phase, and `on_window` hears each of its windows as it closes.
    """
    return TrialProcess(request, timeout, unavailable, on_fault, listener, watcher, on_window)


def run_trial(request: TrialRequest, *, timeout: float | None = None) -> TrialResult:
    """Run one trial in a fresh child process; never raises for trial failures: returns status
    "failed" with the reason."""
    return start_trial(request, timeout=timeout).result()


def _collect(
    process: BaseProcess, reader: Connection, remaining: float, limit: float
) -> tuple[bytes | None, str | None]:
    """(next message or None, failure reason or None) of a started trial process."""
    ready = wait([reader, process.sentinel], timeout=max(0.0, remaining))
    if reader in ready or (ready and reader.poll(0)):
        with contextlib.suppress(EOFError, OSError):
            return reader.recv_bytes(), None
    if ready:
        process.join(REAP_TIMEOUT_S)
        return None, f"the trial process died ({_exit_reason(process.exitcode)})"
    # Overran: ask for the partial result (SIGTERM), then give up on it.
    reason = f"the trial timed out after {limit:g}s"
    with contextlib.suppress(ProcessLookupError):
        if process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + TERMINATE_GRACE_S
    while wait([reader], timeout=max(0.0, deadline - time.monotonic())):
        with contextlib.suppress(EOFError, OSError):
            payload = reader.recv_bytes()
            if payload != SETTLING and not payload.startswith(
                (FAULT_ORDER, PHASE_STARTED, PHASE_WINDOW)
            ):
                return payload, reason
            continue
        break
    return None, reason


def _kill(process: BaseProcess) -> None:
    if process.pid is None:
        return  # never started
    if process.is_alive():
        # The trial process leads its own session: its group holds anything it started.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    process.join(REAP_TIMEOUT_S)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _failed(request: TrialRequest, started_at: str, reason: str) -> TrialResult:
    return request.result("failed", reason, started_at)
