"""Core NATS end to end: an overloaded subscriber's loss is counted, and the report names its
cause (the server's slow-consumer events, from its own figures) and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from exprun_process import exprun, no_leftovers, read_jsonl

pytestmark = pytest.mark.integration

OVERLOAD_SPEC = """\
version: 1
name: core-overload
brokers:
  nats:
    type: nats
    jetstream: false
    workers: 1
    # The server cuts off a subscriber with more than 64 KiB waiting for it.
    server: {max_pending: 64KB, max_payload: 8KB}
defaults: {message_size: 1KiB, settle_time: 100ms, producers: 2}
scenarios:
  Flood: {messages: 100000}
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.timeout(240)
def test_core_nats_overload_is_counted_and_explained(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(OVERLOAD_SPEC)
    out = tmp_path / "run"
    done = exprun("run", str(spec), "--out", str(out), "--no-store", tmp=tmp_path, timeout=200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [trial] = read_jsonl(out / "trials.jsonl")
    m = trial["metrics"]
    assert trial["status"] == "ok" and trial["publish_policy"]["at_most_once"] is True
    assert (m["sent"], m["acked"], m["duplicated"]) == (100_000, 100_000, 0)
    assert m["lost"] > 0 and m["received"] + m["lost"] == m["sent"]
    assert m["slow_consumers"] >= 1
    report = (out / "report.md").read_text()
    assert "the server cut off" in report and "slow consumer(s)" in report
    assert "core NATS delivers at most once" in report
    no_leftovers(tmp_path)
