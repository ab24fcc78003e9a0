"""Broker lifecycle against real brokers and real sockets: no mocks."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import psutil
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from runner.execution.brokers import (
    BrokerStartError,
    RunningBroker,
    connect_external,
    kafka_classpath,
    start_kafka,
    start_nats,
)
from runner.execution.brokers.external import parse_endpoints

pytestmark = pytest.mark.integration

# --- helpers ---------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """True if pid no longer runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def bound_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the test's duration."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _unused_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def _write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


async def _js_roundtrip(address: str, stream: str) -> tuple[int, int]:
    """Create a stream, publish one message; (ack seq, stream message count)."""
    nc = await nats.connect(address, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        ack = await js.publish(f"{stream}.x", b"hello", timeout=5)
        info = await js.stream_info(stream)
        return ack.seq, info.state.messages
    finally:
        await nc.close()


async def _stream_messages(address: str, stream: str) -> int | None:
    """Message count of a stream, or None if it does not exist."""
    nc = await nats.connect(address, connect_timeout=2, max_reconnect_attempts=0)
    try:
        try:
            info = await nc.jetstream().stream_info(stream)
        except nats.js.errors.NotFoundError:
            return None
        return info.state.messages
    finally:
        await nc.close()


def _kafka_roundtrip(address: str, topic: str) -> bytes | None:
    """Create a topic, produce one message, consume it back."""
    admin = AdminClient({"bootstrap.servers": address})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": address})
    producer.produce(topic, b"hello-kafka")
    assert producer.flush(30) == 0
    return _kafka_consume_one(address, topic)


def _kafka_consume_one(address: str, topic: str) -> bytes | None:
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                return bytes(msg.value() or b"")
        return None
    finally:
        consumer.close()


# --- NATS ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_nats_jetstream_publish_ack(nats_broker: RunningBroker) -> None:
    assert nats_broker.kind == "nats" and nats_broker.embedded and nats_broker.alive()
    assert nats_broker.address.startswith("nats://127.0.0.1:")
    assert nats_broker.version and nats_broker.version[0].isdigit()
    seq, count = asyncio.run(_js_roundtrip(nats_broker.address, "ROUNDTRIP"))
    assert (seq, count) == (1, 1)


@pytest.mark.timeout(30)
def test_nats_start_records_its_time_and_stop_cleans_up(tmp_path: Path) -> None:
    # How fast it starts is the benchmark's figure (benchmarks/harness.py), not a timed assert.
    broker = start_nats(workdir_parent=tmp_path)
    assert broker.start_seconds is not None and broker.start_seconds > 0
    pid, workdir = broker.pid, broker.workdir
    assert pid is not None and workdir is not None and workdir.is_dir()
    broker.stop()
    assert _gone(pid) and not workdir.exists() and not broker.alive()
    broker.stop()  # idempotent


@pytest.mark.timeout(30)
def test_nats_sigkill_makes_alive_false_and_restart(tmp_path: Path) -> None:
    with start_nats(workdir_parent=tmp_path) as broker:
        asyncio.run(_js_roundtrip(broker.address, "KEEP"))
        address, old_pid = broker.address, broker.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        assert _wait_for(lambda: not broker.alive(), 5.0)

        broker.restart()  # same ports: same address, data kept
        assert broker.alive() and broker.address == address and broker.pid != old_pid
        assert asyncio.run(_stream_messages(broker.address, "KEEP")) == 1

        broker.restart(new_ports=True)  # afresh: new address, empty
        assert broker.alive() and broker.address != address
        assert broker.endpoints["client"] == broker.address
        assert asyncio.run(_stream_messages(broker.address, "KEEP")) is None
    assert not broker.alive() and list(tmp_path.iterdir()) == []


@pytest.mark.timeout(30)
def test_nats_port_in_use_fails_with_log_tail(
    bound_port: int, tmp_path: Path, broker_pids: Callable[[], set[int]]
) -> None:
    before = broker_pids()
    with pytest.raises(BrokerStartError) as err:
        start_nats(port=bound_port, workdir_parent=tmp_path)
    message = str(err.value)
    assert f"127.0.0.1:{bound_port}" in message and "failed to start" in message
    assert "broker log" in message and "address already in use" in message
    assert broker_pids() - before == set()
    assert list(tmp_path.iterdir()) == []  # temp dir removed


@pytest.mark.timeout(30)
def test_broker_started_from_short_lived_thread_survives_it() -> None:
    # PR_SET_PDEATHSIG follows the forking *thread*: exprun must fork from a long-lived one.
    started: list[RunningBroker] = []
    worker = threading.Thread(target=lambda: started.append(start_nats()))
    worker.start()
    worker.join()
    with started[0] as broker:
        time.sleep(0.5)
        assert broker.alive()


@pytest.mark.timeout(30)
def test_broker_dies_when_exprun_is_killed(tmp_path: Path) -> None:
    code = "from runner.execution.brokers import start_nats; "
    code += "b = start_nats(workdir_parent=sys.argv[1]); "
    code += "print(b.pid, flush=True); time.sleep(60)"
    argv = [sys.executable, "-c", "import sys, time; " + code, str(tmp_path)]
    parent = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
        parent.kill()  # SIGKILL: no atexit, no cleanup code runs
        parent.wait()
        assert _wait_for(lambda: _gone(pid), 5.0), "nats-server outlived a SIGKILLed exprun"
    finally:
        parent.kill()
        parent.wait()
    # Its temp dir stays behind; the next start in the same place sweeps it.
    assert len(list(tmp_path.glob("exprun-nats-*"))) == 1
    start_nats(workdir_parent=tmp_path).stop()
    assert list(tmp_path.iterdir()) == []


# --- external --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_external_unreachable_fails_within_timeout() -> None:
    port = _unused_port()
    started = time.monotonic()
    with pytest.raises(BrokerStartError) as err:
        connect_external("kafka", f"127.0.0.1:{port}")
    elapsed = time.monotonic() - started
    assert 4.0 <= elapsed < 7.0
    assert f"127.0.0.1:{port}" in str(err.value) and "not reachable" in str(err.value)


@pytest.mark.timeout(30)
def test_external_nats_list_one_down_fails(nats_broker: RunningBroker) -> None:
    down = _unused_port()
    with pytest.raises(BrokerStartError, match=f"127.0.0.1:{down}"):
        connect_external("nats", f"{nats_broker.address},nats://127.0.0.1:{down}", timeout=1.0)


@pytest.mark.timeout(30)
def test_external_nats_reachable(nats_broker: RunningBroker) -> None:
    broker = connect_external("nats", nats_broker.address)
    assert not broker.embedded and broker.pid is None and broker.alive()
    assert broker.version == nats_broker.version
    assert broker.log_tail() == ""
    broker.stop()
    broker.stop()
    assert not broker.alive() and nats_broker.alive()


def test_parse_endpoints() -> None:
    assert parse_endpoints("kafka", "a:1, b:2") == [("a", 1), ("b", 2)]
    assert parse_endpoints("kafka", "host") == [("host", 9092)]
    assert parse_endpoints("kafka", "[::1]:9093") == [("::1", 9093)]
    assert parse_endpoints("nats", "nats://h:4223,nats://h2") == [("h", 4223), ("h2", 4222)]
    for kind, bad in [("nats", "http://h:1"), ("kafka", "nats://h:1"), ("kafka", ""), ("x", "h")]:
        with pytest.raises(BrokerStartError):
            parse_endpoints(kind, bad)


# --- Kafka: failures before any JVM runs -----------------------------------------------------


def _real_java_home() -> Path:
    java = shutil.which("java")
    assert java is not None, "these tests need Java"
    return Path(java).resolve().parent.parent


def test_kafka_bogus_java_fails_with_its_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _write_script(tmp_path / "jdk/bin/java", 'echo "bogus-java: broken runtime" >&2\nexit 3\n')
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(BrokerStartError) as err:
        start_kafka(workdir_parent=tmp_path)
    assert "bogus-java: broken runtime" in str(err.value)
    assert "apt-get install openjdk-17-jre-headless" in str(err.value)


def test_kafka_missing_java_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerStartError, match="apt-get install openjdk-17-jre-headless"):
        start_kafka()


def test_kafka_missing_mvn_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_real_java_home()))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("MAVEN_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(BrokerStartError, match="apt-get install maven"):
        start_kafka(workdir_parent=tmp_path)


def test_kafka_mvn_failure_shows_its_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    failing_mvn = 'echo "[ERROR] Could not resolve kafka_2.13"\nexit 1\n'
    _write_script(tmp_path / "maven/bin/mvn", failing_mvn)
    monkeypatch.setenv("MAVEN_HOME", str(tmp_path / "maven"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(BrokerStartError) as err:
        kafka_classpath()
    assert "[ERROR] Could not resolve kafka_2.13" in str(err.value)
    assert "exit 1" in str(err.value)


@pytest.mark.timeout(60)
def test_kafka_jar_resolution_runs_once_under_concurrency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in mvn that is slow and counts its runs: the file lock must serialise callers.
    calls = tmp_path / "calls"
    fake_mvn = """
        echo run >> "{calls}"
        sleep 1
        for arg in "$@"; do
          case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}";; esac
        done
        touch "$out/fake-1.0.jar"
    """
    _write_script(tmp_path / "maven/bin/mvn", fake_mvn.format(calls=calls))
    monkeypatch.setenv("MAVEN_HOME", str(tmp_path / "maven"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    results: list[list[Path]] = []
    threads = [threading.Thread(target=lambda: results.append(kafka_classpath())) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls.read_text().count("run") == 1
    assert len(results) == 2 and results[0] == results[1]
    assert [p.name for p in results[0]] == ["fake-1.0.jar"]
    assert kafka_classpath() == results[0]  # cached: still one run
    assert calls.read_text().count("run") == 1


# --- Kafka: real brokers (one JVM at a time) -------------------------------------------------


@pytest.mark.timeout(300)
def test_kafka_topic_produce_consume(kafka_broker: RunningBroker) -> None:
    assert kafka_broker.kind == "kafka" and kafka_broker.alive()
    assert kafka_broker.address.startswith("127.0.0.1:")
    assert kafka_broker.version and kafka_broker.version.startswith("4.")
    print(f"Kafka {kafka_broker.version} ready in {kafka_broker.start_seconds:.2f} s")
    assert _kafka_roundtrip(kafka_broker.address, "roundtrip") == b"hello-kafka"


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_kafka_kill_restart_stop(tmp_path: Path) -> None:
    broker = start_kafka(workdir_parent=tmp_path)
    try:
        assert broker.start_seconds is not None and broker.start_seconds > 0
        assert _kafka_roundtrip(broker.address, "kept") == b"hello-kafka"
        address, pid = broker.address, broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _wait_for(lambda: not broker.alive(), 5.0)

        broker.restart()  # same ports, data kept
        assert broker.alive() and broker.address == address and broker.pid != pid
        assert _kafka_consume_one(broker.address, "kept") == b"hello-kafka"
        pid, workdir = broker.pid, broker.workdir
    finally:
        broker.stop()
    assert pid is not None and workdir is not None
    assert _gone(pid) and not workdir.exists() and not broker.alive()


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_kafka_port_in_use_fails_with_log_tail(
    bound_port: int, tmp_path: Path, broker_pids: Callable[[], set[int]]
) -> None:
    before = broker_pids()
    with pytest.raises(BrokerStartError) as err:
        start_kafka(port=bound_port, workdir_parent=tmp_path)
    message = str(err.value)
    assert f"127.0.0.1:{bound_port}" in message and "failed to start" in message
    assert "broker log" in message and "already in use" in message.lower()
    assert broker_pids() - before == set()
    assert list(tmp_path.iterdir()) == []
