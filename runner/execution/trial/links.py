"""The link between a trial and a load-generator process on another host: one TCP connection.

The trial process listens; each load-generator process connects back, proves it knows the
trial's key (multiprocessing's HMAC challenge, both ways), says which share it is, and answers
clock probes: the trial measures the offset of that process's clock to its own over several
round trips and keeps the one with the shortest round trip (its error is at most half of it).
Then the link carries the same messages as a local share's pipe. Keep-alive probes make a host
that vanishes without closing the connection read as gone within seconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

CONNECT_TIMEOUT_S = 10.0
CLOCK_ROUNDS = 16
PROBE = b"clock?"
OFFSET = b"offset "  # followed by the measured offset in ns
KEEPALIVE_IDLE_S = 2
KEEPALIVE_INTERVAL_S = 1
KEEPALIVE_PROBES = 3
# Data unacknowledged this long (a host gone while we send) breaks the link too.
USER_TIMEOUT_MS = 5000


class LinkError(Exception):
    """The other side did not connect, authenticate or answer in time."""


@dataclass(frozen=True)
class ClockReading:
    """The other process's clock minus ours, and the bound on that figure's error."""

    offset_ns: int
    uncertainty_ns: int

    @classmethod
    def of(cls, sent_ns: int, theirs_ns: int, received_ns: int) -> ClockReading:
        """One round trip: their clock read between our `sent_ns` and `received_ns`."""
        return cls(theirs_ns - (sent_ns + received_ns) // 2, (received_ns - sent_ns + 1) // 2)


def best_reading(readings: Iterable[ClockReading]) -> ClockReading:
    """The reading of the round trip that took least: the one with the smallest error bound."""
    return min(readings, key=lambda reading: reading.uncertainty_ns)


@dataclass
class Hello:
    """What a load-generator process says first: which share it is."""

    share: int


def listen(host: str) -> socket.socket:
    """A listening socket on `host`, on a port of the system's choosing."""
    return socket.create_server((host, 0), backlog=64)


def accept(listener: socket.socket, authkey: bytes, timeout: float) -> tuple[Connection, Hello]:
    """The next load-generator process's link, authenticated, and what it said first."""
    listener.settimeout(timeout)
    try:
        sock, _ = listener.accept()
    except TimeoutError:
        raise LinkError(f"no load-generator process connected within {timeout:g}s") from None
    conn = _connection(sock)
    try:
        deliver_challenge(conn, authkey)
        answer_challenge(conn, authkey)
        if not conn.poll(timeout):
            raise LinkError("a load-generator process connected but said nothing")
        hello = conn.recv()
    except (OSError, EOFError) as error:
        conn.close()
        raise LinkError(f"a load-generator process failed to authenticate: {error}") from None
    if not isinstance(hello, Hello):
        conn.close()
        raise LinkError(f"a load-generator process said {hello!r} first")
    return conn, hello


def connect(address: tuple[str, int], authkey: bytes, hello: Hello) -> Connection:
    """From a load-generator process: the link to its trial, authenticated."""
    sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
    conn = _connection(sock)
    answer_challenge(conn, authkey)
    deliver_challenge(conn, authkey)
    conn.send(hello)
    return conn


def measure_clock(conn: Connection, timeout: float) -> ClockReading:
    """Probe the other side's clock; the reading of the round trip that took least."""

    def probe() -> ClockReading:
        sent = time.monotonic_ns()
        conn.send_bytes(PROBE)
        if not conn.poll(timeout):
            raise LinkError(
                f"a load-generator process did not answer a clock probe in {timeout:g}s"
            )
        theirs = int(conn.recv_bytes())
        return ClockReading.of(sent, theirs, time.monotonic_ns())

    best = best_reading(probe() for _ in range(CLOCK_ROUNDS))
    conn.send_bytes(OFFSET + str(best.offset_ns).encode())
    return best


def answer_clock(conn: Connection, clock: Callable[[], int]) -> int:
    """Answer the trial's clock probes with `clock`; returns the offset it measured."""
    while True:
        message = conn.recv_bytes()
        if message == PROBE:
            conn.send_bytes(str(clock()).encode())
            continue
        if not message.startswith(OFFSET):
            raise LinkError(f"expected the clock offset, got {message[:40]!r}")
        return int(message[len(OFFSET) :])


def _connection(sock: socket.socket) -> Connection:
    sock.setblocking(True)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
    return Connection(sock.detach())
