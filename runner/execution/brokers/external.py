"""Brokers that run elsewhere, given by address: parsed and checked for reachability."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from runner.execution.brokers.access import PLAIN, ClientAccess
from runner.execution.brokers.base import RunningBroker, tcp_open
from runner.execution.brokers.errors import BrokerStartError
from runner.execution.brokers.login import check_login, nats_info

DEFAULT_PORTS = {"nats": 4222, "kafka": 9092}
NATS_SCHEMES = ("nats", "tls")


def parse_endpoints(kind: str, address: str) -> list[tuple[str, int]]:
    """Split "h:p[,h2:p2]" (kafka) or "nats://h:p[,nats://h2:p2]" (nats) into (host, port)."""
    if kind not in DEFAULT_PORTS:
        raise BrokerStartError(f"unknown broker kind {kind!r}: expected 'kafka' or 'nats'")
    parts = [p.strip() for p in address.split(",") if p.strip()]
    if not parts:
        raise BrokerStartError(f"empty {kind} address {address!r}")
    return [_parse_one(kind, part) for part in parts]


def _parse_one(kind: str, part: str) -> tuple[str, int]:
    """One endpoint; a missing port means the broker's default port."""
    has_scheme = "://" in part
    url = urlsplit(part if has_scheme else f"//{part}")
    if has_scheme and kind == "nats" and url.scheme not in NATS_SCHEMES:
        raise BrokerStartError(f"bad NATS address {part!r}: expected nats://host:port")
    if has_scheme and kind == "kafka":
        raise BrokerStartError(f"bad Kafka address {part!r}: expected host:port (no scheme)")
    try:
        host, port = url.hostname, url.port
    except ValueError as exc:
        raise BrokerStartError(f"bad {kind} address {part!r}: {exc}") from exc
    if not host:
        raise BrokerStartError(f"bad {kind} address {part!r}: no host")
    return host, port or DEFAULT_PORTS[kind]


def _wait_reachable(host: str, port: int, deadline: float) -> str | None:
    """Retry TCP connects until one succeeds (None) or the deadline passes (the last error).

    Always tries at least once, so a slow first endpoint cannot starve the others.
    """
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=min(max(remaining, 0.5), 2.0)):
                return None
        except OSError as exc:
            last = exc.strerror or str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            return last
        time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))


def _nats_version(host: str, port: int) -> str | None:
    """The version in the INFO line a NATS server sends on connect (None if not NATS-like)."""
    version = (nats_info(host, port) or {}).get("version")
    return str(version) if version else None


def _format_address(kind: str, endpoints: list[tuple[str, int]]) -> str:
    def hostport(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    prefix = "nats://" if kind == "nats" else ""
    return ",".join(prefix + hostport(h, p) for h, p in endpoints)


def connect_external(
    kind: str, address: str, timeout: float = 5.0, access: ClientAccess | None = None
) -> RunningBroker:
    """Check that every host:port of an external broker accepts TCP within timeout; with
    `access`, that the broker also takes the clients' login (TLS and credentials)."""
    endpoints = parse_endpoints(kind, address)
    deadline = time.monotonic() + timeout
    failures = []
    for host, port in endpoints:
        why = _wait_reachable(host, port, deadline)
        if why is not None:
            failures.append(f"{host}:{port} ({why})")
    if failures:
        raise BrokerStartError(
            f"External {kind} broker {address!r} is not reachable within {timeout:g} s: "
            + ", ".join(failures)
            + ". Is it running, and is the address right?"
        )
    formatted = _format_address(kind, endpoints)
    if access is not None:
        check_login(kind, formatted, access)
    version = _nats_version(*endpoints[0]) if kind == "nats" else None
    return RunningBroker(
        kind=kind,
        address=formatted,
        version=version,
        embedded=False,
        endpoints={"client": formatted},
        access=access or PLAIN,
        _probe=lambda: any(tcp_open(h, p) for h, p in endpoints),
    )
