"""`[i/n] cell  elapsed  ETA` on a terminal while a run goes on; during a trial's measured
phase, its time and the last window's rate, p99 and messages in flight too."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from runner.execution.plan import Plan, PlannedTrial, trial_estimate
from runner.execution.trial.request import PhaseWindow


class Progress:
    """`[i/n] cell  elapsed  ETA` on a terminal; nothing when output is not a terminal."""

    def __init__(self, plan: Plan, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.total = len(plan.trials)
        self.expected = [trial_estimate(t.config, warmup=t.warmup) for t in plan.trials]
        self.started = time.monotonic()
        self.first: int | None = None  # a resumed run starts part-way through the plan
        self._line = ""  # the current trial's part
        self._eta = ""  # the run's elapsed time and ETA as the current trial started
        self._phase_s: float | None = None  # the current trial's planned phase, when known

    def trial_started(self, position: int, trial: PlannedTrial) -> None:
        if not self.enabled:
            return
        if self.first is None:
            self.first = position
        elapsed = time.monotonic() - self.started
        done = sum(self.expected[self.first : position])
        left = sum(self.expected[position:])
        # Scale the rough per-trial estimates by how fast this machine has actually been.
        eta = left * (elapsed / done) if done else left
        kind = "warm-up" if trial.warmup else f"rep {trial.repetition}"
        self._line = f"[{position + 1}/{self.total}] {trial.cell} ({kind})"
        self._eta = f"elapsed {_clock(elapsed)}  ETA {_clock(eta)}"
        self._phase_s = trial.config.workload.phase_seconds
        self._write(f"{self._line}  {self._eta}")

    def phase_window(self, window: PhaseWindow) -> None:
        """The running trial's phase so far: its time, and its last window's figures."""
        if not self.enabled or not self._line:
            return
        total = f"/{_clock(self._phase_s)}" if self._phase_s else ""
        p99 = f"{window.p99_ms:.2f} ms" if window.p99_ms is not None else "-"
        self._write(
            f"{self._line}  phase {_clock(window.at_s)}{total}  "
            f"{window.received_per_s:,.0f} msg/s  p99 {p99}  in flight {window.in_flight:,}  "
            f"{self._eta}"
        )

    def _write(self, line: str) -> None:
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"
