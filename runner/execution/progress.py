"""`[i/n] cell  elapsed  ETA` on a terminal while a run goes on."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from runner.execution.plan import Plan, PlannedTrial, trial_estimate


class Progress:
    """`[i/n] cell  elapsed  ETA` on a terminal; nothing when output is not a terminal."""

    def __init__(self, plan: Plan, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.total = len(plan.trials)
        self.expected = [trial_estimate(t.config, warmup=t.warmup) for t in plan.trials]
        self.started = time.monotonic()
        self.first: int | None = None  # a resumed run starts part-way through the plan

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
        line = (
            f"[{position + 1}/{self.total}] {trial.cell} ({kind})  "
            f"elapsed {_clock(elapsed)}  ETA {_clock(eta)}"
        )
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"
