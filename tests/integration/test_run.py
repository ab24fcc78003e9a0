"""`exprun run` end to end on embedded brokers: run folder, accounting, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

SPEC = """\
version: 1
name: tiny
brokers:
  nats:
    type: nats
    stream: {storage: memory, max_msgs: 100000, max_bytes: 100MB}
    workers: 16
  kafka:
    type: kafka
    producer: {acks: all, linger.ms: 5}
    workers: 16
defaults:
  message_size: 512B
  settle_time: 200ms
  drain_timeout: 20s
scenarios:
  Small: {messages: 300}
  Large: {messages: 1000}
variants:
  narrow: {brokers: {nats: {workers: 4}}}
  wide: {brokers: {nats: {workers: 64}}}
baseline: narrow
repetitions: 2
warmup: 0
reports: [markdown, json]
"""


def exprun(*args: str, tmp: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp,
        env={**os.environ, "TMPDIR": str(tmp)},
        timeout=timeout,
    )


def leftovers(tmp: Path) -> list[str]:
    """Broker or trial processes whose command line points into this test's temp dir."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(tmp) in cmdline and process.pid != os.getpid():
            found.append(cmdline[:200])
    return found


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.timeout(400)
def test_run_records_every_trial_exactly(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    done = exprun("run", str(spec), "--out", str(tmp_path / "run"), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    run = tmp_path / "run"
    # Settle waits overlap, so trials may finish (and be recorded) out of order.
    trials = sorted(read_jsonl(run / "trials.jsonl"), key=lambda t: int(str(t["index"])))
    assert [t["index"] for t in trials] == list(range(16))
    assert len(trials) == 2 * 2 * 2 * 2  # brokers x variants x scenarios x repetitions
    messages = {"Small": 300, "Large": 1000}
    for trial in trials:
        metrics = trial["metrics"]
        assert isinstance(metrics, dict)
        assert trial["status"] == "ok", trial["error"]
        sent = messages[str(trial["scenario"])]
        assert (metrics["sent"], metrics["acked"], metrics["received"]) == (sent, sent, sent)
        assert metrics["lost"] == 0 and metrics["duplicated"] == 0
        assert metrics["success_rate"] == 100.0
        assert metrics["broker_rss_mb"] is not None
    # Interleaved: within a round the variants alternate for each broker and scenario.
    assert [t["variant"] for t in trials[:2]] == ["narrow", "wide"]
    environment = json.loads((run / "environment.json").read_text())
    assert {"nats", "kafka"} <= set(environment["brokers"])
    assert environment["clients"]["librdkafka"]
    info = json.loads((run / "run.json").read_text())
    assert info["complete"] is True and info["planned_trials"] == 16
    assert (run / "spec.yaml").read_text() == SPEC
    assert (run / "report.md").is_file() and (run / "results.json").is_file()
    assert leftovers(tmp_path) == []


@pytest.mark.timeout(300)
def test_interrupt_keeps_finished_trials_and_stops_everything(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC.replace("repetitions: 2", "repetitions: 20"))
    run = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "run",
            str(spec),
            "--out",
            str(run),
            "--broker",
            "nats",
        ],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    trials = run / "trials.jsonl"
    while time.monotonic() < deadline:
        if trials.is_file() and len(trials.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("no trial finished within 120 s")
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - started < 15
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    recorded = read_jsonl(trials)
    assert len(recorded) >= 3
    assert all(t["status"] == "ok" for t in recorded)
    info = json.loads((run / "run.json").read_text())
    assert info["interrupted"] is True and info["complete"] is False
    assert leftovers(tmp_path) == []


def test_unreachable_external_broker_is_exit_3(tmp_path: Path) -> None:
    spec = tmp_path / "external.yaml"
    spec.write_text(
        SPEC.replace("    type: nats\n", "    type: nats\n    endpoint: nats://127.0.0.1:1\n")
    )
    started = time.monotonic()
    done = exprun("run", str(spec), "--broker", "nats", "--out", str(tmp_path / "r"), tmp=tmp_path)
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 30
    assert "broker 'nats' (nats)" in done.stderr and "Traceback" not in done.stderr
