"""Embedded Apache Kafka 4.x (KRaft, single combined node) from Maven Central jars on local Java."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib.resources
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.execution.brokers.base import (
    BrokerStartError,
    RunningBroker,
    free_ports,
    is_port_conflict,
    make_workdir,
    run_tool,
    spawn,
    start_embedded,
    start_error,
    tail_files,
    tcp_open,
    terminate_group,
    wait_until,
)

KAFKA_VERSION = "4.4.0"  # newest 4.x on Maven Central when this was written
KAFKA_VERSION_ENV = "EXPRUN_KAFKA_VERSION"
# A directory of Kafka jars (e.g. a Kafka distribution's libs/) to use instead of Maven.
KAFKA_LIBS_ENV = "EXPRUN_KAFKA_LIBS"
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+
MVN_TIMEOUT = 900.0
JAVA_HINT = "apt-get install openjdk-17-jre-headless"
MVN_HINT = "apt-get install maven"
POM_NAME = "kafka-pom.xml"
COMPLETE_MARKER = ".exprun-complete"

BROKER_HEAP = ("-Xms512m", "-Xmx1g")
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
# Server-wide message size raised (default ~1 MB) so the broker never fails an experiment by
# itself; topic-level limits a spec declares still apply.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


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


def find_mvn() -> Path:
    """`mvn` from MAVEN_HOME or PATH; BrokerStartError with an install hint otherwise."""
    maven_home = os.environ.get("MAVEN_HOME")
    if maven_home and os.access(Path(maven_home) / "bin" / "mvn", os.X_OK):
        return Path(maven_home) / "bin" / "mvn"
    on_path = shutil.which("mvn")
    if on_path is None:
        raise BrokerStartError(
            "Maven (`mvn`) not found: exprun fetches the Kafka broker jars from Maven Central "
            f"with it once (then caches them). Install it, e.g. `{MVN_HINT}`, or set "
            f"{KAFKA_LIBS_ENV} to a directory of Kafka jars (a Kafka distribution's libs/)."
        )
    return Path(on_path)


# --- jars ------------------------------------------------------------------------------------


def cache_dir(version: str) -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/exprun/kafka-<version>."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "exprun" / f"kafka-{version}"


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


def _cached_jars(libs: Path, key: str) -> list[Path] | None:
    marker = libs / COMPLETE_MARKER
    try:
        if marker.read_text().strip() != key:
            return None
    except OSError:
        return None
    return _jars(libs) or None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so concurrent exprun processes resolve the jars only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def kafka_classpath(version: str | None = None) -> list[Path]:
    """Jars of the Kafka broker and kafka-tools; resolved with Maven once, then cached."""
    libs_override = os.environ.get(KAFKA_LIBS_ENV)
    if libs_override:
        jars = _jars(Path(libs_override))
        if not jars:
            raise BrokerStartError(f"{KAFKA_LIBS_ENV}={libs_override} contains no .jar files")
        return jars
    version = version or kafka_version()
    base, key = cache_dir(version), _cache_key(version)
    cached = _cached_jars(base / "libs", key)
    if cached:
        return cached
    with _file_lock(base / ".lock"):
        # Another process may have finished while we waited for the lock.
        cached = _cached_jars(base / "libs", key)
        if cached:
            return cached
        _resolve_jars(version, base, key)
    return _jars(base / "libs")


def _resolve_jars(version: str, base: Path, key: str) -> None:
    """mvn dependency:copy-dependencies into a scratch dir, then swap it in as libs/."""
    mvn = find_mvn()
    scratch = base / f"libs.tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    # Run on a copy next to the cache: the installed package dir may be read-only.
    pom = base / POM_NAME
    pom.write_bytes(_pom_bytes())
    log = base / "mvn.log"
    log.write_bytes(b"")
    argv = [str(mvn), "-q", "-B", "-f", str(pom), f"-Dkafka.version={version}"]
    argv += ["dependency:copy-dependencies", f"-DoutputDirectory={scratch}"]
    code = run_tool(argv, log_path=log, cwd=base, timeout=MVN_TIMEOUT)
    if code != 0 or not _jars(scratch):
        shutil.rmtree(scratch, ignore_errors=True)
        why = "timed out" if code is None else f"failed (exit {code})"
        raise BrokerStartError(
            f"Resolving Apache Kafka {version} jars with Maven {why}: {' '.join(argv)}\n"
            f"--- mvn output (last 20 lines, full log {log}) ---\n{tail_files([log], 20)}"
        )
    (scratch / COMPLETE_MARKER).write_text(key + "\n")
    shutil.rmtree(base / "libs", ignore_errors=True)
    scratch.rename(base / "libs")


# --- config ----------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A random cluster id like `kafka-storage.sh random-uuid` (22 chars, URL-safe base64)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # would be read as a command-line flag
            return cid


def _properties(props: Mapping[str, str]) -> str:
    return "".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in props.items())


def render_server_properties(
    *, port: int, controller_port: int, data_dir: Path, overrides: Mapping[str, str]
) -> str:
    """server.properties for a single combined broker+controller node on loopback."""
    listeners = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Dynamic quorum (what `format --standalone` expects) rather than static voters.
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": listeners,
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # One node: every internal topic must accept replication factor / ISR 1.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
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


# --- readiness -------------------------------------------------------------------------------


def _metadata_probe(address: str) -> tuple[Callable[[], bool], Callable[[], None]]:
    """(ready check, close): the broker's port accepts and its metadata lists a broker."""
    host, port = address.rsplit(":", 1)
    admin: list[Any] = []

    def ready() -> bool:
        if not tcp_open(host, int(port), timeout=0.5):
            return False
        if not admin:
            from confluent_kafka.admin import AdminClient

            # log_level 0: startup "connection refused" retries are expected, not news.
            conf: dict[str, str | int | float | bool] = {
                "bootstrap.servers": address,
                "log_level": 0,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 200,
            }
            admin.append(AdminClient(conf))
        try:
            return bool(admin[0].list_topics(timeout=1.0).brokers)
        except Exception:  # KafkaException while the node finishes starting
            return False

    return ready, admin.clear


# --- launcher --------------------------------------------------------------------------------


@dataclass
class _KafkaLauncher:
    """Knows how to (re)start one embedded Kafka node in its workdir."""

    java: Path
    classpath: list[Path]
    version: str
    workdir: Path
    fixed_port: int | None
    overrides: Mapping[str, str]
    jvm_opts: Sequence[str]
    default_timeout: float
    ports: tuple[int, int] | None = None  # (client, controller)
    endpoints: dict[str, str] = field(default_factory=dict)

    @property
    def log_files(self) -> list[Path]:
        return [self.workdir / "server.log", self.workdir / "console.log"]

    @property
    def _cp(self) -> str:
        return os.pathsep.join(str(p) for p in self.classpath)

    def _java(self, opts: Sequence[str], main: str, *args: str) -> list[str]:
        log4j = f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}"
        logs_dir = f"-Dkafka.logs.dir={self.workdir}"
        return [str(self.java), *opts, log4j, logs_dir, "-cp", self._cp, main, *args]

    def launch(self, new_ports: bool, timeout: float | None) -> tuple[subprocess.Popen[bytes], str]:
        """Start the node; wiped, reformatted storage and new ports if new_ports or first start."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        fresh = new_ports or self.ports is None
        tries = 3 if fresh and self.fixed_port is None else 1
        for attempt in range(tries):
            if fresh:
                self._prepare_fresh(deadline)
            try:
                return self._launch_once(deadline)
            except BrokerStartError:
                # Another process may have grabbed a port we picked: pick again.
                if attempt + 1 < tries and is_port_conflict(self.log_files):
                    continue
                raise
        raise AssertionError("unreachable")

    def _prepare_fresh(self, deadline: float) -> None:
        """New ports, empty data dir, config files, formatted storage."""
        client, controller = free_ports(2)
        self.ports = (self.fixed_port or client, controller)
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        for log in self.log_files:
            log.write_bytes(b"")
        (self.workdir / "log4j2.properties").write_text(render_log4j2(self.log_files[0]))
        (self.workdir / "server.properties").write_text(
            render_server_properties(
                port=self.ports[0],
                controller_port=self.ports[1],
                data_dir=data,
                overrides=self.overrides,
            )
        )
        self._format(deadline)

    def _format(self, deadline: float) -> None:
        """What `kafka-storage.sh format --standalone -t ID -c server.properties` does."""
        props = str(self.workdir / "server.properties")
        args = ("format", "-t", new_cluster_id(), "-c", props, "--standalone")
        argv = self._java(FORMAT_JVM_OPTS, "kafka.tools.StorageTool", *args)
        log = self.workdir / "format.log"
        code = run_tool(argv, log_path=log, cwd=self.workdir, timeout=deadline - time.monotonic())
        if code != 0:
            why = "timed out" if code is None else f"failed with exit code {code}"
            raise start_error(
                f"Formatting the embedded Kafka {self.version} storage ({self.java}) {why}.",
                [log, self.log_files[0]],
            )

    def _launch_once(self, deadline: float) -> tuple[subprocess.Popen[bytes], str]:
        assert self.ports is not None
        address = f"127.0.0.1:{self.ports[0]}"
        opts = [*BROKER_HEAP, *BROKER_JVM_OPTS, *self.jvm_opts]
        argv = self._java(opts, "kafka.Kafka", str(self.workdir / "server.properties"))
        proc = spawn(argv, log_path=self.log_files[1], cwd=self.workdir)
        ready, close = _metadata_probe(address)
        try:
            why = wait_until(ready, proc=proc, deadline=deadline, interval=0.1)
        except BaseException:  # Ctrl-C while waiting: the child is not registered yet
            terminate_group(proc, 5.0)
            raise
        finally:
            close()
        if why is not None:
            terminate_group(proc, 5.0)
            raise start_error(
                f"Embedded Kafka {self.version} (PLAINTEXT {address}, controller "
                f"127.0.0.1:{self.ports[1]}) failed to start: {why}.",
                self.log_files,
            )
        self.endpoints.update(client=address, controller=f"127.0.0.1:{self.ports[1]}")
        return proc, address


def start_kafka(
    timeout: float = 90.0,
    *,
    port: int | None = None,
    overrides: Mapping[str, str] | None = None,
    version: str | None = None,
    jvm_opts: Sequence[str] = (),
    workdir_parent: Path | None = None,
) -> RunningBroker:
    """Start a single-node KRaft Kafka on free loopback ports in a fresh temp dir.

    timeout bounds format + start-up (a first-time jar download is not counted); port pins the
    client port; overrides are server.properties entries; jvm_opts are appended to the JVM's.
    """
    version = version or kafka_version()
    java = find_java()
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise BrokerStartError(
            f"Kafka {version} needs Java {MIN_JAVA}+, but {java} is Java {major}. "
            f"Install a newer one (e.g. `{JAVA_HINT}`) and put it on PATH or in JAVA_HOME."
        )
    classpath = kafka_classpath(version)
    # With $EXPRUN_KAFKA_LIBS the jars, not the requested version, say what runs.
    version = jars_version(classpath) or version
    workdir = make_workdir("kafka", workdir_parent)
    launcher = _KafkaLauncher(
        java, classpath, version, workdir, port, dict(overrides or {}), tuple(jvm_opts), timeout
    )
    return start_embedded("kafka", launcher, workdir, timeout)
