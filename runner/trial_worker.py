"""The trial process: runs one trial on a fresh event loop and sends back its TrialResult.

Imported (and so preloaded) by the forkserver that forks every trial process: the client
libraries and the drivers are loaded once per run, not once per trial.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeVar

from runner.drivers import (
    Driver,
    DriverError,
    PublishPlan,
    UnknownDriver,
    available_drivers,
    load_driver,
)
from runner.measure.accounting import Accounting
from runner.measure.faults import start_leaked_threads, start_lingering_thread
from runner.measure.handlers import HandlerPool
from runner.measure.messages import NS_PER_S, MessageCodec, now_ns
from runner.measure.resources import ResourceSampler, Usage
from runner.process import die_with_parent
from runner.trial import SETTLING
from schemas.results import Metrics, TrialResult

if TYPE_CHECKING:
    from runner.trial import TrialRequest

T = TypeVar("T")

SETUP_TIMEOUT_S = 10.0  # each of: create topic, start consumers, connect producers, close, delete
CLEANUP_TIMEOUT_S = 5.0  # best-effort cleanup after a failure


def _preload_drivers() -> None:
    # In the forkserver this runs once; every forked trial finds the drivers already imported.
    for name in available_drivers():
        with contextlib.suppress(Exception):
            load_driver(name)


_preload_drivers()


def child_main(request: TrialRequest, conn: Connection, log_path: str, spawned_ns: int) -> None:
    """Entry point of the trial process: isolate, run, report, and exit at once."""
    spawn_s = (now_ns() - spawned_ns) / NS_PER_S
    _isolate()
    _redirect_output(log_path)
    result = asyncio.run(_run(request, spawn_s, lambda: conn.send_bytes(SETTLING)))
    conn.send_bytes(result.model_dump_json().encode())
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now: a client library's leftover non-daemon thread must not keep the process alive.
    os._exit(0)


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


async def _run(
    request: TrialRequest, spawn_s: float, settling: Callable[[], None] = lambda: None
) -> TrialResult:
    trial = _Trial(request, spawn_s, settling)
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

    def __init__(self, request: TrialRequest, spawn_s: float, settling: Callable[[], None]) -> None:
        self.request = request
        self.settling = settling
        self.started_at = datetime.now(UTC).isoformat()
        self.t0 = now_ns()
        self.stage = "setting up"
        self.metrics = Metrics(spawn_s=round(spawn_s, 4))
        self.driver: Driver | None = None
        self.created = False
        self.sampler: ResourceSampler | None = None
        self.accounting: Accounting | None = None
        self.pool: HandlerPool | None = None
        self.before: Usage | None = None
        self.phase: tuple[int, int | None] | None = None  # (start, end) ns

    async def execute(self) -> None:
        request, workload, metrics = self.request, self.request.workload, self.metrics
        broker = request.broker_config
        codec = MessageCodec(workload.message_size)
        driver_class = load_driver(broker.type)
        driver = driver_class(request.address, broker, request.topic, SETUP_TIMEOUT_S)
        self.driver = driver

        self.stage = "creating the topic"
        mark = now_ns()
        await _bounded(driver.create_destination(), SETUP_TIMEOUT_S * 2, self.stage)
        self.created = True
        metrics.create_s = _seconds(now_ns() - mark)

        # Baseline before any client of the measured trial exists.
        sampler = self.sampler = ResourceSampler(request.broker_pid, helpers=driver.helper_pids)
        sampler.start()
        before = self.before = sampler.usage()
        metrics.rss_before_mb, metrics.threads_before = before.rss_mb, before.threads

        self.stage = "connecting clients"
        mark = now_ns()
        accounting = self.accounting = Accounting(workload.messages, request.faults)
        pool = self.pool = HandlerPool(broker.workers, workload.processing_time, accounting)
        pool.start()
        # Together: consumer threads (Kafka) get ready while the producers connect.
        await _bounded(
            asyncio.gather(
                driver.start_consumers(workload.consumers, pool),
                driver.connect_producers(workload.producers),
            ),
            SETUP_TIMEOUT_S * 2,
            self.stage,
        )
        metrics.connect_s = _seconds(now_ns() - mark)

        self.stage = "publishing"
        ledgers = [accounting.ledger() for _ in range(workload.producers)]
        plan = PublishPlan(workload.messages, workload.producers, workload.rate, codec)
        sampler.start_phase()
        start_leaked_threads(request.faults.leak_threads)
        self.phase = (now_ns(), None)
        await driver.publish(plan, ledgers, workload.drain_timeout)
        accounting.publishing_done()
        sampler.sample()

        self.stage = "draining"
        drained = await _within(accounting.drained.wait(), workload.drain_timeout)
        if drained:
            await _within(pool.idle(), workload.drain_timeout)
        self.phase = (self.phase[0], now_ns())
        sampler.sample()

        self.stage = "closing clients"
        mark = now_ns()
        await _bounded(driver.close(), SETUP_TIMEOUT_S, self.stage)
        await pool.close()
        start_lingering_thread(request.faults.linger_threads_s)
        sampler.end_phase()
        immediate = sampler.usage()
        close_s = _seconds(now_ns() - mark)
        metrics.threads_after_immediate = immediate.threads

        self.stage = "settling"
        # The parent may start the next trial now: this process only waits and counts itself
        # (the topic deletion after the wait is one small admin request).
        self.settling()
        await asyncio.sleep(workload.settle_time)
        after = sampler.usage()
        await sampler.stop()
        metrics.rss_after_mb, metrics.threads_after = after.rss_mb, after.threads
        metrics.memory_delta_mb = round(after.rss_mb - before.rss_mb, 3)
        metrics.leaked_threads = after.threads - before.threads
        metrics.lingering_threads = max(0, immediate.threads - after.threads)
        metrics.leaked_tasks = after.tasks - before.tasks

        self.stage = "deleting the topic"
        mark = now_ns()
        await _bounded(driver.delete_destination(), SETUP_TIMEOUT_S * 2, self.stage)
        self.created = False
        metrics.teardown_s = round(close_s + _seconds(now_ns() - mark), 4)
        self.stage = "done"

    def problem(self) -> str | None:
        """Why a trial that ran to the end must still count as failed."""
        if self.sampler is not None and self.sampler.broker_gone:
            return f"the broker process {self.request.broker_pid} exited during the trial"
        if self.driver is not None and self.driver.problem is not None:
            return _one_line(self.driver.problem)
        return None

    def result(self, status: str, error: str | None) -> TrialResult:
        request, metrics = self.request, self.metrics
        if self.accounting is not None:
            last_handled = self.pool.last_done_ns if self.pool is not None else None
            self.accounting.fill(metrics, last_handled_ns=last_handled)
        if self.phase is not None:
            end = self.phase[1] if self.phase[1] is not None else now_ns()
            metrics.duration_s = _seconds(end - self.phase[0])
        if self.sampler is not None:
            sampler = self.sampler
            if sampler.peak_threads:
                metrics.rss_peak_mb = sampler.peak_rss_mb
                metrics.threads_peak = sampler.peak_threads
                metrics.tasks_peak = sampler.peak_tasks
            metrics.broker_rss_mb = sampler.broker_rss_mb
            metrics.broker_cpu_percent = sampler.broker_cpu_percent
        metrics.trial_duration_s = _seconds(now_ns() - self.t0)
        return request.result("ok" if status == "ok" else "failed", error, self.started_at, metrics)

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
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), CLEANUP_TIMEOUT_S)
        if self.sampler is not None:
            with contextlib.suppress(Exception):
                await self.sampler.stop()


async def _bounded(step: Awaitable[T], timeout: float, stage: str) -> T:
    try:
        return await asyncio.wait_for(step, timeout)
    except TimeoutError:
        raise DriverError(f"timed out after {timeout:g}s while {stage}") from None


async def _within(waiting: Awaitable[Any], timeout: float) -> bool:
    """True if `waiting` finished within timeout."""
    try:
        await asyncio.wait_for(waiting, timeout)
    except TimeoutError:
        return False
    return True


def _seconds(elapsed_ns: int) -> float:
    return round(elapsed_ns / NS_PER_S, 4)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"
