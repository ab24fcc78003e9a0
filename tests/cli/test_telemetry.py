"""The broker's own view end to end: `exprun run` reads embedded (and external) brokers every
second of each trial, on the clients' windows, and a telemetry URL that does not answer costs
the trial nothing but a warning."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from exprun_process import exprun, no_leftovers, read_jsonl

from runner.execution.brokers import RunningBroker

pytestmark = pytest.mark.integration

NATS_SPEC = """\
version: 1
name: nats-telemetry
brokers:
  nats:
    type: nats
    # Two workers of 2 ms each handle 1,000 msg/s: at 3,000 msg/s a backlog builds.
    workers: 2
    consumer: {kind: pull, ack: explicit, max_ack_pending: 20000, batch: 500}
defaults: {message_size: 256B, settle_time: 100ms, drain_timeout: 20s}
scenarios:
  Steady: {duration: 4s, rate: 2000/s}
  Backlog: {duration: 4s, rate: 3000/s, processing_time: 2ms}
variants:
  "on": {}
  "off": {brokers: {nats: {telemetry: off}}}
baseline: "on"
repetitions: 1
warmup: 0
reports: [markdown, json, html, csv]
"""

KAFKA_SPEC = """\
version: 1
name: kafka-telemetry
brokers:
  kafka:
    type: kafka
    jvm: {heap: 512m}
defaults: {message_size: 256B, settle_time: 100ms, drain_timeout: 15s}
scenarios:
  Steady: {duration: 4s, rate: 2000/s}
variants:
  "on": {}
  "off": {brokers: {kafka: {telemetry: off}}}
baseline: "on"
repetitions: 1
warmup: 0
reports: [markdown, json, html]
"""


def run_spec(tmp_path: Path, text: str, timeout: float = 240) -> tuple[list[dict[str, Any]], Path]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    out = tmp_path / "run"
    done = exprun("run", str(spec), "--out", str(out), "--no-store", tmp=tmp_path, timeout=timeout)
    trials = read_jsonl(out / "trials.jsonl")
    errors = [t["error"] for t in trials if t["error"]]
    assert done.returncode == 0, f"{errors}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    no_leftovers(tmp_path)
    return trials, out


def signals_of(trial: dict[str, Any], node: int = 1) -> dict[str, list[float | None]]:
    [found] = [n for n in trial["telemetry"]["nodes"] if n["node"] == node]
    signals: dict[str, list[float | None]] = found["signals"]
    return signals


def publishing_windows(trial: dict[str, Any]) -> list[int]:
    """Whole windows in which the producers published."""
    series = trial["series"]
    return [
        i
        for i, seconds in enumerate(series["seconds"])
        if seconds >= 0.9 and series["published"][i] > 0
    ]


def assert_aligned(trial: dict[str, Any]) -> None:
    windows = len(trial["series"]["start_s"])
    for node in trial["telemetry"]["nodes"]:
        assert {len(values) for values in node["signals"].values()} == {windows}, node


@pytest.mark.timeout(300)
def test_nats_signals_on_the_clients_windows_and_off_leaves_no_trace(tmp_path: Path) -> None:
    trials, out = run_spec(tmp_path, NATS_SPEC)
    by_cell = {(t["variant"], t["scenario"]): t for t in trials}
    steady, backlog = by_cell[("on", "Steady")], by_cell[("on", "Backlog")]
    for trial in (steady, backlog):
        assert trial["status"] == "ok" and trial["warnings"] == [], trial["warnings"]
        assert_aligned(trial)
        telemetry = trial["telemetry"]
        assert telemetry["source"] == "nats" and telemetry["failures"] == 0
        # A reading at the start, one per tick, one at the end: about one per window.
        assert telemetry["samples"] >= len(trial["series"]["start_s"])
        signals = signals_of(trial)
        published = publishing_windows(trial)
        assert published, trial["series"]
        for i in published:
            assert (signals["msgs_in"][i] or 0) > 0 and (signals["bytes_in"][i] or 0) > 0
        # The server counts what the producers sent (plus their acks' and the consumers' own
        # requests): over the publishing windows, at least the messages published.
        sent = sum(trial["series"]["published"][i] for i in published)
        read = sum((signals["msgs_in"][i] or 0) * trial["series"]["seconds"][i] for i in published)
        assert read >= 0.9 * sent, (read, sent)
        assert set(signals["topic_leader"]) == {1.0}  # a single node leads its stream
        assert signals["cpu_pct"] and signals["memory_mb"][-1] > 1
        m = trial["metrics"]
        assert m["slow_consumers"] == 0 and m["leader_changes"] == 0
        assert m["broker_cpu_peak_pct"] > 0
        # Kafka's figures are not NATS's: absent, not zero.
        assert m["broker_gc_pause_ms"] is None and m["broker_handler_idle_min_pct"] is None
    # Consumers that handle a third of what is published: the broker's count of what they
    # still have to get rises by ~2,000 a second while publishing (12,000 sent, ~4,000
    # handled), then falls to nothing as they catch up.
    pending = [v for v in signals_of(backlog)["consumer_pending"] if v is not None]
    peak = pending.index(max(pending))
    assert max(pending) >= 5000, pending
    assert pending[:peak] == sorted(pending[:peak]) and pending[-1] == 0, pending
    assert backlog["metrics"]["consumer_pending_peak"] == max(pending)
    assert steady["metrics"]["consumer_pending_peak"] < 1000
    for scenario in ("Steady", "Backlog"):
        off = by_cell[("off", scenario)]
        assert off["telemetry"] is None and off["metrics"]["consumer_pending_peak"] is None
        assert off["series"] is not None
    report = (out / "report.md").read_text()
    assert "## The broker's view" in report and "Consumer pending peak" in report
    html = (out / "report.html").read_text()
    assert "Clients and broker over time" in html and "Broker: Consumer pending" in html
    # The CSV carries every signal of every window: the backlog's peak is there too.
    with (out / "telemetry.csv").open() as rows:
        pending = [
            float(row["value"])
            for row in csv.DictReader(rows)
            if row["scenario"] == "Backlog" and row["signal"] == "consumer_pending" and row["value"]
        ]
    assert max(pending) == backlog["metrics"]["consumer_pending_peak"]


@pytest.mark.timeout(300)
def test_kafka_signals_through_the_jmx_exporter_and_off_starts_no_agent(tmp_path: Path) -> None:
    trials, out = run_spec(tmp_path, KAFKA_SPEC)
    by_variant = {t["variant"]: t for t in trials}
    on, off = by_variant["on"], by_variant["off"]
    assert on["status"] == "ok" and on["warnings"] == [], on["warnings"]
    assert_aligned(on)
    assert on["telemetry"]["source"] == "prometheus" and on["telemetry"]["failures"] == 0
    signals = signals_of(on)
    for i in publishing_windows(on):
        assert (signals["bytes_in"][i] or 0) > 0, signals["bytes_in"]
        assert 0 <= (signals["handler_idle_ns"][i] or -1) <= 100, signals["handler_idle_ns"]
    assert set(signals["topic_leader"]) == {1.0}
    assert set(signals["active_controller"]) == {1.0}
    assert all(v is not None and v > 0 for v in signals["heap_used_mb"])
    m = on["metrics"]
    assert 0 <= m["broker_handler_idle_min_pct"] <= 100
    assert m["broker_produce_p99_ms"] is not None and m["broker_produce_p99_ms"] >= 0
    assert m["broker_gc_pause_ms"] is not None and m["broker_heap_peak_mb"] > 0
    assert m["under_replicated_peak"] == 0 and m["leader_changes"] == 0
    assert m["consumer_pending_peak"] is None  # a NATS figure: absent on Kafka
    assert off["telemetry"] is None and off["metrics"]["broker_heap_peak_mb"] is None
    report = (out / "report.md").read_text()
    assert "Request handler idle (lowest)" in report


EXTERNAL_SPEC = """\
version: 1
name: external-telemetry
brokers:
  nats:
    type: nats
    endpoint: {endpoint}
    telemetry: {{url: {url}}}
defaults: {{message_size: 256B, settle_time: 100ms}}
scenarios:
  Steady: {{duration: 3s, rate: 1000/s}}
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.timeout(180)
def test_an_external_brokers_telemetry_is_read_where_the_spec_says(
    tmp_path: Path, nats_broker: RunningBroker
) -> None:
    monitor = nats_broker.endpoints["monitor"]
    text = EXTERNAL_SPEC.format(endpoint=nats_broker.address, url=monitor)
    [trial], _ = run_spec(tmp_path, text, timeout=120)
    assert trial["status"] == "ok" and trial["warnings"] == []
    assert_aligned(trial)
    assert any((v or 0) > 0 for v in signals_of(trial)["msgs_in"])


@pytest.mark.timeout(180)
def test_a_telemetry_url_that_does_not_answer_is_a_warning_not_a_failure(
    tmp_path: Path, nats_broker: RunningBroker
) -> None:
    from runner.execution.brokers.base import free_ports

    [dead] = free_ports(1)
    url = f"http://127.0.0.1:{dead}"
    text = EXTERNAL_SPEC.format(endpoint=nats_broker.address, url=url)
    [trial], out = run_spec(tmp_path, text, timeout=120)
    assert trial["status"] == "ok", trial["error"]
    m = trial["metrics"]
    assert m["lost"] == 0 and m["received"] == m["sent"] > 0
    assert m["broker_cpu_peak_pct"] is None and m["consumer_pending_peak"] is None
    [warning] = trial["warnings"]
    assert warning.startswith("telemetry of node 1:") and url in warning, warning
    report = json.loads((out / "results.json").read_text())
    [missing] = [a for a in report["anomalies"] if a["kind"] == "telemetry_missing"]
    assert url in missing["evidence"]
    assert "Broker telemetry not read" in (out / "report.md").read_text()
