"""Embedded Apache Kafka 4.x (KRaft, combined broker+controller nodes) from Maven Central jars."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import importlib.resources
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.execution.brokers.access import PLAIN, ClientAccess
from runner.execution.brokers.base import (
    RunningBroker,
    free_ports,
    make_workdir,
    start_embedded,
    tcp_open,
)
from runner.execution.brokers.cache import (
    COMPLETE_MARKER,
    MVN_TIMEOUT,
    cache_root,
    fill_once,
    find_mvn,
    mvn_failure,
)
from runner.execution.brokers.certs import Certificates, make_certificates, write_private
from runner.execution.brokers.errors import BrokerStartError, LeaderUnknown
from runner.execution.brokers.jmx_agent import exporter_config, jmx_agent_jar
from runner.execution.brokers.logs import start_error
from runner.execution.brokers.node import (
    BrokerNode,
    NotFormed,
    await_formed,
    formation_error,
    launch_nodes,
    live_nodes,
    paused_node,
    poll_leader,
)
from runner.execution.brokers.processes import run_tool, spawn, terminate_groups, wait_tool
from schemas.spec import KafkaSecurity

KAFKA_VERSION = "4.4.0"  # newest 4.x on Maven Central when this was written
KAFKA_VERSION_ENV = "EXPRUN_KAFKA_VERSION"
# A directory of Kafka jars (e.g. a Kafka distribution's libs/) to use instead of Maven.
KAFKA_LIBS_ENV = "EXPRUN_KAFKA_LIBS"
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+
JAVA_HINT = "apt-get install openjdk-17-jre-headless"
POM_NAME = "kafka-pom.xml"

BROKER_HEAP = ("-Xms512m", "-Xmx1g")
HEAP_SIZE = re.compile(r"\d+[kKmMgG]?")  # what -Xms / -Xmx take
SINGLE_TIMEOUT = 90.0
# Every extra JVM shares the same cores while starting: give a cluster more time.
TIMEOUT_PER_EXTRA_NODE = 30.0
# The flags Kafka's own kafka-run-class.sh uses, so we measure the broker as it ships.
BROKER_JVM_OPTS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)
# The storage formatter is short-lived: optimise its JVM for start-up, not throughput.
FORMAT_JVM_OPTS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
JMX_EXPORTER_CONFIG = "jmx-exporter.yaml"
# Server-wide message size raised (default ~1 MB) so the broker never fails an experiment by
# itself; topic-level limits a spec declares still apply.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# The one login a secured embedded Kafka has: every client of exprun's uses it.
KAFKA_USER = "exprun"
SASL_MECHANISMS = {
    "plain": "PLAIN",
    "scram-sha-256": "SCRAM-SHA-256",
    "scram-sha-512": "SCRAM-SHA-512",
}
SCRAM_ITERATIONS = 4096  # Kafka's default, and the least it accepts


def kafka_version() -> str:
    """The Kafka version exprun runs: $EXPRUN_KAFKA_VERSION or the built-in default."""
    return os.environ.get(KAFKA_VERSION_ENV) or KAFKA_VERSION


# --- tools -----------------------------------------------------------------------------------


def find_java() -> Path:
    """$JAVA_HOME/bin/java if JAVA_HOME is set, else `java` on PATH (as Kafka's scripts do)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if os.access(java, os.X_OK):
            return java
        raise BrokerStartError(
            f"JAVA_HOME={java_home} has no bin/java: point JAVA_HOME at a Java {MIN_JAVA}+ "
            f"runtime, or unset it to use `java` from PATH (install one: `{JAVA_HINT}`)."
        )
    on_path = shutil.which("java")
    if on_path is None:
        raise BrokerStartError(
            f"Java not found: the embedded Kafka broker needs a Java {MIN_JAVA}+ runtime "
            f"(`java` on PATH or JAVA_HOME). Install one, e.g. `{JAVA_HINT}`."
        )
    return Path(on_path)


def java_major_version(java: Path) -> int:
    """Run `java -version` and return the major version; BrokerStartError if it is unusable."""
    try:
        res = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"{java} -version failed: {exc}. Install Java: `{JAVA_HINT}`."
        raise BrokerStartError(msg) from exc
    out = (res.stderr + res.stdout).strip()
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if res.returncode != 0 or match is None:
        tail = "\n".join(out.splitlines()[-20:])
        raise BrokerStartError(
            f"{java} -version failed (exit {res.returncode}); is it a working Java {MIN_JAVA}+? "
            f"Install one: `{JAVA_HINT}`.\n{tail}"
        )
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major


# --- jars ------------------------------------------------------------------------------------


def cache_dir(version: str) -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/exprun/kafka-<version>."""
    return cache_root() / f"kafka-{version}"


def _pom_bytes() -> bytes:
    return importlib.resources.files("runner.execution.brokers").joinpath(POM_NAME).read_bytes()


def _cache_key(version: str) -> str:
    """Changes when the version or the shipped pom changes, invalidating the cache."""
    return hashlib.sha256(version.encode() + b"\0" + _pom_bytes()).hexdigest()


def jars_version(jars: Sequence[Path]) -> str | None:
    """Kafka version of a classpath, from its kafka-clients-<version>.jar."""
    for jar in jars:
        match = re.fullmatch(r"kafka-clients-(\d[^-]*(?:-[A-Za-z0-9.]+)?)\.jar", jar.name)
        if match:
            return match.group(1)
    return None


def _jars(libs: Path) -> list[Path]:
    return sorted(p for p in libs.glob("*.jar") if p.is_file())


def kafka_classpath(version: str | None = None) -> list[Path]:
    """Jars of the Kafka broker and kafka-tools; resolved with Maven once, then cached."""
    libs_override = os.environ.get(KAFKA_LIBS_ENV)
    if libs_override:
        jars = _jars(Path(libs_override))
        if not jars:
            raise BrokerStartError(f"{KAFKA_LIBS_ENV}={libs_override} contains no .jar files")
        return jars
    version = version or kafka_version()
    libs, key = cache_dir(version) / "libs", _cache_key(version)
    fetch = functools.partial(_resolve_jars, version)
    jars = _jars(fill_once(libs, key, fetch))
    if not jars:
        # Emptied by hand after it was complete: fetch again rather than start without jars.
        (libs / COMPLETE_MARKER).unlink(missing_ok=True)
        jars = _jars(fill_once(libs, key, fetch))
    return jars


def _resolve_jars(version: str, into: Path) -> None:
    """mvn dependency:copy-dependencies into the dir `into`."""
    mvn = find_mvn(
        "the Kafka broker jars",
        f"set {KAFKA_LIBS_ENV} to a directory of Kafka jars (a Kafka distribution's libs/)",
    )
    base = into.parent
    # Run on a copy next to the cache: the installed package dir may be read-only.
    pom = base / POM_NAME
    pom.write_bytes(_pom_bytes())
    log = base / "mvn.log"
    log.write_bytes(b"")
    argv = [str(mvn), "-q", "-B", "-f", str(pom), f"-Dkafka.version={version}"]
    argv += ["dependency:copy-dependencies", f"-DoutputDirectory={into}"]
    code = run_tool(argv, log_path=log, cwd=base, timeout=MVN_TIMEOUT)
    if code != 0 or not _jars(into):
        raise BrokerStartError(
            f"Resolving Apache Kafka {version} jars: {mvn_failure(argv, code, log)}"
        )


# --- config ----------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A random cluster id like `kafka-storage.sh random-uuid` (22 chars, URL-safe base64)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # would be read as a command-line flag
            return cid


def _properties(props: Mapping[str, str]) -> str:
    return "".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in props.items())


@dataclass(frozen=True)
class _Secured:
    """A secured instance's CA, certificates and login: made once, kept across restarts.

    The client listener is named after its protocol (SSL, SASL_SSL, SASL_PLAINTEXT) and carries
    the inter-broker traffic too, so replication is secured like the clients are.
    """

    protocol: str
    certificates: Certificates | None  # with TLS
    mechanism: str | None  # the SASL mechanism, as Kafka and librdkafka name it
    password: str = field(default="", repr=False)

    @property
    def controller_protocol(self) -> str:
        # KRaft controllers cannot authenticate with SCRAM (its credentials live in the metadata
        # they serve), so the controller listener has TLS only; without TLS it stays PLAINTEXT,
        # on loopback like every other port of the node.
        return "SSL" if self.certificates is not None else "PLAINTEXT"

    def server_properties(self, number: int) -> dict[str, str]:
        """The ssl.* and sasl.* entries of node number's server.properties."""
        props: dict[str, str] = {}
        if self.certificates is not None:
            props |= {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(_keystore(self.certificates, number)),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.certificates.ca),
                "ssl.client.auth": "none",
            }
        if self.mechanism is not None:
            listener = f"listener.name.{self.protocol.lower()}.{self.mechanism.lower()}"
            props |= {
                "sasl.enabled.mechanisms": self.mechanism,
                "sasl.mechanism.inter.broker.protocol": self.mechanism,
                f"{listener}.sasl.jaas.config": self._jaas(),
            }
        return props

    def _jaas(self) -> str:
        login = f'username="{KAFKA_USER}" password="{self.password}"'
        if self.mechanism == "PLAIN":
            # PLAIN's server side checks logins against the user_<name> entries.
            module = "org.apache.kafka.common.security.plain.PlainLoginModule"
            return f'{module} required {login} user_{KAFKA_USER}="{self.password}";'
        return f"org.apache.kafka.common.security.scram.ScramLoginModule required {login};"

    def format_args(self) -> tuple[str, ...]:
        """The storage format's --add-scram for the user (SCRAM keeps its logins in metadata).

        Passes the salted password, not the password itself: a command line is readable by
        every local user, and the tool echoes what it cannot parse.
        """
        if self.mechanism is None or not self.mechanism.startswith("SCRAM-"):
            return ()
        salt = secrets.token_bytes(32)
        digest = self.mechanism.removeprefix("SCRAM-").replace("-", "").lower()
        # SCRAM's Hi() (RFC 5802) is PBKDF2 with the mechanism's HMAC, one block long.
        salted = hashlib.pbkdf2_hmac(digest, self.password.encode(), salt, SCRAM_ITERATIONS)
        b64 = base64.b64encode
        fields = f"name={KAFKA_USER},salt={b64(salt).decode()},"
        fields += f"saltedpassword={b64(salted).decode()},iterations={SCRAM_ITERATIONS}"
        return ("--add-scram", f"{self.mechanism}=[{fields}]")

    def access(self) -> ClientAccess:
        """What librdkafka clients set to reach the client listener."""
        props = {"security.protocol": self.protocol}
        if self.certificates is not None:
            props["ssl.ca.location"] = str(self.certificates.ca)
        if self.mechanism is not None:
            props |= {
                "sasl.mechanism": self.mechanism,
                "sasl.username": KAFKA_USER,
                "sasl.password": self.password,
            }
        return ClientAccess(kafka=props)


def _keystore(certificates: Certificates, number: int) -> Path:
    """Node number's key and certificate chain in one PEM file, as Kafka's PEM store wants."""
    return certificates.ca.parent / f"node{number}-keystore.pem"


def _secure(security: KafkaSecurity, folder: Path, nodes: int) -> _Secured:
    """A CA and node certificates in folder (with TLS) and a random password (with SASL)."""
    certificates = None
    if security.tls:
        certificates = make_certificates(folder, nodes)
        for number, pair in enumerate(certificates.nodes, 1):
            keystore = _keystore(certificates, number)
            write_private(keystore, pair.key.read_bytes() + pair.cert.read_bytes())
    if security.sasl == "none":
        return _Secured(security.protocol, certificates, None)
    mechanism = SASL_MECHANISMS[security.sasl]
    return _Secured(security.protocol, certificates, mechanism, secrets.token_urlsafe(24))


def _replication(nodes: int) -> dict[str, str]:
    """Internal topics' replication: 1 on a single node; up to 3 copies (2 in sync) on more."""
    factor, isr = str(min(3, nodes)), str(min(2, nodes))
    return {
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": isr,
    }


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    overrides: Mapping[str, str],
    node_id: int = 1,
    voters: Sequence[int] = (),
    protocol: str = "PLAINTEXT",
    controller_protocol: str = "PLAINTEXT",
    security: Mapping[str, str] | None = None,
) -> str:
    """server.properties for one combined broker+controller node on loopback.

    voters: the controller ports of every node of a cluster, in node.id order (a static
    quorum); empty for a single node (a dynamic quorum of one, as `format --standalone` wants).
    protocol names the client (and inter-broker) listener and is its security protocol;
    security holds its ssl.* and sasl.* entries.
    """
    listeners = f"{protocol}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
    static = ",".join(f"{i}@127.0.0.1:{p}" for i, p in enumerate(voters, 1))
    quorum = (
        {"controller.quorum.voters": static}
        if voters
        else {"controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}"}
    )
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        **quorum,
        "listeners": listeners,
        "advertised.listeners": listeners,
        "inter.broker.listener.name": protocol,
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": f"CONTROLLER:{controller_protocol},{protocol}:{protocol}",
        **(security or {}),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # A topic exprun creates states its replication; clients' acks decide the rest.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        **_replication(max(1, len(voters))),
        # No point waiting for more members to join on a benchmark box.
        "group.initial.rebalance.delay.ms": "0",
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
    }
    props.update(overrides)
    return _properties(props)


def render_log4j2(log_file: Path) -> str:
    """log4j2 properties config: everything at INFO into one file."""
    return _properties(
        {
            "status": "warn",
            "appender.file.type": "File",
            "appender.file.name": "FILE",
            "appender.file.fileName": str(log_file),
            "appender.file.layout.type": "PatternLayout",
            "appender.file.layout.pattern": "[%d] %p %m (%c)%n",
            "rootLogger.level": "INFO",
            "rootLogger.appenderRef.file.ref": "FILE",
            # Per-request logging is noise even at INFO in some versions; Kafka's default too.
            "logger.request.name": "kafka.request.logger",
            "logger.request.level": "WARN",
        }
    )


def heap_flags(heap: str | None) -> tuple[str, ...]:
    """-Xms and -Xmx for a heap like "1G" or "512m"; Kafka's defaults for None."""
    if heap is None:
        return BROKER_HEAP
    if not HEAP_SIZE.fullmatch(heap):
        raise BrokerStartError(f"bad Kafka heap {heap!r}: expected a JVM size like 512m or 1G")
    return (f"-Xms{heap}", f"-Xmx{heap}")


# --- readiness and leaders -------------------------------------------------------------------


def _admin_client(nodes: Sequence[BrokerNode], access: ClientAccess) -> Any:
    """An AdminClient bootstrapped from the nodes, quiet about brokers that are down."""
    from confluent_kafka.admin import AdminClient

    # log_level 0: "connection refused" retries while nodes start or are down are expected.
    conf: dict[str, str | int | float | bool] = {
        "bootstrap.servers": ",".join(n.address for n in nodes),
        "log_level": 0,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 200,
        # Asking for a topic's metadata must not create it (librdkafka's producer default).
        "allow.auto.create.topics": False,
        **access.kafka,
    }
    return AdminClient(conf)


def _accepts(node: BrokerNode) -> bool:
    host, port = node.address.rsplit(":", 1)
    return tcp_open(host, int(port), timeout=0.5)


class _MetadataCheck:
    """Kafka is formed when every node accepts connections and the metadata lists its broker."""

    def __init__(self, nodes: Sequence[BrokerNode], access: ClientAccess) -> None:
        self.nodes = nodes
        self.access = access
        self.admin: Any = None

    def __call__(self) -> NotFormed | None:
        lag = paused_node(self.nodes)
        if lag is not None:
            return lag
        for node in self.nodes:
            if not _accepts(node):
                return NotFormed("does not accept connections yet", node)
        if self.admin is None:
            self.admin = _admin_client(self.nodes, self.access)
        try:
            metadata = self.admin.list_topics(timeout=1.0)
        except Exception:  # KafkaException while the nodes finish starting
            return NotFormed("the cluster metadata is not available yet")
        return self._missing_broker(metadata.brokers) or _leaderless(metadata.topics)

    def _missing_broker(self, brokers: Mapping[int, Any]) -> NotFormed | None:
        if len(self.nodes) == 1:
            return None if brokers else NotFormed("lists no broker yet", self.nodes[0])
        for node in self.nodes:
            if node.number not in brokers:
                listed = ", ".join(str(b) for b in sorted(brokers)) or "none"
                return NotFormed(f"is not in the cluster metadata yet (brokers {listed})", node)
        return None


def _leaderless(topics: Mapping[str, Any]) -> NotFormed | None:
    """A NotFormed for the first partition without a leader (e.g. after a restart), if any."""
    for name, topic in topics.items():
        for partition in topic.partitions.values():
            if partition.leader < 0:
                return NotFormed(f"partition {partition.id} of topic {name!r} has no leader yet")
    return None


def _partition_leader(admin: Any, nodes: Sequence[BrokerNode], topic: str) -> BrokerNode | str:
    """The running node leading partition 0 of topic, as the metadata says; else why not."""
    try:
        metadata = admin.list_topics(topic=topic, timeout=1.0)
    except Exception as exc:  # KafkaException: no broker answered
        return f"no metadata ({exc})"
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return f"the topic is not there ({described.error if described else 'not listed'})"
    partition = described.partitions.get(0)
    if partition is None or partition.leader < 0:
        return "partition 0 has no leader"
    node = next((n for n in nodes if n.number == partition.leader), None)
    if node is None:
        return f"partition 0 is led by broker {partition.leader}, not one of exprun's nodes"
    if not node.alive():
        return f"partition 0 is still led by {node.label}, which is down"
    return node


# --- launcher --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ports:
    client: int
    controller: int
    metrics: int | None = None  # the JMX exporter agent's HTTP port, with telemetry on


@dataclass
class _KafkaLauncher:
    """Knows how to (re)start one embedded Kafka node, or a cluster of them, in its workdir."""

    java: Path
    classpath: list[Path]
    version: str
    workdir: Path
    node_count: int
    fixed_port: int | None
    overrides: Mapping[str, str]
    jvm_opts: Sequence[str]
    default_timeout: float
    heap: tuple[str, ...] = BROKER_HEAP
    # The JMX exporter agent's jar, with telemetry on: every node runs it.
    jmx_agent: Path | None = None
    ports: list[_Ports] | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    # Kept between leader lookups: a fresh client's bootstrap costs a fault ~0.4 s of delay.
    _admins: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False)
    security: KafkaSecurity | None = None
    access: ClientAccess = field(default=PLAIN, repr=False)
    _secured: _Secured | None = field(default=None, repr=False)

    def _node_dir(self, number: int) -> Path:
        # A single node lives in the workdir itself, as it always has.
        return self.workdir if self.node_count == 1 else self.workdir / f"n{number}"

    def _node_logs(self, number: int) -> list[Path]:
        node_dir = self._node_dir(number)
        return [node_dir / "server.log", node_dir / "console.log"]

    @property
    def _numbers(self) -> range:
        return range(1, self.node_count + 1)

    @property
    def log_files(self) -> list[Path]:
        return [log for number in self._numbers for log in self._node_logs(number)]

    @property
    def _cp(self) -> str:
        return os.pathsep.join(str(p) for p in self.classpath)

    def _java(self, node_dir: Path, opts: Sequence[str], main: str, *args: str) -> list[str]:
        log4j = f"-Dlog4j2.configurationFile={node_dir / 'log4j2.properties'}"
        logs_dir = f"-Dkafka.logs.dir={node_dir}"
        return [str(self.java), *opts, log4j, logs_dir, "-cp", self._cp, main, *args]

    @property
    def _title(self) -> str:
        assert self.ports is not None
        if self.node_count == 1:
            ports = self.ports[0]
            protocol = self._secured.protocol if self._secured is not None else "PLAINTEXT"
            return (
                f"Embedded Kafka {self.version} ({protocol} 127.0.0.1:{ports.client}, "
                f"controller 127.0.0.1:{ports.controller})"
            )
        return f"Embedded Kafka {self.version} cluster of {self.node_count} nodes"

    def launch(self, new_ports: bool, timeout: float | None) -> list[BrokerNode]:
        """Start every node; wiped, reformatted storage and new ports if new_ports or at first."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        fresh = new_ports or self.ports is None
        nodes = launch_nodes(
            lambda fresh_: self._make_nodes(fresh_, deadline),
            lambda started: self._await(started, deadline, starting=True),
            fresh=fresh,
            tries=3 if fresh and self.fixed_port is None else 1,
        )
        self.endpoints.update(
            client=",".join(n.address for n in nodes),
            controller=",".join(n.endpoints["controller"] for n in nodes),
        )
        if self.jmx_agent is not None:
            self.endpoints["metrics"] = ",".join(n.endpoints["metrics"] for n in nodes)
        return nodes

    def wait_formed(self, nodes: Sequence[BrokerNode], timeout: float | None) -> None:
        """Return once every node is up and registered as a broker of the cluster."""
        wait = self.default_timeout if timeout is None else timeout
        self._await(nodes, time.monotonic() + wait, starting=False)

    def leader(self, nodes: Sequence[BrokerNode], destination: str, timeout: float) -> BrokerNode:
        """The node leading partition 0 of the topic named destination."""
        live = live_nodes(nodes)
        if not live:
            raise LeaderUnknown("no node of the Kafka broker runs unpaused")
        addresses = tuple(node.address for node in live)
        if addresses not in self._admins:
            self._admins[addresses] = _admin_client(live, self.access)
        admin = self._admins[addresses]
        return poll_leader(
            lambda: _partition_leader(admin, nodes, destination),
            f"partition 0 of topic {destination!r}",
            timeout,
        )

    def _await(self, nodes: Sequence[BrokerNode], deadline: float, *, starting: bool) -> None:
        check = _MetadataCheck(nodes, self.access)
        lag = await_formed(nodes, check, deadline=deadline, interval=0.1)
        if lag is not None:
            raise formation_error(self._title, nodes, lag, starting=starting)
        # The check's client is connected: a fault's leader lookup through a fresh one took
        # over a second under load (its first metadata request timed out), so the kill came late.
        self._admins = {tuple(node.address for node in nodes): check.admin}

    def _make_nodes(self, fresh: bool, deadline: float) -> list[BrokerNode]:
        if fresh:
            self._prepare_fresh(deadline)
        return [self._node(number) for number in self._numbers]

    def _prepare_fresh(self, deadline: float) -> None:
        """New ports, empty data dirs, config files, formatted storage."""
        security = self.security
        if self._secured is None and security is not None and security.protocol != "PLAINTEXT":
            self._secured = _secure(security, self.workdir / "tls", self.node_count)
            self.access = self._secured.access()
        telemetry = self.jmx_agent is not None
        picked = iter(free_ports((3 if telemetry else 2) * self.node_count))
        self.ports = [
            _Ports(next(picked), next(picked), next(picked) if telemetry else None)
            for _ in self._numbers
        ]
        if self.fixed_port is not None:
            self.ports[0] = dataclasses.replace(self.ports[0], client=self.fixed_port)
        voters = [p.controller for p in self.ports] if self.node_count > 1 else []
        for number, ports in zip(self._numbers, self.ports, strict=True):
            node_dir = self._node_dir(number)
            node_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(node_dir / "data", ignore_errors=True)
            for log in self._node_logs(number):
                log.write_bytes(b"")
            (node_dir / "log4j2.properties").write_text(render_log4j2(node_dir / "server.log"))
            secured = self._secured
            properties = render_server_properties(
                port=ports.client,
                controller_port=ports.controller,
                data_dir=node_dir / "data",
                overrides=self.overrides,
                node_id=number,
                voters=voters,
                protocol=secured.protocol if secured else "PLAINTEXT",
                controller_protocol=secured.controller_protocol if secured else "PLAINTEXT",
                security=secured.server_properties(number) if secured else None,
            )
            (node_dir / "server.properties").write_text(properties)
            if self.jmx_agent is not None:
                (node_dir / JMX_EXPORTER_CONFIG).write_text(exporter_config())
        self._format(deadline)

    def _format(self, deadline: float) -> None:
        """What `kafka-storage.sh format -t ID -c server.properties` does, on every node at once.

        A single node is a dynamic quorum of one (--standalone); a cluster's nodes share one
        cluster id and the static quorum of their server.properties.
        """
        cluster_id = new_cluster_id()
        standalone = ("--standalone",) if self.node_count == 1 else ()
        # Every node gets the same credentials (one salt): any of them may serve a login.
        scram = self._secured.format_args() if self._secured is not None else ()
        running: list[tuple[int, subprocess.Popen[bytes]]] = []
        try:
            for number in self._numbers:
                node_dir = self._node_dir(number)
                props = str(node_dir / "server.properties")
                args = ("format", "-t", cluster_id, "-c", props, *standalone, *scram)
                argv = self._java(node_dir, FORMAT_JVM_OPTS, "kafka.tools.StorageTool", *args)
                proc = spawn(argv, log_path=node_dir / "format.log", cwd=node_dir)
                running.append((number, proc))
            for number, proc in running:
                code = wait_tool(proc, deadline - time.monotonic())
                if code != 0:
                    raise self._format_error(number, code)
        finally:
            # After a failure, the other nodes' formatters are of no use.
            terminate_groups([proc for _, proc in running], 2.0)

    def _format_error(self, number: int, code: int | None) -> BrokerStartError:
        node_dir = self._node_dir(number)
        why = "timed out" if code is None else f"failed with exit code {code}"
        storage, heading = f"the embedded Kafka {self.version} storage", ""
        if self.node_count > 1:
            storage = f"the storage of node {number} of {self.node_count} of the embedded Kafka "
            storage += f"{self.version} cluster"
            heading = f"n{number}"
        logs = [node_dir / "format.log", node_dir / "server.log"]
        return start_error(f"Formatting {storage} ({self.java}) {why}.", logs, heading=heading)

    def _node(self, number: int) -> BrokerNode:
        assert self.ports is not None
        ports, node_dir = self.ports[number - 1], self._node_dir(number)
        opts = [*self.heap, *BROKER_JVM_OPTS, *self.jvm_opts]
        address = f"127.0.0.1:{ports.client}"
        endpoints = {"client": address, "controller": f"127.0.0.1:{ports.controller}"}
        if self.jmx_agent is not None:
            config = node_dir / JMX_EXPORTER_CONFIG
            opts.append(f"-javaagent:{self.jmx_agent}=127.0.0.1:{ports.metrics}:{config}")
            endpoints["metrics"] = f"http://127.0.0.1:{ports.metrics}/metrics"
        argv = self._java(node_dir, opts, "kafka.Kafka", str(node_dir / "server.properties"))
        return BrokerNode(
            number=number,
            cluster_size=self.node_count,
            address=address,
            endpoints=endpoints,
            log_files=self._node_logs(number),
            workdir=node_dir,
            argv=argv,
            console_log=node_dir / "console.log",
        )


def start_kafka(
    timeout: float | None = None,
    *,
    nodes: int = 1,
    port: int | None = None,
    overrides: Mapping[str, str] | None = None,
    version: str | None = None,
    heap: str | None = None,
    jvm_opts: Sequence[str] = (),
    workdir_parent: Path | None = None,
    telemetry: bool = False,
    security: KafkaSecurity | None = None,
) -> RunningBroker:
    """Start a KRaft Kafka of combined broker+controller nodes on free loopback ports.

    timeout bounds format + start-up until formed (default 90 s, plus 30 s per extra node; a
    first-time jar download is not counted); port pins the first node's client port; overrides
    are server.properties entries for every node; heap ("1G", "512m") sets -Xms and -Xmx;
    jvm_opts are appended to the JVM's. telemetry runs the Prometheus JMX exporter agent in
    every node: endpoints["metrics"] lists their /metrics URLs. security: TLS with a CA made for
    it and / or SASL with a user made for it; RunningBroker.access is what clients need then.
    """
    if nodes < 1:
        raise BrokerStartError(f"a Kafka broker needs at least one node, not {nodes}")
    heap_opts = heap_flags(heap)
    if timeout is None:
        timeout = SINGLE_TIMEOUT + TIMEOUT_PER_EXTRA_NODE * (nodes - 1)
    version = version or kafka_version()
    java = find_java()
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise BrokerStartError(
            f"Kafka {version} needs Java {MIN_JAVA}+, but {java} is Java {major}. "
            f"Install a newer one (e.g. `{JAVA_HINT}`) and put it on PATH or in JAVA_HOME."
        )
    classpath = kafka_classpath(version)
    jmx_agent = jmx_agent_jar() if telemetry else None
    # With $EXPRUN_KAFKA_LIBS the jars, not the requested version, say what runs.
    version = jars_version(classpath) or version
    workdir = make_workdir("kafka", workdir_parent)
    launcher = _KafkaLauncher(
        java=java,
        classpath=classpath,
        version=version,
        workdir=workdir,
        node_count=nodes,
        fixed_port=port,
        overrides=dict(overrides or {}),
        jvm_opts=tuple(jvm_opts),
        default_timeout=timeout,
        heap=heap_opts,
        jmx_agent=jmx_agent,
        security=security,
    )
    return start_embedded("kafka", launcher, workdir, timeout)
