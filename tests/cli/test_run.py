"""`exprun run` end to end on embedded brokers: run folder, accounting, nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from exprun_process import exprun, no_leftovers, read_jsonl

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
