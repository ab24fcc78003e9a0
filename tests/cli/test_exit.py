"""However exprun ends, every process it started is stopped and waited for: none is left over,
not even as a zombie for an init that never reaps (tests/subreaper.py plays one)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from exprun_process import NATS_SPEC, environment, no_leftovers, wait_for_trials

from runner.execution.brokers.base import KEEP_DIR_ENV

pytestmark = pytest.mark.integration

SUBREAPER = Path(__file__).resolve().parents[1] / "subreaper.py"
TINY = NATS_SPEC.replace("repetitions: 3", "repetitions: 1")
LONG = NATS_SPEC.replace("repetitions: 3", "repetitions: 30")


class Watched:
    """exprun under the subreaper, with every descendant it ever had remembered."""

    def __init__(self, tmp: Path, spec_text: str, **env: str) -> None:
        spec = tmp / "spec.yaml"
        spec.write_text(spec_text)
        self.run = tmp / "run"
        argv = [sys.executable, str(SUBREAPER), sys.executable, "-m", "runner.cli"]
        argv += ["run", str(spec), "--out", str(self.run)]
        self.wrapper = subprocess.Popen(
            argv, cwd=tmp, env=environment(tmp, **env), stdout=subprocess.PIPE, text=True
        )
        assert self.wrapper.stdout is not None
        self.exprun = psutil.Process(json.loads(self.wrapper.stdout.readline())["pid"])
        self.seen: dict[int, float] = {}

    def watch(self) -> list[psutil.Process]:
        """exprun's descendants now (also remembered, with their start times)."""
        try:
            found = self.exprun.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for process in found:
            try:
                self.seen.setdefault(process.pid, process.create_time())
            except psutil.Error:
                continue
        return found

    def wait_for_publisher(self, timeout: float = 60) -> None:
        """Until a trial's NATS publisher (exprun > forkserver > trial > publisher) runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.watch():
                try:
                    if len(process.parents()) >= len(self.exprun.parents()) + 3:
                        return
                except psutil.Error:
                    continue
            time.sleep(0.02)
        raise AssertionError("no NATS publisher process appeared")

    def finish(self, timeout: float = 120) -> tuple[int, list[dict[str, object]]]:
        """(exprun's exit code, processes of its tree that outlived it)."""
        while self.wrapper.poll() is None and self.exprun.is_running():
            self.watch()
            time.sleep(0.02)
        out, _ = self.wrapper.communicate(timeout=timeout)
        report = json.loads(out.strip().splitlines()[-1])
        return int(report["exit_code"]), list(report["adopted"])

    def survivors(self) -> list[int]:
        """Remembered descendants still in the process table, in any state."""
        alive = []
        for pid, started in self.seen.items():
            try:
                if psutil.Process(pid).create_time() == started:
                    alive.append(pid)
            except psutil.Error:
                continue
        return alive


@pytest.mark.timeout(180)
def test_normal_end_leaves_no_process(tmp_path: Path) -> None:
    watched = Watched(tmp_path, TINY)
    code, adopted = watched.finish()
    assert code == 0
    assert adopted == []
    assert len(watched.seen) >= 3, "the run started no broker, forkserver or trial process"
    assert watched.survivors() == []
    assert no_leftovers(tmp_path) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "signals",
    [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
    ids=["SIGINT", "SIGTERM", "SIGINT twice"],
)
def test_interrupt_mid_trial_leaves_no_process(
    tmp_path: Path, signals: list[signal.Signals]
) -> None:
    watched = Watched(tmp_path, LONG)
    wait_for_trials(watched.run / "trials.jsonl", 2)
    watched.wait_for_publisher()
    for sig in signals:
        watched.exprun.send_signal(sig)
        time.sleep(0.05)
    code, adopted = watched.finish()
    assert code == 130
    assert adopted == []
    assert watched.survivors() == []
    assert no_leftovers(tmp_path) == []


@pytest.mark.timeout(180)
def test_error_exit_leaves_no_process(tmp_path: Path) -> None:
    # NATS starts, then Kafka cannot: exit 3 with a broker to stop on the way out.
    kafka = "  kafka:\n    type: kafka\n    workers: 4\n"
    text = NATS_SPEC.replace("defaults:\n", kafka + "defaults:\n")
    # The kept broker folder proves NATS ran: it may live too briefly for the watcher to see.
    no_java = str(tmp_path / "no-java")
    watched = Watched(tmp_path, text, JAVA_HOME=no_java, **{KEEP_DIR_ENV: "1"})
    code, adopted = watched.finish()
    assert code == 3
    assert adopted == []
    logs = [log.read_text() for log in tmp_path.glob("exprun-nats-*/server.log")]
    assert any("Server is ready" in log for log in logs), "NATS was never started"
    assert watched.survivors() == []
    assert no_leftovers(tmp_path) == []
