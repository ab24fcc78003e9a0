"""Embedded NATS clusters and node control, against real nats-servers over real sockets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest
from nats.errors import NoRespondersError
from nats.js.api import StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import NoStreamResponseError

from runner.execution.brokers import BrokerStartError, LeaderUnknown, RunningBroker, start_nats

pytestmark = pytest.mark.integration

SERVER_SETTINGS = {
    "write_deadline": "5s",
    "max_payload": "4MB",
    "jetstream": {"max_memory_store": "1GB"},
}
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _monitor(broker: RunningBroker, number: int, path: str) -> dict[str, Any]:
    url = broker.nodes[number - 1].endpoints["monitor"] + path
    with _HTTP.open(url, timeout=2.0) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _servers(broker: RunningBroker, *, skip: int | None = None) -> list[str]:
    return [n.address for n in broker.nodes if n.number != skip]


async def _publish(servers: list[str], stream: str, count: int, *, create: bool) -> int:
    """Publish count messages to stream (created R3 on file first if asked); the last seq."""
    nc = await nats.connect(servers=servers, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        if create:
            await js.add_stream(
                name=stream, subjects=[f"{stream}.>"], num_replicas=3, storage=StorageType.FILE
            )
        seq = 0
        for i in range(count):
            seq = await _publish_one(js, f"{stream}.m", f"m{i}".encode())
        return seq
    finally:
        await nc.close()


async def _publish_one(js: JetStreamContext, subject: str, payload: bytes) -> int:
    """Publish, retrying "no responders": a new stream's interest takes a few ms to reach
    the other servers of a cluster (seen right after add_stream, and after a leader change)."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            return (await js.publish(subject, payload, timeout=10)).seq
        except (NoRespondersError, NoStreamResponseError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


async def _stream_replicas(servers: list[str], stream: str) -> tuple[int, list[bool]]:
    """(messages, whether each replica is current) of a stream."""
    nc = await nats.connect(servers=servers, connect_timeout=2, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream().stream_info(stream)
        replicas = (info.cluster.replicas if info.cluster else None) or []
        return info.state.messages, [bool(r.current) for r in replicas]
    finally:
        await nc.close()


def _new_leader(broker: RunningBroker, stream: str, old: int, timeout: float) -> int:
    """The number of the stream's leader once it is no longer node old."""
    deadline = time.monotonic() + timeout
    while True:
        number = broker.leader(stream, timeout=max(deadline - time.monotonic(), 0.1)).number
        if number != old or time.monotonic() >= deadline:
            return number
        time.sleep(0.2)


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One 3-node cluster for the module, with server settings of a spec."""
    parent = tmp_path_factory.mktemp("nats-cluster")
    broker = start_nats(nodes=3, overrides=SERVER_SETTINGS, workdir_parent=parent)
    print(f"3-node NATS cluster formed in {broker.start_seconds:.2f} s")
    yield broker
    broker.stop()


@pytest.fixture
def cluster(nats_cluster: RunningBroker) -> RunningBroker:
    """The module's cluster, whole again whatever a test before did to its nodes."""
    nats_cluster.revive(timeout=30)
    return nats_cluster


@pytest.mark.timeout(60)
def test_nats_cluster_forms_with_every_node_a_meta_peer(cluster: RunningBroker) -> None:
    assert cluster.kind == "nats" and cluster.embedded and cluster.alive()
    assert [n.number for n in cluster.nodes] == [1, 2, 3]
    assert [n.name for n in cluster.nodes] == ["n1", "n2", "n3"]
    assert cluster.address == ",".join(n.address for n in cluster.nodes)
    assert all(a.startswith("nats://127.0.0.1:") for a in cluster.address.split(","))
    assert cluster.pids == [n.pid for n in cluster.nodes] and cluster.pid == cluster.pids[0]
    assert len(set(cluster.pids)) == 3
    assert cluster.version and cluster.version[0].isdigit()
    assert len({n.workdir for n in cluster.nodes}) == 3
    for node in cluster.nodes:
        varz = _monitor(cluster, node.number, "/varz")
        assert varz["server_name"] == node.name
        meta = _monitor(cluster, node.number, "/jsz")["meta_cluster"]
        assert meta["cluster_size"] == 3 and meta["leader"] in {"n1", "n2", "n3"}
        assert _monitor(cluster, node.number, "/routez")["num_routes"] >= 2
    cluster.wait_formed(5.0)
    assert "==> n1 server.log <==" in cluster.log_tail(5)


@pytest.mark.timeout(60)
def test_nats_server_settings_reach_every_node(cluster: RunningBroker) -> None:
    for node in cluster.nodes:
        varz = _monitor(cluster, node.number, "/varz")
        assert varz["write_deadline"] == 5_000_000_000  # ns
        assert varz["max_payload"] == 4 * 1024 * 1024
        assert varz["jetstream"]["config"]["max_memory"] == 1024**3


@pytest.mark.timeout(90)
def test_nats_r3_stream_survives_its_leader_killed_and_revive(cluster: RunningBroker) -> None:
    # The comma-joined address, as a driver gets it, split as nats-py wants a list.
    servers = cluster.address.split(",")
    assert asyncio.run(_publish(servers, "R3", 20, create=True)) == 20
    old = cluster.leader("R3")
    assert old in cluster.nodes

    old.kill()
    assert not old.alive() and not cluster.alive()
    new = _new_leader(cluster, "R3", old.number, timeout=30.0)
    assert new != old.number
    others = _servers(cluster, skip=old.number)
    assert asyncio.run(_publish(others, "R3", 5, create=False)) == 25
    with pytest.raises(BrokerStartError, match=f"node {old.number} of 3"):
        cluster.wait_formed(1.0)

    cluster.revive(timeout=30)
    assert cluster.alive() and old.alive() and old.pid in cluster.pids
    cluster.wait_formed(10.0)
    # The revived node kept its data and caught up: every replica current, nothing lost.
    deadline = time.monotonic() + 20
    while True:
        messages, current = asyncio.run(_stream_replicas(servers, "R3"))
        if (messages, current) == (25, [True, True]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (messages, current) == (25, [True, True])
    assert _monitor(cluster, old.number, "/jsz")["messages"] == 25


@pytest.mark.timeout(60)
def test_nats_pause_and_resume_a_node(cluster: RunningBroker) -> None:
    asyncio.run(_publish(cluster.address.split(","), "PAUSE", 1, create=True))
    node = cluster.nodes[2]
    node.pause()
    try:
        assert node.paused and node.alive() and not cluster.alive()
        assert psutil.Process(node.pid).status() == psutil.STATUS_STOPPED
        with pytest.raises(BrokerStartError, match=r"node 3 of 3 .* is paused"):
            cluster.wait_formed(0.5)
        assert cluster.leader("PAUSE", timeout=10.0) in cluster.nodes  # asks the others
    finally:
        node.resume()
    assert not node.paused and cluster.alive()
    cluster.wait_formed(10.0)


@pytest.mark.timeout(30)
def test_nats_leader_of_a_missing_stream_is_unknown(cluster: RunningBroker) -> None:
    started = time.monotonic()
    with pytest.raises(LeaderUnknown, match="NOPE"):
        cluster.leader("NOPE", timeout=0.5)
    assert time.monotonic() - started < 5.0


@pytest.mark.timeout(60)
def test_nats_cluster_stop_leaves_no_process(
    tmp_path: Path, broker_pids: Callable[[], set[int]]
) -> None:
    before = broker_pids()
    broker = start_nats(nodes=3, workdir_parent=tmp_path)
    pids = broker.pids
    assert set(pids) <= broker_pids()
    broker.nodes[1].pause()  # a paused node must not hold up the stop
    broker.nodes[2].kill()
    started = time.monotonic()
    broker.stop()
    assert time.monotonic() - started < 10.0
    assert all(_gone(pid) for pid in pids) and broker_pids() - before == set()
    assert list(tmp_path.iterdir()) == [] and not broker.alive()
    with pytest.raises(BrokerStartError):
        broker.nodes[2].start()  # a stopped broker's nodes stay down


@pytest.mark.timeout(30)
@pytest.mark.parametrize("nodes", [1, 3])
def test_nats_bad_setting_fails_fast_with_log_tail(
    nodes: int, tmp_path: Path, broker_pids: Callable[[], set[int]]
) -> None:
    before = broker_pids()
    started = time.monotonic()
    with pytest.raises(BrokerStartError) as err:
        start_nats(nodes=nodes, overrides={"no_such_setting": 1}, workdir_parent=tmp_path)
    assert time.monotonic() - started < 5.0
    message = str(err.value)
    assert "failed to start" in message and "broker log" in message
    assert "no_such_setting" in message  # the server's own complaint, from the log tail
    if nodes > 1:
        assert "node 1 of 3" in message
    assert broker_pids() - before == set()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(30)
def test_nats_single_node_leader_and_revive_in_place(tmp_path: Path) -> None:
    with start_nats(workdir_parent=tmp_path) as broker:
        assert len(broker.nodes) == 1 and broker.nodes[0].pid == broker.pid
        asyncio.run(_one_message_stream(broker.address, "ONE"))
        assert broker.leader("ONE") is broker.nodes[0]
        address = broker.address
        broker.nodes[0].kill()
        assert not broker.alive()
        broker.revive()
        assert broker.alive() and broker.address == address
        assert asyncio.run(_stream_replicas([address], "ONE"))[0] == 1


async def _one_message_stream(address: str, stream: str) -> None:
    """An R1 file stream with one message."""
    nc = await nats.connect(address, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=StorageType.FILE)
        await js.publish(f"{stream}.x", b"x", timeout=5)
    finally:
        await nc.close()


@pytest.mark.timeout(60)
def test_nats_cluster_restart_in_place_keeps_data_and_afresh_does_not(tmp_path: Path) -> None:
    with start_nats(nodes=3, workdir_parent=tmp_path) as broker:
        servers = broker.address.split(",")
        asyncio.run(_publish(servers, "KEEP", 2, create=True))
        address, pids = broker.address, broker.pids

        broker.restart()  # every node again on its ports, with its data
        assert broker.alive() and broker.address == address
        assert not set(broker.pids) & set(pids) and all(_gone(pid) for pid in pids)
        assert asyncio.run(_stream_replicas(servers, "KEEP"))[0] == 2

        broker.restart(new_ports=True)  # afresh: new ports, empty
        assert broker.alive() and broker.address != address
        assert broker.endpoints["client"] == broker.address
        assert [n.address for n in broker.nodes] == broker.address.split(",")
        with pytest.raises(nats.js.errors.NotFoundError):
            asyncio.run(_stream_replicas(broker.address.split(","), "KEEP"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_nats_cluster_dies_when_exprun_is_killed(tmp_path: Path) -> None:
    code = "from runner.execution.brokers import start_nats; "
    code += "b = start_nats(nodes=3, workdir_parent=sys.argv[1]); "
    code += "print(*b.pids, flush=True); time.sleep(60)"
    argv = [sys.executable, "-c", "import sys, time; " + code, str(tmp_path)]
    parent = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 3 and not any(_gone(pid) for pid in pids)
        parent.kill()  # SIGKILL: no atexit, no cleanup code runs
        parent.wait()
        deadline = time.monotonic() + 5.0
        while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(pid) for pid in pids), "a nats-server outlived a SIGKILLed exprun"
    finally:
        parent.kill()
        parent.wait()
