"""Wire format of a measured message: sequence number and send time, padded to the size."""

from __future__ import annotations

import struct
import time

# 8-byte sequence number + 8-byte send time (time.monotonic_ns: CLOCK_MONOTONIC is one clock for
# every process of the machine, so producers and consumers may live in different processes).
HEADER = struct.Struct("<QQ")
HEADER_SIZE = HEADER.size
NS_PER_S = 1_000_000_000

now_ns = time.monotonic_ns


class MessageCodec:
    """Builds payloads of exactly `size` bytes; reads back (seq, send_ns)."""

    def __init__(self, size: int) -> None:
        if size < HEADER_SIZE:
            raise ValueError(
                f"message_size {size} B is too small: every message carries a {HEADER_SIZE}-byte "
                "header (sequence number + send time)"
            )
        self.size = size
        self._padding = bytes(size - HEADER_SIZE)

    def encode(self, seq: int, send_ns: int) -> bytes:
        return HEADER.pack(seq, send_ns) + self._padding


def decode(payload: bytes) -> tuple[int, int]:
    """(seq, send_ns) of a payload; raises struct.error when it is shorter than the header."""
    seq, sent = HEADER.unpack_from(payload)
    return int(seq), int(sent)
