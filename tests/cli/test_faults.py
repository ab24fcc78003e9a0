"""Faults a long benchmark run meets: dead brokers, interrupts, resume, full disks, secrets."""

from __future__ import annotations

import json
import resource
import signal
import time
from pathlib import Path

import pytest
from exprun_process import (
    NATS_SPEC,
    environment,
    exprun,
    no_leftovers,
    process_named,
    read_jsonl,
    start_exprun,
    wait_for_trials,
)

from runner.execution.brokers import start_nats

pytestmark = pytest.mark.integration

PLANNED = 2 * 2 * 3  # variants x scenarios x repetitions


def write_spec(tmp: Path, text: str = NATS_SPEC) -> Path:
    spec = tmp / "faults.yaml"
    spec.write_text(text)
    return spec


@pytest.mark.timeout(180)
def test_embedded_broker_killed_mid_trial_is_restarted(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, NATS_SPEC.replace("Small: {messages: 300}\n", ""))
    run = tmp_path / "run"
    process = start_exprun("run", str(spec), "--out", str(run), tmp=tmp_path)
    wait_for_trials(run / "trials.jsonl", 2)
    time.sleep(0.3)  # into the next trial's measured phase (1.5 s of paced publishing)
    process_named("nats-server", tmp_path).kill()
    _, stderr = process.communicate(timeout=150)
    assert process.returncode == 1, stderr[-2000:]
    assert "restarting it" in stderr and "Traceback" not in stderr
    trials = sorted(read_jsonl(run / "trials.jsonl"), key=lambda t: t["index"])
    assert len(trials) == 2 * 3
    failed = [t for t in trials if t["status"] == "failed"]
    assert len(failed) >= 1 and all(t["error"] for t in failed)
    assert trials[-1]["status"] == "ok", "the run did not go on with a restarted broker"
    assert "failed" in (run / "report.md").read_text()
    assert no_leftovers(tmp_path) == []


@pytest.mark.timeout(180)
def test_external_broker_that_disappears_fails_its_trials_fast(tmp_path: Path) -> None:
    broker = start_nats(workdir_parent=tmp_path)
    try:
        text = NATS_SPEC.replace(
            "    type: nats\n", f"    type: nats\n    endpoint: {broker.address}\n"
        )
        spec = write_spec(tmp_path, text.replace("repetitions: 3", "repetitions: 5"))
        run = tmp_path / "run"
        process = start_exprun("run", str(spec), "--out", str(run), tmp=tmp_path)
        wait_for_trials(run / "trials.jsonl", 3)
        broker.stop()
        stopped = time.monotonic()
        _, stderr = process.communicate(timeout=120)
    finally:
        broker.stop()
    # Later trials fail at once; only the one in flight waits for its drain timeout.
    assert time.monotonic() - stopped < 30
    assert process.returncode == 1, stderr[-2000:]
    trials = read_jsonl(run / "trials.jsonl")
    assert len(trials) == 2 * 2 * 5
    unreachable = [t for t in trials if "unreachable" in (t["error"] or "")]
    assert len(unreachable) >= 10
    assert no_leftovers(tmp_path) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_finished_trials_and_stops_everything(
    tmp_path: Path, sig: signal.Signals
) -> None:
    spec = write_spec(tmp_path, NATS_SPEC.replace("repetitions: 3", "repetitions: 30"))
    run = tmp_path / "run"
    process = start_exprun("run", str(spec), "--out", str(run), tmp=tmp_path)
    wait_for_trials(run / "trials.jsonl", 3)
    process.send_signal(sig)
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - started < 5
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    recorded = read_jsonl(run / "trials.jsonl")
    assert len(recorded) >= 3 and all(t["status"] == "ok" for t in recorded)
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["interrupted"] is True and run_info["complete"] is False
    report = (run / "report.md").read_text()
    assert "partial" in report.lower()
    assert "# faults" in stdout
    assert no_leftovers(tmp_path) == []


@pytest.mark.timeout(120)
def test_second_interrupt_exits_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, NATS_SPEC.replace("repetitions: 3", "repetitions: 30"))
    run = tmp_path / "run"
    process = start_exprun("run", str(spec), "--out", str(run), tmp=tmp_path)
    wait_for_trials(run / "trials.jsonl", 2)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert no_leftovers(tmp_path) == []


@pytest.mark.timeout(240)
def test_resume_runs_only_what_is_missing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    run = tmp_path / "run"
    process = start_exprun("run", str(spec), "--out", str(run), tmp=tmp_path)
    wait_for_trials(run / "trials.jsonl", 3)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 130
    before = read_jsonl(run / "trials.jsonl")
    # A crash can cut the last line: it is dropped with a warning and its trial runs again.
    lines = (run / "trials.jsonl").read_text().splitlines()
    (run / "trials.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    done = exprun("run", str(spec), "--resume", str(run), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: " in done.stderr and "incomplete" in done.stderr
    assert "Traceback" not in done.stderr
    trials = read_jsonl(run / "trials.jsonl")
    keys = [(t["variant"], t["scenario"], t["repetition"]) for t in trials]
    assert len(trials) == PLANNED and len(set(keys)) == PLANNED
    kept = {(t["variant"], t["scenario"], t["repetition"]) for t in before[:-1]}
    assert kept <= set(keys)
    assert "partial" not in (run / "report.md").read_text().lower().split("## ")[0]
    assert no_leftovers(tmp_path) == []
    # The same folder with a changed spec is refused: its trials would not be comparable.
    spec.write_text(NATS_SPEC.replace("workers: 32", "workers: 33"))
    refused = exprun("run", str(spec), "--resume", str(run), tmp=tmp_path)
    assert refused.returncode == 2
    assert "the spec changed since that run" in refused.stderr


def test_unreachable_external_broker_is_exit_3_before_any_trial(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        NATS_SPEC.replace("    type: nats\n", "    type: nats\n    endpoint: nats://127.0.0.1:9\n"),
    )
    started = time.monotonic()
    done = exprun("run", str(spec), "--out", str(tmp_path / "run"), tmp=tmp_path)
    assert time.monotonic() - started < 10
    assert done.returncode == 3, done.stderr
    assert "broker 'nats' (nats)" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "trials.jsonl").read_text()


def test_missing_java_is_exit_3_with_what_to_install(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        NATS_SPEC.replace("brokers:\n", "brokers:\n  kafka:\n    type: kafka\n    workers: 4\n"),
    )
    env = environment(tmp_path, JAVA_HOME=str(tmp_path / "no-java"))
    done = exprun("run", str(spec), "--out", str(tmp_path / "run"), tmp=tmp_path, env=env)
    assert done.returncode == 3, done.stderr
    assert "broker 'kafka' (kafka)" in done.stderr and "install" in done.stderr.lower()
    assert "--broker nats" in done.stderr and "Traceback" not in done.stderr
    assert no_leftovers(tmp_path) == []


def test_unwritable_output_folder_is_refused_before_any_broker(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    spec = write_spec(tmp_path)
    done = exprun("run", str(spec), "--out", str(tmp_path / "a-file" / "run"), tmp=tmp_path)
    assert done.returncode == 3
    assert "cannot write the run folder" in done.stderr and "Traceback" not in done.stderr
    assert no_leftovers(tmp_path) == []


@pytest.mark.timeout(180)
def test_full_disk_mid_run_stops_cleanly(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, NATS_SPEC.replace("repetitions: 3", "repetitions: 20"))
    run = tmp_path / "run"
    # Bytes per file: trials.jsonl (some 4 KB a trial) outgrows it after about eight of 80.
    limit = 32 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = start_exprun(
        "run", str(spec), "--out", str(run), tmp=tmp_path, preexec_fn=small_files
    )
    _, stderr = process.communicate(timeout=150)
    assert process.returncode == 3, stderr[-2000:]
    assert "cannot record trial results" in stderr and "Traceback" not in stderr
    lines = (run / "trials.jsonl").read_text().splitlines()
    assert len(lines) >= 5
    # Everything recorded before the disk filled reads back whole.
    complete = read_jsonl_prefix(run / "trials.jsonl")
    assert len(complete) >= len(lines) - 1
    assert no_leftovers(tmp_path) == []


def read_jsonl_prefix(path: Path) -> list[dict[str, object]]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


@pytest.mark.timeout(240)
def test_secret_from_environment_appears_in_no_output(tmp_path: Path) -> None:
    secret = "s3cr3t-planted-9f8e7d"
    spec = write_spec(
        tmp_path,
        """\
version: 1
name: secrets
description: a password comes from ${EXPRUN_TEST_PASSWORD}
brokers:
  kafka:
    type: kafka
    producer: {acks: all, sasl.password: "${EXPRUN_TEST_PASSWORD}"}
    workers: 8
  nats:
    type: nats
    workers: 8
defaults: {message_size: 256B, settle_time: 100ms}
scenarios:
  Small: {messages: 200}
repetitions: 1
warmup: 0
reports: [markdown, csv, json, html]
""",
    )
    run = tmp_path / "run"
    env = environment(tmp_path, EXPRUN_TEST_PASSWORD=secret)
    done = exprun("run", str(spec), "--out", str(run), tmp=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert secret not in done.stdout and secret not in done.stderr
    outputs = [p for p in run.rglob("*") if p.is_file()]
    assert {p.name for p in outputs} >= {
        "spec.yaml",
        "trials.jsonl",
        "environment.json",
        "run.json",
        "report.md",
        "results.json",
        "report.html",
        "trials.csv",
    }
    for path in outputs:
        assert secret.encode() not in path.read_bytes(), f"secret leaked into {path.name}"
    assert '"sasl.password":"***"' in (run / "trials.jsonl").read_text()
    invalid = exprun("validate", str(spec), tmp=tmp_path, env=env)
    assert invalid.returncode == 0 and secret not in invalid.stdout + invalid.stderr
