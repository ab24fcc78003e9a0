"""One trial run in this very process: `python -m benchmarks.probe REQUEST.json` prints its
TrialResult as JSON.

exprun runs a trial in a forked child of its forkserver; this runs the same coroutine
(runner.execution.trial.child) directly, so a profiler started on this process sees the
trial, and the environment (e.g. EXPRUN_NATS_PUBLISHER) can differ from one probe to the next.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from runner.execution.trial.child import run_trial_here
from runner.execution.trial.request import TrialRequest


def main() -> None:
    request = TrialRequest.model_validate_json(Path(sys.argv[1]).read_text())
    result = asyncio.run(run_trial_here(request, spawn_s=0.0))
    print(result.model_dump_json())


if __name__ == "__main__":
    main()
