"""Load generators on other hosts (engine: dask), with a LocalCluster's two worker processes as
the two hosts, against the embedded brokers.

Every trial's shares run in fresh processes the workers start; the books must come out exactly
as one process keeps them, for a message produced on one "host" and consumed on the other too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_trials import assert_exact, kafka_config, make_request, nats_config

from runner.errors import BadInputError
from runner.execution import load_hosts as load_hosts_module
from runner.execution.brokers import RunningBroker, start_nats
from runner.execution.load_hosts import HostsUnavailable, LoadHosts, load_hosts
from runner.execution.trial.links import ClockReading, best_reading
from schemas.spec import ExecutionSettings, NatsSecurity

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[3]
EXPRUN = [sys.executable, "-m", "runner.cli"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """Two worker processes offering loadgen=1: two load-generator hosts on one machine."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        resources={"loadgen": 1},
        dashboard_address=None,
    ) as local:
        yield local


@pytest.fixture
def hosts(cluster: distributed.LocalCluster) -> Iterator[LoadHosts]:
    settings = ExecutionSettings(engine="dask", hosts=2)
    with load_hosts(settings, cluster.scheduler_address) as connected:
        assert connected is not None
        yield connected


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_secured_broker_is_reached_from_every_host(hosts: LoadHosts) -> None:
    """The hosts get the CA and the login with the trial request, as files of their own."""
    with start_nats(security=NatsSecurity(tls=True, auth="nkey")) as broker:
        assert broker.access.nats.ca is not None and broker.access.nats.nkey_seed is not None
        result = hosts.run_trial(make_request(broker, nats_config()))
    assert_exact(result)
    assert len({f.host for f in result.load_generators}) == 2


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("broker_type", ["nats", "kafka"])
def test_produced_on_one_host_and_consumed_on_the_other(
    broker_type: str, hosts: LoadHosts, request: pytest.FixtureRequest
) -> None:
    broker: RunningBroker = request.getfixturevalue(f"{broker_type}_broker")
    config = nats_config() if broker_type == "nats" else kafka_config()
    result = hosts.run_trial(make_request(broker, config))
    assert_exact(result)
    # Producer 0 on share 0 (the first host), the consumer on share 1 (the second host).
    figures = sorted(result.load_generators, key=lambda f: f.process)
    assert [f.process for f in figures] == [0, 1]
    assert figures[0].host != figures[1].host
    assert {f.host for f in figures} <= set(hosts.facts)
    for own in figures:
        assert own.clock_uncertainty_ms is not None and own.clock_offset_ms is not None
        assert own.threads_peak and own.cpu_percent is not None and own.leaked_threads == 0
    assert result.metrics.clock_uncertainty_ms == max(f.clock_uncertainty_ms or 0 for f in figures)
    assert result.metrics.leaked_threads == 0


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_skewed_clock_is_measured_and_corrected(
    hosts: LoadHosts, nats_broker: RunningBroker
) -> None:
    """The consuming host's clock runs 5 s ahead: its offset says so, latencies do not."""
    hosts.clock_skew_ns = 5_000_000_000
    try:
        result = hosts.run_trial(make_request(nats_broker, nats_config()))
    finally:
        hosts.clock_skew_ns = 0
    assert_exact(result)
    consumer_host = next(f for f in result.load_generators if f.process == 1)
    assert consumer_host.clock_offset_ms is not None
    assert abs(consumer_host.clock_offset_ms - 5000) < 50
    latency = result.metrics.latency_ms
    # Uncorrected, every latency would be 5 s more than the real one (a few ms here).
    assert latency.max is not None and 0 < latency.max < 4000


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_worker_killed_mid_trial_fails_that_trial_only(
    hosts: LoadHosts, nats_broker: RunningBroker
) -> None:
    trial = make_request(nats_broker, nats_config(), messages=12000, rate="2000/s")
    victim = hosts.choose()[1]
    worker = psutil.Process(hosts.client.run(os.getpid, workers=[victim])[victim])

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 60
        while not worker.children() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(2.0)  # its share connects and the 6 s of publishing are under way
        worker.kill()

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    started = time.monotonic()
    result = hosts.run_trial(trial)
    killer.join()
    assert result.status == "failed"
    assert result.error and "ended unexpectedly" in result.error
    assert time.monotonic() - started < 60
    # The worker's nanny brings it back: the run goes on with two hosts.
    assert_exact(hosts.run_trial(make_request(nats_broker, nats_config())))


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_fewer_hosts_than_needed_stop_the_run(
    cluster: distributed.LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load_hosts_module, "HOSTS_WAIT_S", 0.5)
    settings = ExecutionSettings(engine="dask", hosts=3)
    with (
        pytest.raises(HostsUnavailable, match="only 2 of the 3 load-generator hosts"),
        load_hosts(settings, cluster.scheduler_address),
    ):
        pass


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("listening", ["nothing", "not a scheduler"])
def test_an_unreachable_scheduler_exits_3_fast(tmp_path: Path, listening: str) -> None:
    spec = tmp_path / "hosts.yaml"
    spec.write_text(SPEC)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        if listening == "not a scheduler":
            server.listen()
            threading.Thread(target=answer_as_a_web_server, args=(server,), daemon=True).start()
        else:
            server.close()  # nothing listens there
        started = time.monotonic()
        done = subprocess.run(
            [*EXPRUN, "run", str(spec), "--out", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            env={**os.environ, "EXPRUN_DASK_SCHEDULER": f"tcp://127.0.0.1:{port}"},
            cwd=ROOT,
            timeout=60,
        )
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 10
    expected = {
        "nothing": f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}: ",
        "not a scheduler": f"no Dask scheduler answers at tcp://127.0.0.1:{port}: what listens",
    }[listening]
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # failed before the run folder


def answer_as_a_web_server(server: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


SPEC = """\
version: 1
name: hosts
brokers:
  nats: {type: nats, consumer: {kind: pull, ack: none}}
defaults: {message_size: 256, settle_time: 200ms}
scenarios:
  Small: {messages: 3000}
execution: {engine: dask, hosts: 2}
repetitions: 2
warmup: 0
"""


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_exprun_run_on_two_hosts(cluster: distributed.LocalCluster, tmp_path: Path) -> None:
    """The whole command: trials on two hosts, each host in environment.json."""
    import json

    spec = tmp_path / "hosts.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "run"
    done = subprocess.run(
        [*EXPRUN, "run", str(spec), "--out", str(out), "--scheduler", cluster.scheduler_address],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=200,
    )
    assert done.returncode == 0, done.stderr
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [t["status"] for t in trials] == ["ok", "ok"]
    assert all(t["metrics"]["lost"] == 0 and t["metrics"]["received"] == 3000 for t in trials)
    environment = json.loads((out / "environment.json").read_text())
    generators = environment["load_generators"]
    assert (generators["engine"], generators["hosts"]) == ("dask", 2)
    workers = {m["worker"] for m in generators["machines"]}
    assert {g["host"] for t in trials for g in t["load_generators"]} <= workers
    for machine in generators["machines"]:
        assert machine["machine"]["cpu_count"] and machine["clients"]["nats-py"]


@pytest.mark.integration
def test_embedded_brokers_are_refused_for_a_worker_on_another_machine(hosts: LoadHosts) -> None:
    for worker in hosts.choose():
        hosts.check_reaches_embedded(worker)  # this machine's workers: fine
    elsewhere = "tcp://203.0.113.7:39211"  # TEST-NET-3: never an address of this machine
    hosts.facts[elsewhere] = {"machine": {"hostname": "load-07"}}
    with pytest.raises(BadInputError, match=r"load-07 \(tcp://203.0.113.7:39211\) is another"):
        hosts.check_reaches_embedded(elsewhere)


@pytest.mark.parametrize(
    ("spec", "arguments", "variable", "expected"),
    [
        (SPEC, [], None, "engine: dask needs a scheduler"),
        (SPEC, [], "10.0.0.5:8786", "EXPRUN_DASK_SCHEDULER '10.0.0.5:8786' is not a Dask"),
        (SPEC, ["--scheduler", "tcp://x"], None, "--scheduler 'tcp://x' is not a Dask"),
        (
            SPEC.replace("execution: {engine: dask, hosts: 2}\n", ""),
            ["--scheduler", "tcp://127.0.0.1:8786"],
            None,
            "this spec's execution.engine is local",
        ),
    ],
)
def test_a_missing_or_malformed_scheduler_is_bad_input(
    tmp_path: Path, spec: str, arguments: list[str], variable: str | None, expected: str
) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(spec)
    env = {k: v for k, v in os.environ.items() if k != "EXPRUN_DASK_SCHEDULER"}
    if variable is not None:
        env["EXPRUN_DASK_SCHEDULER"] = variable
    done = subprocess.run(
        [*EXPRUN, "run", str(path), "--out", str(tmp_path / "run"), *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_ctrl_c_stops_the_remote_shares_and_exits_130(
    cluster: distributed.LocalCluster, tmp_path: Path
) -> None:
    spec = tmp_path / "hosts.yaml"
    paced = "Small: {messages: 20000, rate: 2000/s}"
    spec.write_text(SPEC.replace("Small: {messages: 3000}", paced))
    command = [*EXPRUN, "run", str(spec), "--out", str(tmp_path / "run")]
    exprun = subprocess.Popen(
        [*command, "--scheduler", cluster.scheduler_address],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(share_processes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(share_processes()) == 2, "the share processes never started"
        time.sleep(1.0)  # publishing
        exprun.send_signal(signal.SIGINT)
        assert exprun.wait(timeout=60) == 130
    finally:
        exprun.kill()
        stderr = exprun.stderr.read() if exprun.stderr else ""
    assert "interrupted after 0 of 2 trials" in stderr
    deadline = time.monotonic() + 10
    while share_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert share_processes() == []


def share_processes() -> list[int]:
    """Load-generator processes the Dask workers started, wherever they are in the tree."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "runner.execution.trial.remote" in " ".join(process.info["cmdline"] or []):
            found.append(process.pid)
    return found


def test_the_clock_reading_of_the_shortest_round_trip_is_kept() -> None:
    """Their clock read 1000 ns ahead of our midpoint; the 10 ns round trip bounds it best."""
    slow = ClockReading.of(sent_ns=0, theirs_ns=1_500, received_ns=1_000)
    fast = ClockReading.of(sent_ns=2_000, theirs_ns=3_005, received_ns=2_010)
    assert slow == ClockReading(offset_ns=1_000, uncertainty_ns=500)
    assert fast == ClockReading(offset_ns=1_000, uncertainty_ns=5)
    assert best_reading([slow, fast, slow]) == fast
