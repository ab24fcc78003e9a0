"""The trial process: runs one trial on a fresh event loop and sends back its TrialResult.

Imported (and so preloaded) by the forkserver that forks every trial process: the client
libraries and the drivers are loaded once per run, not once per trial.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import Any, Literal, TypeVar

from runner.execution.drivers import (
    Driver,
    DriverError,
    UnknownDriver,
    available_drivers,
    load_driver,
)
from runner.execution.measure.accounting import Accounting
from runner.execution.measure.handlers import HandlerPool, Handlers
from runner.execution.measure.messages import NS_PER_S, now_ns
from runner.execution.measure.resources import ResourceSampler, Usage
from runner.execution.measure.self_test import start_leaked_threads, start_lingering_thread
from runner.execution.trial.fault_points import FaultLink, FaultPlan, PipeLink
from runner.execution.trial.phase import MeasuredPhase, PhaseListener
from runner.execution.trial.request import (
    PHASE_STARTED,
    PHASE_WINDOW,
    SETTLING,
    SETUP_TIMEOUT_S,
    PhaseStarted,
    PhaseWindow,
    TrialRequest,
)
from runner.execution.trial.shares import SharedDriver, driver_for
from runner.process import die_with_parent
from schemas.results import Metrics, NodeFigures, TrialResult

T = TypeVar("T")

CLEANUP_TIMEOUT_S = 5.0  # best-effort cleanup after a failure


def _preload_drivers() -> None:
    # In the forkserver this runs once; every forked trial finds the drivers already imported.
    for name in available_drivers():
        with contextlib.suppress(Exception):
            load_driver(name)


_preload_drivers()


def child_main(
    request: TrialRequest,
    conn: Connection,
    log_path: str,
    spawned_ns: int,
    answers: Connection | None = None,
    listener: socket.socket | None = None,
) -> None:
    """Entry point of the trial process: isolate, run, report, and exit at once.

    `answers` carries the run's answers to the trial's fault orders (trials with faults);
    `listener` takes the links of load-generator processes on other hosts.
    """
    spawn_s = (now_ns() - spawned_ns) / NS_PER_S
    _isolate()
    _redirect_output(log_path)
    link = PipeLink(conn, answers) if answers is not None else None

    def settling() -> None:
        conn.send_bytes(SETTLING)

    result = asyncio.run(
        run_trial_here(request, spawn_s, settling, link, listener, phase=_PipeListener(conn))
    )
    conn.send_bytes(result.model_dump_json().encode())
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now: a client library's leftover non-daemon thread must not keep the process alive.
    os._exit(0)


class _PipeListener:
    """Tells the run, over the trial's pipe, the phase's clock and each window as it closes."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def started(self, started: PhaseStarted) -> None:
        self.conn.send_bytes(PHASE_STARTED + started.model_dump_json().encode())

    def window(self, window: PhaseWindow) -> None:
        self.conn.send_bytes(PHASE_WINDOW + window.model_dump_json().encode())


def _isolate() -> None:
    """Own session (a terminal's Ctrl-C reaches only exprun), and die with the parent.

    Our parent is the forkserver, which exits once every holder of its "alive" pipe is gone.
    Each forked child inherits that pipe's write end, which would keep the forkserver (and so
    us, through PR_SET_PDEATHSIG) alive after exprun died: the trial process drops it.
    """
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setsid()
    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and alive_fd is not None:
        os.close(alive_fd)
        server._forkserver_alive_fd = None
    die_with_exprun = die_with_parent(parent)
    if die_with_exprun is not None:
        die_with_exprun()


def _redirect_output(log_path: str) -> None:
    """Client libraries log to stdout/stderr: keep that off exprun's terminal, in a file."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


async def run_trial_here(
    request: TrialRequest,
    spawn_s: float,
    settling: Callable[[], None] = lambda: None,
    fault_link: FaultLink | None = None,
    listener: socket.socket | None = None,
    *,
    phase: PhaseListener | None = None,
) -> TrialResult:
    """One trial on the running event loop, as the trial process runs it (also in-process, for
    tests and profiles); `settling` is called once the trial no longer uses the broker,
    `fault_link` has the run do the trial's faults, `listener` takes remote shares, and
    `phase` hears the measured phase's clock and windows."""
    trial = _Trial(request, spawn_s, settling, fault_link, listener, phase)
    main = asyncio.current_task()
    assert main is not None
    # The parent sends SIGTERM when the trial overruns its timeout: report what was measured.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await trial.execute()
        failure = trial.problem()
        return trial.result("failed" if failure else "ok", failure)
    except asyncio.CancelledError:
        return trial.result("failed", f"stopped while {trial.stage}")
    except (DriverError, UnknownDriver, ValueError) as error:
        return trial.result("failed", _one_line(str(error)))
    except Exception as error:
        return trial.result("failed", _one_line(f"{type(error).__name__}: {error}"))
    finally:
        await trial.cleanup()


class _Trial:
    """One trial's steps, and everything measured so far (a failure reports the partial)."""

    def __init__(
        self,
        request: TrialRequest,
        spawn_s: float,
        settling: Callable[[], None],
        fault_link: FaultLink | None,
        listener: socket.socket | None = None,
        phase_listener: PhaseListener | None = None,
    ) -> None:
        self.request = request
        self.listener = listener
        self.settling = settling
        self.phase_listener = phase_listener
        self.fault_link = fault_link
        self.started_at = datetime.now(UTC).isoformat()
        self.t0 = now_ns()
        self.stage = "setting up"
        self.metrics = Metrics(spawn_s=round(spawn_s, 4))
        self.driver: Driver | None = None
        self.created = False
        self.sampler: ResourceSampler | None = None
        self.accounting: Accounting | None = None
        self.handlers: Handlers | None = None
        self.before: Usage | None = None
        self.immediate: Usage | None = None  # right after the clients closed
        self.phase: MeasuredPhase | None = None

    async def execute(self) -> None:
        """Every step of the trial in order; each bounded, each timed where it is a fixed cost."""
        request = self.request
        driver = driver_for(request)
        if request.shared:
            driver = SharedDriver(driver, request.processes, request.remote, self.listener)
        self.driver = driver
        create = driver.create_destination()
        self.metrics.create_s = await self._step("creating the topic", create, SETUP_TIMEOUT_S * 2)
        self.created = True
        self._take_baseline(driver)
        connect = self._connect_clients(driver)
        self.metrics.connect_s = await self._step(
            "connecting clients", connect, SETUP_TIMEOUT_S * 2
        )
        await self._measure(driver)
        close_s = await self._step("closing clients", self._close_clients(driver), SETUP_TIMEOUT_S)
        await self._settle()
        delete = driver.delete_destination()
        delete_s = await self._step("deleting the topic", delete, SETUP_TIMEOUT_S * 2)
        self.created = False
        self.metrics.teardown_s = round(close_s + delete_s, 4)
        self.stage = "done"

    async def _step(self, stage: str, step: Awaitable[Any], timeout: float) -> float:
        """One set-up or tear-down step, failed after `timeout`; its duration in seconds."""
        self.stage = stage
        mark = now_ns()
        await _bounded(step, timeout, stage)
        return _seconds(now_ns() - mark)

    def _take_baseline(self, driver: Driver) -> None:
        """Usage before any client of the measured trial exists."""
        sampler = self.sampler = ResourceSampler(
            self.request.broker_pids, helpers=driver.helper_pids
        )
        sampler.start()
        before = self.before = sampler.usage()
        self.metrics.rss_before_mb, self.metrics.threads_before = before.rss_mb, before.threads

    async def _connect_clients(self, driver: Driver) -> None:
        work = self.request.workload
        accounting = Accounting(
            work.planned_messages, self.request.self_test, driver.layout, work.subscriptions
        )
        self.accounting = accounting
        pools: list[HandlerPool] = []
        if isinstance(driver, SharedDriver):
            # The pools are the load-generator processes' own.
            handlers = self.handlers = await driver.start(accounting, work.processing_time)
        else:
            workers = self.request.broker_config.workers
            pools = [
                HandlerPool(workers, work.processing_time, b) for b in accounting.subscriptions
            ]
            handlers = self.handlers = Handlers(pools)
        handlers.start()
        # Together: consumer threads (Kafka) get ready while the producers connect.
        held = work.backlog is not None
        await asyncio.gather(
            driver.start_consumers(pools, work.consumers, held=held), driver.connect_producers()
        )

    async def _measure(self, driver: Driver) -> None:
        """The measured phase, in the shape its scenario declares (trial/phase.py)."""
        assert self.accounting is not None and self.handlers is not None
        assert self.sampler is not None
        self.stage = "publishing"
        start_leaked_threads(self.request.self_test.leak_threads)
        work = self.request.workload
        faults = None
        if work.faults:
            faults = FaultPlan(work, self.fault_link, self.accounting, driver.destinations[0])
        phase = self.phase = MeasuredPhase(
            work, driver, self.accounting, self.handlers, self.sampler, faults, self.phase_listener
        )
        await phase.run()

    async def _close_clients(self, driver: Driver) -> None:
        assert self.handlers is not None and self.sampler is not None
        await driver.close()
        await self.handlers.close()
        start_lingering_thread(self.request.self_test.linger_threads_s)
        self.sampler.end_phase()
        self.immediate = self.sampler.usage()
        self.metrics.threads_after_immediate = self.immediate.threads

    async def _settle(self) -> None:
        """Wait the settle time, then count what the trial left behind."""
        sampler, before, immediate = self.sampler, self.before, self.immediate
        assert sampler is not None and before is not None and immediate is not None
        self.stage = "settling"
        # The parent may start the next trial now: this process only waits and counts itself
        # (the topic deletion after the wait is one small admin request).
        self.settling()
        await asyncio.sleep(self.request.workload.settle_time)
        after = sampler.usage()
        await sampler.stop()
        metrics = self.metrics
        metrics.rss_after_mb, metrics.threads_after = after.rss_mb, after.threads
        metrics.memory_delta_mb = round(after.rss_mb - before.rss_mb, 3)
        metrics.leaked_threads = after.threads - before.threads
        metrics.lingering_threads = max(0, immediate.threads - after.threads)
        metrics.leaked_tasks = after.tasks - before.tasks

    def problem(self) -> str | None:
        """Why a trial that ran to the end must still count as failed."""
        # A node the trial's own faults killed is what the trial measures, not a failure.
        gone = self.sampler.gone_nodes if self.sampler is not None else []
        if gone and not self.request.workload.faults:
            return f"the broker process {gone[0]} exited during the trial"
        if self.driver is not None and self.driver.problem is not None:
            return _one_line(self.driver.problem)
        if self.phase is not None:
            return self.phase.outcome.failure
        return None

    def result(self, status: str, error: str | None) -> TrialResult:
        request, metrics = self.request, self.metrics
        series, notes = None, []
        nodes: list[NodeFigures] = []
        last_handled = self.handlers.last_done_ns if self.handlers is not None else None
        if self.phase is not None:
            series = self.phase.fill(metrics, last_handled)
            notes = self.phase.outcome.notes
            end = self.phase.outcome.end_ns or now_ns()
            metrics.duration_s = _seconds(end - self.phase.outcome.start_ns)
        elif self.accounting is not None:
            self.accounting.fill(metrics, last_handled_ns=last_handled)
        if self.sampler is not None:
            sampler = self.sampler
            if sampler.peak_threads:
                metrics.rss_peak_mb = sampler.peak_rss_mb
                metrics.threads_peak = sampler.peak_threads
                metrics.tasks_peak = sampler.peak_tasks
            metrics.broker_rss_mb = sampler.broker_rss_mb
            metrics.broker_cpu_percent = sampler.broker_cpu_percent
            if len(request.broker_pids) > 1:
                nodes = [
                    NodeFigures(
                        node=node.number,
                        rss_peak_mb=node.peak_rss_mb,
                        cpu_percent=node.cpu_percent,
                        exited=node.gone,
                    )
                    for node in sampler.broker_nodes
                ]
        metrics.trial_duration_s = _seconds(now_ns() - self.t0)
        shared = self.driver if isinstance(self.driver, SharedDriver) else None
        if shared is not None and shared.remote is not None:
            metrics.clock_uncertainty_ms = shared.clock_uncertainty_ms
            # Their CPU is not this machine's: the busiest one's, as it measured itself.
            busiest = [f.cpu_percent for f in shared.load_generators if f.cpu_percent is not None]
            metrics.loadgen_cpu_percent = max(busiest, default=None)
        outcome: Literal["ok", "failed"] = "ok" if status == "ok" else "failed"
        accounting = self.accounting
        several = accounting is not None and len(accounting.subscriptions) > 1
        return request.result(
            outcome,
            error,
            self.started_at,
            metrics,
            notes=notes,
            series=series,
            subscriptions=accounting.subscription_figures() if several and accounting else None,
            faults=self.phase.fault_figures if self.phase is not None else None,
            broker_nodes=nodes,
            load_generators=shared.load_generators if shared is not None else None,
            publish_policy=self.driver.publish_policy() if self.driver is not None else None,
        )

    async def cleanup(self) -> None:
        """After a failure: close what is open and delete the topic, best effort, bounded."""
        if self.stage == "done":
            return
        if self.driver is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.driver.close(), CLEANUP_TIMEOUT_S)
            if self.created:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.driver.delete_destination(), CLEANUP_TIMEOUT_S)
        if self.handlers is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.handlers.close(), CLEANUP_TIMEOUT_S)
        if self.sampler is not None:
            with contextlib.suppress(Exception):
                await self.sampler.stop()


async def _bounded(step: Awaitable[T], timeout: float, stage: str) -> T:
    try:
        return await asyncio.wait_for(step, timeout)
    except TimeoutError:
        raise DriverError(f"timed out after {timeout:g}s while {stage}") from None


def _seconds(elapsed_ns: int) -> float:
    return round(elapsed_ns / NS_PER_S, 4)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"
