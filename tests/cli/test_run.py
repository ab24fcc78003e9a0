"""`exprun run` end to end on embedded brokers: run folder, accounting, nothing left behind."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from exprun_process import environment, exprun, no_leftovers, read_jsonl

pytestmark = pytest.mark.integration

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
    assert no_leftovers(tmp_path) == []


@pytest.mark.timeout(400)
def test_starter_spec_runs_on_embedded_brokers(tmp_path: Path) -> None:
    made = exprun("new", "starter", tmp=tmp_path)
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "starter.yaml").read_text()
    # What a newcomer meets: no `workers` anywhere, a % goal on a % metric.
    assert "\n    workers:" not in text and 'value: ">= 100%"' in text
    done = exprun("starter.yaml", "--out", "run", tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = read_jsonl(tmp_path / "run" / "trials.jsonl")
    assert len(trials) == 2 * 2 * 2 * (5 + 1)  # brokers x variants x scenarios x (reps + warm-up)
    assert all(t["status"] == "ok" and t["metrics"]["lost"] == 0 for t in trials)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "nothing lost" in report and "| pass" in report
    assert no_leftovers(tmp_path) == []


PROGRESS_SPEC = """\
version: 1
name: progress
brokers: {nats: {type: nats}}
defaults: {message_size: 256B, settle_time: 100ms}
scenarios:
  Steady: {duration: 4s, rate: 2000/s}
repetitions: 1
warmup: 0
reports: [json]
"""


@pytest.mark.timeout(120)
def test_a_terminal_sees_the_phase_go_by_second_by_second(tmp_path: Path) -> None:
    """On a terminal, each window of a running phase updates the progress line."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(PROGRESS_SPEC)
    main, terminal = pty.openpty()
    shown = b""
    try:
        running = subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "run", str(spec), "--out", "run", "--no-store"],
            cwd=tmp_path,
            env=environment(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
        )
        os.close(terminal)
        # Read as it writes, so a full terminal buffer never holds the run up.
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the run closed its end: it has exited
                break
            if not chunk:
                break
            shown += chunk
        returncode = running.wait(timeout=100)
    finally:
        os.close(main)
    assert returncode == 0
    lines = shown.decode(errors="replace").split("\r\x1b[2K")
    phases = [line for line in lines if "phase 0:" in line]
    assert phases and all("/0:04" in line and " msg/s  p99 " in line for line in phases), lines
    no_leftovers(tmp_path)
