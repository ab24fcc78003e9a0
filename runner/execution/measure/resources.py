"""Resource figures of the trial process (RSS, OS threads, asyncio tasks) and of a local broker's
nodes.

Sampling runs as an asyncio task, not a thread, so the sampler never shows up in the thread
counts it reports; its own task (and the trial's main task) are excluded from the task counts.
Helper processes a driver starts for the trial (the NATS publisher) count in the peaks: their
threads, and their unique memory (USS: pages shared with the trial process after the fork
are the trial's already).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

MB = 1024 * 1024  # "MB" in results is MiB, as process tools report it
# Each sample is the trial process's CPU, taken from the clients it measures (~0.15 ms: /proc
# reads of it and the broker, its task set): 10 a second still resolve each second's peak.
SAMPLE_INTERVAL_S = 0.1
# A helper's USS takes ~1 ms to read (/proc/PID/smaps_rollup): refreshed at most this often.
HELPER_MEMORY_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Usage:
    rss_mb: float
    threads: int
    tasks: int


@dataclass(frozen=True)
class NodeUsage:
    """One broker node over the phase; a node that exited keeps what was read before."""

    number: int
    peak_rss_mb: float | None
    cpu_percent: float | None
    gone: bool


def _summed(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(sum(known), 3) if known else None


class ResourceSampler:
    """Point-in-time usage on demand, and peaks sampled between start_phase() and end_phase()."""

    def __init__(
        self,
        broker_pids: Sequence[int] = (),
        interval: float = SAMPLE_INTERVAL_S,
        helpers: Callable[[], Sequence[int]] = tuple,
    ) -> None:
        self._process = psutil.Process()
        self._helpers = _Helpers(helpers)
        self._interval = interval
        self._harness: set[asyncio.Task[object]] = set()
        self._sampling = False
        self._task: asyncio.Task[None] | None = None
        self.peak_rss_mb = 0.0
        self._window_rss_mb = 0.0
        self.peak_threads = 0
        self.peak_tasks = 0
        self._nodes = [_BrokerProbe(pid) for pid in broker_pids]
        self._cpu_start: dict[int, tuple[float, float]] = {}
        self.loadgen_cpu_percent: float | None = None

    def exclude(self, task: asyncio.Task[object]) -> None:
        """A task of the harness itself (ticker, publisher): never counted as the trial's."""
        self._harness.add(task)

    def start(self) -> None:
        """Start the sampling task; it and the calling task are the harness's, never counted."""
        self._task = asyncio.create_task(self._run(), name="exprun-sampler")
        current = asyncio.current_task()
        self._harness = {t for t in (self._task, current) if t is not None}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def usage(self) -> Usage:
        return Usage(
            rss_mb=round(self._process.memory_info().rss / MB, 3),
            threads=self._process.num_threads(),
            tasks=len(asyncio.all_tasks() - self._harness),
        )

    def start_phase(self) -> None:
        self._sampling = True
        for node in self._nodes:
            node.start()
        self._cpu_start = self._cpu_times()
        self.sample()

    def sample_loadgen(self) -> None:
        """CPU of the busiest load-generator process since the phase began (% of one core)."""
        now = self._cpu_times()
        busiest = [
            (cpu - self._cpu_start[pid][0]) / (wall - self._cpu_start[pid][1])
            for pid, (cpu, wall) in now.items()
            if pid in self._cpu_start and wall > self._cpu_start[pid][1]
        ]
        if busiest:
            self.loadgen_cpu_percent = round(100.0 * max(busiest), 1)

    def _cpu_times(self) -> dict[int, tuple[float, float]]:
        """(CPU seconds, wall time) of the trial process and each helper process."""
        found: dict[int, tuple[float, float]] = {}
        for process in (self._process, *self._helpers.processes()):
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            found[process.pid] = (times.user + times.system, time.monotonic())
        return found

    def end_phase(self) -> None:
        self.sample()
        self._sampling = False
        for node in self._nodes:
            node.stop()

    def sample(self) -> None:
        """Fold the current usage into the peaks (also called at the phase's key moments)."""
        if not self._sampling:
            return
        usage = self.usage()
        helper_threads, helper_mb = self._helpers.usage()
        rss_mb = usage.rss_mb + helper_mb
        self.peak_rss_mb = round(max(self.peak_rss_mb, rss_mb), 3)
        self._window_rss_mb = max(self._window_rss_mb, rss_mb)
        self.peak_threads = max(self.peak_threads, usage.threads + helper_threads)
        self.peak_tasks = max(self.peak_tasks, usage.tasks)
        for node in self._nodes:
            node.sample()

    def window_peak_rss_mb(self) -> float | None:
        """The peak (trial process and helpers) since the last call; None before any sample."""
        peak, self._window_rss_mb = self._window_rss_mb, 0.0
        return round(peak, 1) if peak else None

    @property
    def broker_rss_mb(self) -> float | None:
        """Summed over the nodes (each node's own peak)."""
        return _summed([node.peak_rss_mb for node in self._nodes])

    @property
    def broker_cpu_percent(self) -> float | None:
        """Summed over the nodes (% of one core)."""
        return _summed([node.cpu_percent for node in self._nodes])

    @property
    def broker_nodes(self) -> list[NodeUsage]:
        """Each node's figures, in node order."""
        return [
            NodeUsage(number, node.peak_rss_mb, node.cpu_percent, node.gone)
            for number, node in enumerate(self._nodes, start=1)
        ]

    @property
    def gone_nodes(self) -> list[int]:
        """Pids of the broker nodes that exited during the trial."""
        return [node.pid for node in self._nodes if node.gone]

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self._interval)


class _Helpers:
    """Threads and unique memory of the driver's helper processes alive right now."""

    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self._pids = pids
        self._processes: dict[int, psutil.Process] = {}
        self._memory: dict[int, tuple[float, float]] = {}  # pid -> (read at, USS in MB)

    def processes(self) -> list[psutil.Process]:
        """The helper processes alive now."""
        found = []
        for pid in self._pids():
            try:
                if pid not in self._processes:
                    self._processes[pid] = psutil.Process(pid)
                found.append(self._processes[pid])
            except psutil.Error:
                continue
        return found

    def usage(self) -> tuple[int, float]:
        threads, memory = 0, 0.0
        for process in self.processes():
            try:
                threads += process.num_threads()
                read_at, uss = self._memory.get(process.pid, (0.0, 0.0))
                if time.monotonic() - read_at >= HELPER_MEMORY_INTERVAL_S:
                    uss = process.memory_full_info().uss / MB
                    self._memory[process.pid] = (time.monotonic(), uss)
                memory += uss
            except psutil.Error:
                continue  # it exited between the list and the read: nothing left to count
        return threads, memory


class _BrokerProbe:
    """Peak RSS and mean CPU (% of one core) of one broker node's process over the phase.

    A node killed mid-phase keeps its figures up to its last sample.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.gone = False
        self.peak_rss_mb: float | None = None
        self.cpu_percent: float | None = None
        self._start: tuple[float, float] | None = None
        self._last: tuple[float, float] | None = None
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._process, self.gone = None, True

    def start(self) -> None:
        self._start = self._last = self._cpu_and_wall()

    def stop(self) -> None:
        end = self._cpu_and_wall() or self._last
        if self._start is not None and end is not None and end[1] > self._start[1]:
            cpu = (end[0] - self._start[0]) / (end[1] - self._start[1])
            self.cpu_percent = round(100.0 * cpu, 2)

    def sample(self) -> None:
        if self._process is None:
            return
        try:
            if self._process.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(self.pid)
            rss = self._process.memory_info().rss / MB
        except psutil.Error:
            self._process, self.gone = None, True
            return
        self.peak_rss_mb = round(max(self.peak_rss_mb or 0.0, rss), 3)
        if self._start is not None:
            self._last = self._cpu_and_wall() or self._last

    def _cpu_and_wall(self) -> tuple[float, float] | None:
        if self._process is None:
            return None
        try:
            times = self._process.cpu_times()
        except psutil.Error:
            self._process, self.gone = None, True
            return None
        return times.user + times.system, time.monotonic()
