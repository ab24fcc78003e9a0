"""Embedded clusters and faults end to end: `exprun run` starts the clusters, the run does the
faults, and the trials' books stay exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from exprun_process import exprun, no_leftovers, read_jsonl, run_spec

pytestmark = pytest.mark.integration

NATS_SPEC = """\
version: 1
name: nats-cluster
brokers:
  nats:
    type: nats
    nodes: 3
    stream: {storage: file, replicas: 3}
    # A delivery lost with a leader is sent again after ack_wait: within the drain timeout.
    consumer: {kind: pull, ack: explicit, ack_wait: 2s, max_ack_pending: 5000, batch: 200}
    workers: 32
defaults: {message_size: 512B, settle_time: 100ms, drain_timeout: 15s}
scenarios:
  Pause:
    duration: 6s
    rate: 1000/s
    faults:
      - {at: 2s, action: pause_leader, for: 2s}
  Kill:
    duration: 14s
    rate: 500/s
    faults:
      - {at: 2s, action: kill_leader}
      - {at: 12s, action: restart}
variants:
  deadline-5s: {brokers: {nats: {server: {write_deadline: 5s}}}}
  deadline-7s: {brokers: {nats: {server: {write_deadline: 7s}}}}
baseline: deadline-5s
repetitions: 1
warmup: 0
reports: [markdown, json]
"""

KAFKA_SPEC = """\
version: 1
name: kafka-cluster
brokers:
  kafka:
    type: kafka
    nodes: 3
    server: {min.insync.replicas: 2}
    jvm: {heap: 512m}
    topic: {partitions: 3, replication_factor: 3}
    workers: 32
defaults: {message_size: 512B, settle_time: 100ms, drain_timeout: 15s}
scenarios:
  Failover:
    messages: 6000
    rate: 1500/s
    faults:
      - {at: 40%, action: kill_leader}
      - {at: 70%, action: restart}
variants:
  acks-all: {brokers: {kafka: {producer: {acks: all, enable.idempotence: true}}}}
  acks-1: {brokers: {kafka: {producer: {acks: 1, enable.idempotence: false}}}}
baseline: acks-all
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


def assert_exact(trial: dict[str, Any]) -> None:
    """Every message sent was acked or given up (failed or unknown); what was acked and not
    lost arrived; of what was given up, only messages of unknown outcome may have arrived."""
    m = trial["metrics"]
    given_up = sum(m["publish_errors"].values())
    assert given_up == m["publish_failed"] + m["publish_unknown"], m
    assert m["sent"] == m["acked"] + given_up, m
    assert m["acked"] - m["lost"] <= m["received"] <= m["acked"] - m["lost"] + given_up, m
    assert m["failed_delivered"] == 0, m
    assert m["success_rate"] == pytest.approx(100.0 * m["received"] / m["sent"], abs=1e-3)


@pytest.mark.timeout(300)
def test_nats_cluster_pause_kill_and_a_server_setting_per_variant(tmp_path: Path) -> None:
    trials = run_spec(tmp_path, NATS_SPEC, timeout=240)
    assert [t["status"] for t in trials] == ["ok"] * 4, [t["error"] for t in trials]
    for trial in trials:
        assert_exact(trial)
        assert [n["node"] for n in trial["broker_nodes"]] == [1, 2, 3]
        [*faults] = trial["faults"]
        assert all(f["error"] is None and f["at_s"] is not None for f in faults), faults
        if trial["scenario"] == "Pause":
            # Publishes wait for the paused leader: about as long as the pause.
            assert 1.5 <= trial["metrics"]["unavailable_s"] <= 3.5, trial["metrics"]
            assert faults[0]["node"] in (1, 2, 3) and 1.9 <= faults[0]["at_s"] <= 2.5
            assert trial["metrics"]["fault_latency_ms"]["max"] >= 1000
        else:
            # R3 with explicit acks: a leader kill loses nothing and duplicates nothing; the
            # stream elects a new leader (seconds: the raft election timeout) and is back.
            # Publishes refused meanwhile are retried by id until stored: every one arrives.
            m = trial["metrics"]
            assert m["lost"] == 0 and m["duplicated"] == 0 and m["success_rate"] == 100.0, m
            assert m["publish_retries"] > 0 and m["publish_errors"] == {}, m
            assert faults[0]["node"] in (1, 2, 3) and faults[1]["action"] == "restart"
            assert 1.9 <= faults[0]["at_s"] <= 2.5 and 11.9 <= faults[1]["at_s"] <= 12.5
            assert faults[0]["recovery_s"] is not None and faults[0]["recovery_s"] < 10
            assert trial["publish_policy"]["retried_by"] == "exprun"
            # The broker's side: the run read every node each second; the killed one did not
            # answer while it was down, and the stream's leadership left it.
            telemetry = trial["telemetry"]
            assert [n["node"] for n in telemetry["nodes"]] == [1, 2, 3]
            assert telemetry["failures"] > 0 and trial["warnings"] == []
            moved = telemetry["events"][0]
            assert moved["text"].startswith(f"stream leader moved from node {faults[0]['node']} ")
            assert faults[0]["at_s"] <= moved["at_s"] <= faults[0]["at_s"] + 10
            assert m["leader_changes"] >= 1 and m["replica_lag_peak"] is not None
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    instances = environment["brokers"]
    assert set(instances) == {"nats[deadline-5s]", "nats[deadline-7s]"}
    assert instances["nats[deadline-5s]"]["address"] != instances["nats[deadline-7s]"]["address"]
    # Each variant ran on its own cluster, as its server reports its setting (in ns).
    assert instances["nats[deadline-5s]"]["reported"] == {"write_deadline": 5_000_000_000}
    assert instances["nats[deadline-7s]"]["reported"] == {"write_deadline": 7_000_000_000}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Faults" in report and "pause_leader at 2s" in report
    assert "Like with like: every side retries idempotently" in report


ONE_TRY_SPEC = """\
version: 1
name: one-try
brokers:
  nats:
    type: nats
    nodes: 3
    stream: {storage: file, replicas: 3}
    consumer: {kind: pull, ack: explicit, ack_wait: 2s, max_ack_pending: 5000, batch: 200}
    publish: {delivery_timeout: 0s}
    workers: 32
defaults: {message_size: 512B, settle_time: 100ms, drain_timeout: 60s}
scenarios:
  Kill:
    duration: 8s
    rate: 500/s
    faults:
      - {at: 2s, action: kill_leader}
      - {at: 7s, action: restart}
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.timeout(180)
def test_nats_one_try_fails_what_the_cluster_refused_and_none_of_it_arrives(
    tmp_path: Path,
) -> None:
    [trial] = run_spec(tmp_path, ONE_TRY_SPEC, timeout=150)
    assert trial["status"] == "ok", trial["error"]
    assert_exact(trial)  # no message both failed and delivered
    m = trial["metrics"]
    # While a new leader was elected, each publish got one try and "no responders".
    assert m["publish_failed"] > 0 and m["success_rate"] < 100.0, m
    assert m["publish_errors"]["no responders (no stream for the subject)"] > 0, m
    assert m["publish_retries"] == 0 and m["duplicate_acks"] == 0, m
    # What was in flight at the kill is unknown after ack_timeout (5 s), not after the
    # 60 s drain timeout.
    assert m["duration_s"] < 8 + 5 + 10, m
    assert trial["publish_policy"]["retried_by"] is None
    report = (tmp_path / "run" / "report.md").read_text()
    assert "nats/default: one try (delivery_timeout 0s, ack_timeout 5s)." in report


PAUSE_SPEC = """\
version: 1
name: pause
brokers:
  nats:
    type: nats
    publish: {ack_timeout: 1s}
    workers: 32
defaults: {message_size: 256B, settle_time: 100ms, drain_timeout: 15s}
scenarios:
  Pause:
    duration: 6s
    rate: 1000/s
    faults:
      - {at: 2s, action: pause_leader, for: 3s}
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.timeout(120)
def test_a_retry_of_a_stored_message_is_acked_as_a_duplicate_and_arrives_once(
    tmp_path: Path,
) -> None:
    [trial] = run_spec(tmp_path, PAUSE_SPEC, timeout=100)
    assert trial["status"] == "ok", trial["error"]
    assert_exact(trial)
    m = trial["metrics"]
    # Paused 3 s past the 1 s ack timeout: what was sent meanwhile was tried again; on resume
    # the server stored the first tries, then knew the retries by their ids.
    assert m["publish_retries"] > 0 and m["duplicate_acks"] > 0, m
    assert m["duplicated"] == 0 and m["lost"] == 0, m
    assert m["received"] == m["sent"] == m["acked"] and m["publish_errors"] == {}, m


RECONNECT_SPEC = """\
version: 1
name: reconnect
brokers:
  nats:
    type: nats
    stream: {storage: file}
    consumer: {kind: pull, ack: explicit, ack_wait: 2s}
    workers: 32
defaults: {message_size: 256B, settle_time: 100ms, drain_timeout: 15s}
scenarios:
  Restart:
    duration: 6s
    rate: 500/s
    faults:
      # Paused first, so that what is sent meanwhile is in flight when the node dies.
      - {at: 2s, action: pause_node, node: 1, for: 10s}
      - {at: 2.5s, action: kill_node, node: 1}
      - {at: 3s, action: restart}
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.timeout(120)
def test_publishes_lost_with_a_dropped_connection_are_retried_once_it_is_back(
    tmp_path: Path,
) -> None:
    [trial] = run_spec(tmp_path, RECONNECT_SPEC, timeout=100)
    assert trial["status"] == "ok", trial["error"]
    m = trial["metrics"]
    assert m["acked"] == m["sent"] and m["publish_errors"] == {}, m
    assert m["lost"] == 0 and m["received"] == m["sent"], m
    # What was in flight when the only node died was sent again as soon as the client was
    # back (half a second later), not after the 5 s ack timeout.
    assert m["publish_retries"] > 0, m
    assert m["publish_latency_ms"]["max"] < 4000, m["publish_latency_ms"]


@pytest.mark.own_kafka
@pytest.mark.timeout(600)
def test_kafka_cluster_leader_kill_acks_all_loses_nothing(tmp_path: Path) -> None:
    trials = run_spec(tmp_path, KAFKA_SPEC, timeout=500)
    by_variant = {t["variant"]: t for t in trials}
    assert set(by_variant) == {"acks-all", "acks-1"}
    for trial in trials:
        assert trial["status"] == "ok", trial["error"]
        assert_exact(trial)
        kill, restart = trial["faults"]
        assert kill["action"] == "kill_leader" and kill["node"] in (1, 2, 3), kill
        assert restart["action"] == "restart" and restart["error"] is None
        assert 0.4 * 6000 / 1500 - 0.1 <= kill["at_s"] <= 0.4 * 6000 / 1500 + 0.6
        assert any(node["exited"] for node in trial["broker_nodes"]), trial["broker_nodes"]
        # The broker's side: every node read each second, the killed one failing while down.
        telemetry = trial["telemetry"]
        assert [n["node"] for n in telemetry["nodes"]] == [1, 2, 3], telemetry["nodes"]
        assert telemetry["failures"] > 0 and trial["warnings"] == []
        print(
            trial["variant"],
            telemetry["events"],
            {
                k: v
                for k, v in trial["metrics"].items()
                if k
                in (
                    "under_replicated_peak",
                    "isr_shrinks",
                    "leader_changes",
                    "offline_partitions_peak",
                )
            },
        )
    safe = by_variant["acks-all"]["metrics"]
    assert safe["lost"] == 0 and safe["duplicated"] == 0, safe
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["brokers"]["kafka"]["nodes"] == 3
    assert environment["brokers"]["kafka"]["reported"] == {"min.insync.replicas": "2"}


LEADERLESS_SPEC = """\
version: 1
name: leaderless
brokers:
  nats:
    type: nats
    nodes: 3
    stream: {storage: file, replicas: 1}
    workers: 8
defaults: {message_size: 256B, settle_time: 100ms, drain_timeout: 5s}
scenarios:
  Twice:
    duration: 8s
    rate: 200/s
    faults:
      - {at: 1s, action: kill_leader}
      - {at: 2s, action: kill_leader}
  After: {messages: 500}
repetitions: 1
warmup: 0
order: sequential
reports: [markdown, json]
"""


@pytest.mark.timeout(180)
def test_a_fault_without_a_target_fails_its_trial_and_the_run_goes_on(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(LEADERLESS_SPEC)
    done = exprun("run", str(spec), "--out", str(tmp_path / "run"), tmp=tmp_path, timeout=150)
    assert done.returncode == 1, done.stderr[-3000:]  # one trial failed
    no_leftovers(tmp_path)
    twice, after = read_jsonl(tmp_path / "run" / "trials.jsonl")
    # The R1 stream's only node was killed first: then no node leads it.
    assert twice["status"] == "failed" and "kill_leader at 2s: no leader to hit" in twice["error"]
    assert twice["faults"][0]["node"] in (1, 2, 3) and twice["faults"][1]["node"] is None
    assert_exact(twice)
    # The dead node was brought back before the next trial, which ran as usual.
    assert after["status"] == "ok" and after["metrics"]["received"] == 500, after["error"]
    assert "node(s)" in done.stderr and "reviving" in done.stderr


REFUSED_SPEC = """\
version: 1
name: refused
brokers:
  nats: {type: nats, server: {write_deadline: soon}}
scenarios:
  Small: {messages: 100}
repetitions: 1
warmup: 0
"""


@pytest.mark.timeout(60)
def test_a_server_setting_the_broker_refuses_ends_the_run_before_any_trial(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(REFUSED_SPEC)  # a known option: only the server can judge its value
    done = exprun("run", str(spec), "--out", str(tmp_path / "run"), tmp=tmp_path, timeout=50)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "broker 'nats' (nats)" in done.stderr and "write_deadline" in done.stderr
    assert "--- broker log" in done.stderr and "Traceback" not in done.stderr
    assert read_jsonl(tmp_path / "run" / "trials.jsonl") == []
    no_leftovers(tmp_path)
