"""Where a trial's time goes: py-spy samples one trial run in-process (benchmarks.probe),
subprocesses included, and the stacks are summarised per process and per package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from runner.execution.trial.request import TrialRequest
from schemas.results import TrialResult

SAMPLE_RATE_HZ = 500
PROFILE_TIMEOUT_S = 300.0
TOP_FRAMES = 6
# Frames where a thread waits rather than works: sampled, but no one's bottleneck.
IDLE_FRAMES = ("EpollSelector.select", "._wait_for_tstate_lock", "Event.wait", "Condition.wait")
# Work outside the measured phase (interpreter start, set-up, the result's summary, tear-down):
# samples under these frames are counted apart, so the shares describe the phase itself.
# Matched against whole function names: "X.f" or "f" (not "X.f.<locals>.g", which runs later).
OUTSIDE_PHASE = (
    "_find_and_load",
    "_Trial.result",
    "create_destination",
    "delete_destination",
    "connect_producers",
    "_connect_producers_here",
    "start_consumers",
    "Driver.close",
    "_PublisherProcess.start",
)
EXPRUN_PACKAGES = {"runner", "schemas", "benchmarks"}
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


@dataclass
class ProcessProfile:
    """Samples of one process: busy share per package and the busiest functions."""

    label: str
    samples: int = 0  # thread samples in the measured phase
    outside_phase: int = 0
    idle: int = 0
    packages: Counter[str] = field(default_factory=Counter)
    functions: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, object]:
        busy = max(1, self.samples - self.idle)
        return {
            "process": self.label,
            "samples": self.samples,
            "samples_outside_phase": self.outside_phase,
            "busy_share": round(busy / max(1, self.samples), 3),
            "packages": {k: round(v / busy, 3) for k, v in self.packages.most_common(TOP_FRAMES)},
            "top_functions": {
                k: round(v / busy, 3) for k, v in self.functions.most_common(TOP_FRAMES)
            },
        }


def find_py_spy() -> Path | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("py-spy")
    return Path(found) if found else None


def profile_trial(request: TrialRequest, env: dict[str, str] | None = None) -> dict[str, object]:
    """Profile of one trial: {"processes": [...]} or {"unavailable": why}."""
    py_spy = find_py_spy()
    if py_spy is None:
        return {"unavailable": "py-spy is not installed (pip install -e '.[test]')"}
    with tempfile.TemporaryDirectory(prefix="exprun-profile-") as tmp:
        request_path, raw_path = Path(tmp) / "request.json", Path(tmp) / "stacks.txt"
        request_path.write_text(request.model_dump_json())
        argv = [str(py_spy), "record", "--subprocesses", "--rate", str(SAMPLE_RATE_HZ)]
        argv += ["--format", "raw", "--output", str(raw_path), "--"]
        argv += [sys.executable, "-m", "benchmarks.probe", str(request_path)]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=PROFILE_TIMEOUT_S,
                env={**os.environ, **(env or {})},
                cwd=Path(__file__).resolve().parent.parent,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return {"unavailable": f"py-spy failed: {error}"}
        if done.returncode != 0 or not raw_path.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"unavailable": f"py-spy exit {done.returncode}: {last[:300]}"}
        failure = _trial_failure(done.stdout)
        if failure is not None:
            return {"unavailable": f"the profiled trial failed: {failure}"}
        processes = summarise_stacks(raw_path.read_text())
    return {"processes": [p.summary() for p in processes]}


def _trial_failure(stdout: str) -> str | None:
    """Why the probe's trial failed, from the result it printed; None if it was ok."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        return "the probe printed no result"
    result = TrialResult.model_validate_json(lines[-1])
    return None if result.status == "ok" else (result.error or "failed")


def summarise_stacks(raw: str) -> list[ProcessProfile]:
    """py-spy's raw (collapsed) stacks -> one profile per process, the busiest first."""
    by_process: dict[str, ProcessProfile] = {}
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        nesting = sum(1 for frame in frames if frame.startswith("process "))
        code = [frame for frame in frames if not frame.startswith("process ")]
        label = _process_label(nesting)
        profile = by_process.setdefault(label, ProcessProfile(label))
        if any(_outside_phase(frame) for frame in code):
            profile.outside_phase += count
            continue
        profile.samples += count
        if not code or any(idle in code[-1] for idle in IDLE_FRAMES):
            profile.idle += count
            continue
        function, package = _describe(code[-1])
        profile.functions[function] += count
        profile.packages[package] += count
    return sorted(by_process.values(), key=lambda p: p.samples - p.idle, reverse=True)


def _outside_phase(frame: str) -> bool:
    name = frame.split(" (", 1)[0]
    return any(name == marker or name.endswith(f".{marker}") for marker in OUTSIDE_PHASE)


def _process_label(nesting: int) -> str:
    # The probe runs the trial itself; its children are the forked NATS publisher.
    return "trial process" if nesting <= 1 else "publisher process (forked by the NATS driver)"


def _describe(frame: str) -> tuple[str, str]:
    """("function (dir/file.py)", package) of a py-spy frame, e.g. ("Parser.parse
    (protocol/parser.py)", "nats"); py-spy names files relative to their sys.path entry."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, "other"
    parts = Path(match.group("file")).parts
    function = f"{match.group('function')} ({'/'.join(parts[-2:])})"
    top = parts[0].removesuffix(".py") if parts else ""
    if top in EXPRUN_PACKAGES:
        return function, "exprun"
    if top.startswith("<frozen"):
        return function, "stdlib:importlib"
    if top in sys.stdlib_module_names:
        return function, f"stdlib:{top}"
    return function, top or "other"
