"""Child-process plumbing: children that die with their parent, and an exit that waits for all.

exprun starts brokers, a multiprocessing forkserver (which forks the trial processes), the
resource tracker that comes with it, and trial processes fork NATS publishers. On the way out
exprun stops each of them and waits for it; and it is the "child subreaper" of its own tree, so
a grandchild orphaned by its parent's death (a publisher whose trial process was killed) comes
back to exprun to be reaped, instead of to an init that may never reap it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NoReturn

import psutil

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
REAP_TIMEOUT_S = 5.0
REAP_POLL_S = 0.002


def _load_prctl() -> Callable[..., int] | None:
    """Resolve libc prctl before any fork (the child must not load libraries)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A function for the child to call: it dies (SIGKILL) with its parent (Linux only)."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def _setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return _setup


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux 3.4+), not to init."""
    return _PRCTL is not None and _PRCTL(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def stop_multiprocessing_helpers(timeout: float = REAP_TIMEOUT_S) -> None:
    """Stop the forkserver and the resource tracker, if running, and wait for them.

    Each stops when its "alive" pipe closes; multiprocessing never waits for them itself
    (its own _stop() would, but without a bound), so they would end as unreaped zombies.
    """
    from multiprocessing import forkserver, resource_tracker

    # Private state of the standard library, in this one place: the fd that keeps each alive.
    server: Any = forkserver._forkserver
    with server._lock:
        pid, alive_fd = server._forkserver_pid, server._forkserver_alive_fd
        server._forkserver_pid = server._forkserver_alive_fd = None
        address, server._forkserver_address = server._forkserver_address, None
        if pid is not None:
            _close_and_wait(alive_fd, pid, timeout)
            if isinstance(address, str) and not address.startswith("\0"):
                with contextlib.suppress(OSError):
                    os.unlink(address)
    tracker: Any = resource_tracker._resource_tracker
    with tracker._lock:
        pid, alive_fd = tracker._pid, tracker._fd
        tracker._pid = tracker._fd = None
        if pid is not None:
            _close_and_wait(alive_fd, pid, timeout)


def _close_and_wait(alive_fd: int | None, pid: int, timeout: float) -> None:
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
    if not _wait(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait(pid, timeout)


def _wait(pid: int, timeout: float) -> bool:
    """Reap `pid` within `timeout`; True once it is gone (or is not our child)."""
    deadline = time.monotonic() + timeout
    while not _reaped(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(REAP_POLL_S)
    return True


async def reap(pid: int, timeout: float) -> None:
    """Reap child `pid` without blocking the event loop; SIGKILL it if it is not gone after
    `timeout` (0: at once)."""
    deadline = time.monotonic() + timeout
    while not _reaped(pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            return
        await asyncio.sleep(REAP_POLL_S)


def _reaped(pid: int) -> bool:
    """True once child `pid` has exited and been reaped (or is not our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def reap_children(timeout: float = REAP_TIMEOUT_S) -> None:
    """Wait for every child left (adopted orphans included); kill what is still alive.

    Called last, once everything exprun started has been stopped in order: what remains is
    either already dead (a zombie to reap) or a straggler that must not outlive exprun.
    """
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no child left, in any state
        if pid:
            continue
        if time.monotonic() >= deadline:
            if killed:
                return  # unkillable (stuck in the kernel): nothing more a process can do
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    child.kill()
            killed, deadline = True, time.monotonic() + timeout
        time.sleep(0.005)


def kill_descendants() -> None:
    """SIGKILL the whole tree below us, then reap it (the immediate exit of a second Ctrl-C)."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    reap_children(timeout=1.0)


async def readable(conn: Connection) -> None:
    """Returns once `conn` has something to read (or its peer is gone), awaited on the loop."""
    loop = asyncio.get_running_loop()
    while not conn.poll():
        ready: asyncio.Future[None] = loop.create_future()

        def wake(ready: asyncio.Future[None] = ready) -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), wake)
        try:
            await ready
        finally:
            loop.remove_reader(conn.fileno())


def forked_body(parent_pid: int, name: str, body: Callable[[], None]) -> NoReturn:
    """In a child just forked from a process with a running event loop: die with the parent,
    run `body` on a fresh thread (this one is still inside the parent's loop), and exit."""
    code = 1
    try:
        # The parent's loop (inherited, never run here) wakes on the signal wakeup fd: a signal
        # to this process must not land there.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die = die_with_parent(parent_pid)
        if die is not None:
            die()
        runner = threading.Thread(target=body, name=name)
        runner.start()
        runner.join()
        code = 0
    finally:
        os._exit(code)
