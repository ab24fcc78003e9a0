"""`exprun run` records the finished run into the results store, after its run folder is on
disk; a store that cannot be written never costs the run its results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from exprun_process import environment, exprun, read_jsonl

pytestmark = pytest.mark.integration

SPEC = """\
version: 1
name: recorded
brokers:
  nats: {type: nats, workers: 8}
defaults: {message_size: 256B, settle_time: 100ms}
scenarios:
  Small: {messages: 500}
repetitions: 2
warmup: 0
reports: [markdown, json]
"""


def write_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "recorded.yaml"
    spec.write_text(SPEC)
    return spec


@pytest.mark.timeout(120)
def test_a_run_is_recorded_with_its_label_commit_and_testbed(tmp_path: Path) -> None:
    spec, store = write_spec(tmp_path), tmp_path / "team.sqlite"
    done = exprun(
        "run", str(spec), "--out", str(tmp_path / "run"), "--label", "PR 42",
        "--commit", "client-1.2.3", "--testbed", "ci-large",
        tmp=tmp_path, env=environment(tmp_path, EXPRUN_STORE=str(store)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"recorded in the store sqlite:///{store}" in done.stderr
    runs = exprun("history", "runs", "--store", str(store), tmp=tmp_path)
    assert "1 run(s)" in runs.stdout and "recorded@" in runs.stdout
    assert "testbed ci-large; commit client-1.2.3" in runs.stdout and "label 'PR 42'" in runs.stdout
    shown = exprun("history", "--store", str(store), "--format", "json", tmp=tmp_path)
    history = json.loads(shown.stdout)
    metrics = {s["metric"] for s in history["series"]}
    assert metrics == {"throughput", "latency_p99_ms"}  # the table's headline metrics
    [throughput] = [s for s in history["series"] if s["metric"] == "throughput"]
    [point] = throughput["points"]
    trials = [t for t in read_jsonl(tmp_path / "run" / "trials.jsonl")]
    assert sorted(point["trials"]) == sorted(t["metrics"]["throughput"] for t in trials)
    assert point["commit"] == "client-1.2.3" and point["report"].endswith("run/report.html")
    # Importing the same run folder again changes nothing.
    again = exprun("history", "import", str(tmp_path / "run"), "--store", str(store), tmp=tmp_path)
    assert again.stdout.startswith("already recorded:")


@pytest.mark.timeout(120)
def test_the_default_store_is_in_the_data_folder_and_no_store_skips_it(tmp_path: Path) -> None:
    spec, data = write_spec(tmp_path), tmp_path / "data"
    env = environment(tmp_path, XDG_DATA_HOME=str(data))
    done = exprun("run", str(spec), "--out", str(tmp_path / "one"), tmp=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    default = data / "exprun" / "history.sqlite"
    assert default.is_file() and f"recorded in the store sqlite:///{default}" in done.stderr
    skipped = exprun(
        "run", str(spec), "--out", str(tmp_path / "two"), "--no-store", tmp=tmp_path, env=env
    )
    assert skipped.returncode == 0 and "the store" not in skipped.stderr
    runs = exprun("history", "runs", tmp=tmp_path, env=env)
    assert "1 run(s)" in runs.stdout


@pytest.mark.timeout(120)
def test_a_store_that_cannot_be_written_keeps_the_results(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the store's folder should be")
    # Named: the run's results are on disk, and the failure is exit 3 in one line.
    started = time.monotonic()
    named = exprun(
        "run", str(spec), "--out", str(tmp_path / "named"),
        "--store", "postgresql://me:hidden@127.0.0.1:9/db", tmp=tmp_path,
    )  # fmt: skip
    assert named.returncode == 3, named.stderr
    assert time.monotonic() - started < 60
    assert "hidden" not in named.stderr and "Traceback" not in named.stderr
    assert len(read_jsonl(tmp_path / "named" / "trials.jsonl")) == 2
    assert (tmp_path / "named" / "report.md").is_file()
    # The default one: a warning; the run's own exit status stands.
    env = environment(tmp_path, XDG_DATA_HOME=str(blocked))
    default = exprun("run", str(spec), "--out", str(tmp_path / "default"), tmp=tmp_path, env=env)
    assert default.returncode == 0, default.stderr
    assert "exprun: warning: the run was not recorded" in default.stderr
    assert len(read_jsonl(tmp_path / "default" / "trials.jsonl")) == 2
