"""How much memory an embedded broker instance may take: a conservative estimate, for planning.

Figures measured with psutil and the JVM's native memory tracking on a 2-core, 24 GiB Linux
box (Kafka 4.4.0 on OpenJDK 17, nats-server 2.15.1), after 200,000 x 1 KiB messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from runner.execution.brokers.kafka import BROKER_HEAP
from runner.execution.brokers.nats_config import nested_overrides

# Beyond the heap, per Kafka JVM: metaspace, code cache, thread stacks, GC structures, buffers.
# Measured: ~170 MB committed outside a 1 GiB heap (RSS 330-590 MB, the heap far from full).
# G1's own structures grow with the heap (57 MB of the 170 at 1 GiB), hence a share of it.
KAFKA_JVM_OVERHEAD_MB = 250
KAFKA_GC_SHARE = 0.06
# Per nats-server: 15-18 MB idle with JetStream, 40-70 MB after the load above (R3 stream);
# every client may buffer up to max_pending (256 MiB) when it reads slowly, so count generously.
NATS_NODE_MB = 300

_JVM_SIZE = re.compile(r"(\d+)([kKmMgG]?)")
_NATS_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(I?B?)", re.IGNORECASE)
_MB = 1024 * 1024
_BINARY_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def jvm_size_mb(size: str) -> int:
    """A JVM size ("512m", "1G", "1048576k", bytes) in MB, rounded up."""
    match = _JVM_SIZE.fullmatch(size.strip())
    if match is None:
        raise ValueError(f"not a JVM size: {size!r}")
    number, unit = int(match.group(1)), match.group(2).upper()
    return -(-number * 1024 ** _BINARY_POWERS[unit] // _MB)


def nats_size_mb(size: Any) -> int:
    """A NATS size (bytes as a number, or "1GB", "512MB", "1G", ...) in MB, rounded up.

    Every unit is taken as binary (1 KB = 1024 B): it can only overestimate.
    """
    if isinstance(size, bool):
        raise ValueError(f"not a size: {size!r}")
    if isinstance(size, int | float):
        return -(-int(size) // _MB)
    match = _NATS_SIZE.fullmatch(str(size).strip())
    if match is None:
        raise ValueError(f"not a NATS size: {size!r}")
    number, unit = float(match.group(1)), match.group(2).upper()
    return -(-int(number * 1024 ** _BINARY_POWERS[unit]) // _MB)


def _kafka_node_mb(heap: str | None) -> int:
    max_heap = jvm_size_mb(heap if heap is not None else BROKER_HEAP[-1].removeprefix("-Xmx"))
    return max_heap + KAFKA_JVM_OVERHEAD_MB + round(KAFKA_GC_SHARE * max_heap)


def _nats_node_mb(overrides: Mapping[str, Any] | None) -> int:
    jetstream = nested_overrides(overrides or {}).get("jetstream")
    memory_store = jetstream.get("max_memory_store") if isinstance(jetstream, Mapping) else None
    # exprun's own limit (8 GiB) is a ceiling no default stream reaches, so only a spec's counts.
    return NATS_NODE_MB + (nats_size_mb(memory_store) if memory_store is not None else 0)


def estimated_memory_mb(
    kind: str, nodes: int, heap: str | None = None, overrides: Mapping[str, Any] | None = None
) -> int:
    """Memory (MB) an embedded broker of `nodes` nodes may take at most, conservatively.

    Kafka: each node's max heap (1 GiB unless heap says otherwise) plus the JVM's overhead
    (250 MB and 6% of the heap: ~310 MB at 1 GiB).
    NATS: a base per node, plus jetstream.max_memory_store when the overrides set it.
    """
    if kind == "kafka":
        return nodes * _kafka_node_mb(heap)
    if kind == "nats":
        return nodes * _nats_node_mb(overrides)
    raise ValueError(f"unknown broker kind {kind!r}")
