"""A trial's load-generator processes on another host (engine: dask).

`run_shares` is the Dask task: on a worker offering the resource loadgen=1 it starts one fresh
interpreter per share (`python -m runner.execution.trial.remote`), waits for them and says how
each ended. Nothing of Dask runs in those processes: each connects back to its trial, has its
clock offset measured, takes the coordinator's clock, and then serves exactly as a forked share.

This module imports only the standard library and the link at module level: the clock must be
shifted before any module that takes it is imported.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from runner.execution.trial.links import Hello, answer_clock, connect

STDERR_TAIL_LINES = 5


@dataclass(frozen=True)
class ShareLaunch:
    """What a host's shares need: where their trial listens, its key, and the trial itself."""

    address: tuple[str, int]
    authkey: bytes
    request_json: str
    shares: tuple[int, ...]  # the numbers of this host's shares
    processes: int  # shares of the trial, over every host
    skew_ns: int = 0  # self-test: this host's clock runs that far ahead


@dataclass(frozen=True)
class ShareExit:
    """How one share process ended: its exit code and the end of what it wrote to stderr."""

    share: int
    code: int
    stderr_tail: str


def run_shares(launch: ShareLaunch) -> list[ShareExit]:
    """The Dask task: this host's share processes, started, waited for, and how they ended."""
    with contextlib.ExitStack() as stack:
        started = []
        for share in launch.shares:
            log = stack.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            assert process.stdin is not None
            process.stdin.write(pickle.dumps((launch, share)))
            process.stdin.close()
            started.append((share, process, log))
        exits = []
        for share, process, log in started:
            process.wait()
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()
            tail = "\n".join(lines[-STDERR_TAIL_LINES:])
            exits.append(ShareExit(share, process.returncode, tail))
        return exits


def main() -> None:
    """A share process: connect back, take the coordinator's clock, serve the trial."""
    launch, share = pickle.load(sys.stdin.buffer)
    assert isinstance(launch, ShareLaunch)
    from runner.process import die_with_parent

    die = die_with_parent(os.getppid())
    if die is not None:
        die()  # with the Dask worker that started us
    skew = launch.skew_ns

    def clock() -> int:
        return time.monotonic_ns() + skew

    conn = connect(launch.address, launch.authkey, Hello(share))
    offset = answer_clock(conn, clock)
    from runner.execution.measure.messages import shift_clock

    shift_clock(skew - offset)
    # Only now: every module below takes the corrected clock.
    from runner.execution.trial.shares import serve_remote

    serve_remote(conn, launch.request_json, share, launch.processes)


if __name__ == "__main__":
    # Run as the module it is, so that what was pickled as its classes is these classes.
    from runner.execution.trial import remote

    remote.main()
