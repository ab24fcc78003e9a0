"""Embedded Kafka with broker telemetry: the JMX exporter agent in every node, scraped for real."""

from __future__ import annotations

import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from runner.execution.brokers import BrokerStartError, RunningBroker, start_kafka
from runner.execution.brokers.jmx_agent import (
    JMX_AGENT_ENV,
    JMX_AGENT_JAR,
    exporter_config,
    jmx_agent_jar,
)
from runner.execution.telemetry.kafka_reading import kafka_reading

pytestmark = pytest.mark.integration

MESSAGES = 3000
EVERY_KEY = {
    *("handler_idle_ns", "network_idle_pct", "produce_p99_ms", "fetch_p99_ms"),
    *("request_queue_p99_ms", "bytes_in", "bytes_out", "under_replicated", "leader_count"),
    *("isr_shrinks", "isr_expands", "offline_partitions", "active_controller"),
    *("gc_pause_ms", "heap_used_mb", "topic_leader"),
}
# The metrics port is on loopback: never through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _scrape(url: str) -> str:
    with _HTTP.open(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def _produce(address: str, topic: str, messages: int) -> None:
    admin = AdminClient({"bootstrap.servers": address})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": address, "linger.ms": 5})
    for i in range(messages):
        producer.produce(topic, b"x" * 200, key=str(i).encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def _javaagents(argv: list[str]) -> list[str]:
    return [arg for arg in argv if arg.startswith("-javaagent:")]


def _classpath(argv: list[str]) -> str:
    return argv[argv.index("-cp") + 1]


def _write_mvn(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)


# --- the agent's jar ---------------------------------------------------------------------------


def test_agent_jar_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    jar = tmp_path / "agent.jar"
    jar.write_bytes(b"PK")
    monkeypatch.setenv(JMX_AGENT_ENV, str(jar))
    assert jmx_agent_jar() == jar
    monkeypatch.setenv(JMX_AGENT_ENV, str(tmp_path / "missing.jar"))
    with pytest.raises(BrokerStartError, match="telemetry: off"):
        jmx_agent_jar()


def test_agent_jar_resolution_failure_says_how_to_run_without(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _write_mvn(tmp_path / "maven/bin/mvn", 'echo "[ERROR] Could not find artifact"\nexit 1\n')
    monkeypatch.setenv("MAVEN_HOME", str(tmp_path / "maven"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(JMX_AGENT_ENV, raising=False)
    with pytest.raises(BrokerStartError) as err:
        jmx_agent_jar()
    message = str(err.value)
    assert "JMX exporter agent" in message and "could not be resolved" in message
    assert "[ERROR] Could not find artifact" in message and "exit 1" in message
    assert "`telemetry: off`" in message
    assert not (tmp_path / "cache/exprun/jmx-exporter-1.0.1/libs").exists()


@pytest.mark.timeout(60)
def test_agent_jar_resolves_once_under_concurrency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in mvn that is slow and counts its runs: the file lock must serialise callers.
    calls = tmp_path / "calls"
    fake_mvn = f"""
        echo run >> "{calls}"
        sleep 1
        for arg in "$@"; do
          case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}";; esac
        done
        echo jar > "$out/{JMX_AGENT_JAR}"
    """
    _write_mvn(tmp_path / "maven/bin/mvn", fake_mvn)
    monkeypatch.setenv("MAVEN_HOME", str(tmp_path / "maven"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(JMX_AGENT_ENV, raising=False)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(jmx_agent_jar())) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = tmp_path / f"cache/exprun/jmx-exporter-1.0.1/libs/{JMX_AGENT_JAR}"
    assert results == [expected, expected] and expected.read_text() == "jar\n"
    assert jmx_agent_jar() == expected
    assert calls.read_text().count("run") == 1


# --- real brokers ------------------------------------------------------------------------------


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_kafka_telemetry_is_scraped_from_every_node(tmp_path: Path) -> None:
    broker = start_kafka(telemetry=True, workdir_parent=tmp_path)
    try:
        node = broker.nodes[0]
        url = node.endpoints["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        assert broker.endpoints["metrics"] == url
        port = url.removeprefix("http://127.0.0.1:").removesuffix("/metrics")
        config = node.workdir / "jmx-exporter.yaml"
        assert config.read_text() == exporter_config()
        assert _javaagents(node.argv) == [f"-javaagent:{jmx_agent_jar()}=127.0.0.1:{port}:{config}"]
        assert "jmx_prometheus" not in _classpath(node.argv)

        _produce(broker.address, "telemetry", MESSAGES)
        _scrape(url)  # the first scrape warms the agent up
        started = time.perf_counter()
        text = _scrape(url)
        took_ms = 1000 * (time.perf_counter() - started)
        print(f"one scrape of {len(text):,} bytes took {took_ms:.1f} ms")
        reading = kafka_reading(text, "telemetry")
        print(reading)
        assert set(reading) == EVERY_KEY
        assert reading["bytes_in"] > MESSAGES * 200  # the payloads, plus batch overhead
        assert reading["topic_leader"] == 1.0
        assert reading["active_controller"] == 1.0
        assert reading["leader_count"] >= 1
        assert reading["heap_used_mb"] > 0
        assert reading["handler_idle_ns"] > 0
        assert 0 <= reading["network_idle_pct"] <= 100
        assert reading["under_replicated"] == reading["offline_partitions"] == 0

        broker.restart()  # in place: the agent keeps its port
        assert broker.nodes[0].endpoints["metrics"] == broker.endpoints["metrics"] == url
        assert kafka_reading(_scrape(url), "telemetry")["topic_leader"] == 1.0

        broker.restart(new_ports=True)  # afresh: a new port, the data gone
        moved = broker.nodes[0].endpoints["metrics"]
        assert moved != url and broker.endpoints["metrics"] == moved
        assert "topic_leader" not in kafka_reading(_scrape(moved), "telemetry")
        assert _javaagents(broker.nodes[0].argv)
    finally:
        broker.stop()


@pytest.mark.timeout(300)
def test_kafka_without_telemetry_runs_no_agent(kafka_broker: RunningBroker) -> None:
    assert "metrics" not in kafka_broker.endpoints
    for node in kafka_broker.nodes:
        assert "metrics" not in node.endpoints
        assert _javaagents(node.argv) == []
        assert not (node.workdir / "jmx-exporter.yaml").exists()
