"""Wire format of a measured message: sequence number and send time, padded to the size."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

from schemas.spec import Payload, PayloadCompressibility, PayloadFile

# 8-byte sequence number + 8-byte send time (time.monotonic_ns: CLOCK_MONOTONIC is one clock for
# every process of the machine, so producers and consumers may live in different processes).
HEADER = struct.Struct("<QQ")
HEADER_SIZE = HEADER.size
NS_PER_S = 1_000_000_000

now_ns = time.monotonic_ns


def shift_clock(offset_ns: int) -> None:
    """From now on `now_ns` reads the monotonic clock plus `offset_ns`.

    A load-generator process on another host calls this first, with its measured offset to the
    coordinator, before it imports any module that takes `now_ns` from here.
    """
    global now_ns
    if not offset_ns:
        return
    monotonic_ns = time.monotonic_ns

    def shifted() -> int:
        return monotonic_ns() + offset_ns

    now_ns = shifted


# Bodies other than zeros are slices of one buffer made before the phase, at offsets that
# differ from message to message, so that no two neighbours in a batch repeat each other.
BODY_BUFFER = 4 * 1024 * 1024
_STRIDE = 7919  # a prime: offsets (seq * stride) mod span visit the buffer evenly
_BLOCK = 256  # compressible bodies: each block random for its first share, zeros after


class MessageCodec:
    """Builds payloads of exactly `size` bytes; reads back (seq, send_ns).

    `payload` is the spec's: "zeros" (today's bodies, which compress to nothing), "random"
    (which do not compress), a PayloadCompressibility or a PayloadFile.
    """

    def __init__(self, size: int, payload: Payload = "zeros") -> None:
        if size < HEADER_SIZE:
            raise ValueError(
                f"message_size {size} B is too small: every message carries a {HEADER_SIZE}-byte "
                "header (sequence number + send time)"
            )
        self.size = size
        body = size - HEADER_SIZE
        self._padding = bytes(body)
        self._data = _body_buffer(body, payload) if payload != "zeros" else None
        self._span = len(self._data) - body + 1 if self._data is not None else 1
        self._buffer = memoryview(self._data) if self._data is not None else None

    def __getstate__(self) -> dict[str, object]:
        # Sent to the NATS publisher process: a memoryview does not pickle, its bytes do.
        return {k: v for k, v in self.__dict__.items() if k != "_buffer"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._buffer = memoryview(self._data) if self._data is not None else None

    def encode(self, seq: int, send_ns: int) -> bytes:
        buffer = self._buffer
        if buffer is None:
            return HEADER.pack(seq, send_ns) + self._padding
        start = seq * _STRIDE % self._span
        return HEADER.pack(seq, send_ns) + buffer[start : start + self.size - HEADER_SIZE]

    def pieces(self, seq: int, send_ns: int) -> tuple[bytes, bytes | memoryview]:
        """encode()'s bytes as (header, body), for a caller that copies them into a command
        anyway: the body is not copied twice."""
        buffer = self._buffer
        if buffer is None:
            return HEADER.pack(seq, send_ns), self._padding
        start = seq * _STRIDE % self._span
        return HEADER.pack(seq, send_ns), buffer[start : start + self.size - HEADER_SIZE]


def _body_buffer(body: int, payload: Payload) -> bytes:
    """The bytes bodies are sliced from: random, partly random, or a file's."""
    if isinstance(payload, PayloadFile):
        return Path(payload.file).read_bytes()
    length = max(BODY_BUFFER, 4 * body)
    if payload == "random":
        return os.urandom(length)
    assert isinstance(payload, PayloadCompressibility)
    random_part = round(_BLOCK * (1 - payload.compressibility))
    block = bytearray(length)
    noise = os.urandom(length)
    for start in range(0, length, _BLOCK):
        block[start : start + random_part] = noise[start : start + random_part]
    return bytes(block)


class KeyPlan:
    """The key of each message, from the spec's `keys`: none, round_robin, random, or N keys.

    Keys are derived from the sequence number (a 64-bit mix for random ones), so producers in
    any process agree, and nothing is drawn per message.
    """

    def __init__(self, keys: str | int) -> None:
        self.kind = keys

    def key(self, seq: int) -> bytes | None:
        kind = self.kind
        if kind == "none":
            return None
        if kind == "round_robin":
            return str(seq).encode()
        mixed = _mix(seq)
        return str(mixed if kind == "random" else mixed % int(kind)).encode()

    def partition(self, seq: int, partitions: int) -> int | None:
        """round_robin places messages itself (a hash of keys would not go round); else None."""
        return seq % partitions if self.kind == "round_robin" else None


def _mix(value: int) -> int:
    """splitmix64's finaliser: neighbouring sequence numbers get unrelated keys."""
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 31)


def decode(payload: bytes) -> tuple[int, int]:
    """(seq, send_ns) of a payload; raises struct.error when it is shorter than the header."""
    seq, sent = HEADER.unpack_from(payload)
    return int(seq), int(sent)
