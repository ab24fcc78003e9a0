"""One reading of a nats-server node from its monitoring port: /varz and /jsz (pure parsing).

Stream and consumer figures are taken from the node that leads them, so that summing the nodes
of a cluster counts each once; a follower's copy of them lags and would count twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

MB = 1024 * 1024
JSZ_QUERY = "/jsz?accounts=true&streams=true&consumers=true"


def nats_reading(varz: Mapping[str, Any], jsz: Mapping[str, Any], topic: str) -> dict[str, float]:
    """The node's signals (schemas.telemetry names) for the trial whose streams are `topic`*."""
    reading: dict[str, float] = {}
    for key, name in (
        ("cpu", "cpu_pct"),
        ("in_msgs", "msgs_in"),
        ("out_msgs", "msgs_out"),
        ("in_bytes", "bytes_in"),
        ("out_bytes", "bytes_out"),
        ("slow_consumers", "slow_consumers"),
    ):
        if isinstance(varz.get(key), int | float):
            reading[name] = float(varz[key])
    if isinstance(varz.get("mem"), int | float):
        reading["memory_mb"] = varz["mem"] / MB
    me = str(varz.get("server_name") or varz.get("server_id") or "")
    streams = [s for s in _streams(jsz) if _is_trials(str(s.get("name", "")), topic)]
    if not streams:
        return reading
    leads = [_leader(s.get("cluster"), me) for s in streams]
    reading["topic_leader"] = 1.0 if leads[0] else 0.0
    led = [s for s, lead in zip(streams, leads, strict=True) if lead]
    if led:
        state = [s.get("state") or {} for s in led]
        reading["stream_messages"] = float(sum(int(st.get("messages", 0)) for st in state))
        reading["stream_bytes"] = float(sum(int(st.get("bytes", 0)) for st in state))
        lags = [
            int(replica.get("lag", 0))
            for s in led
            for replica in (s.get("cluster") or {}).get("replicas") or ()
        ]
        reading["replica_lag"] = float(max(lags, default=0))
    consumers = [
        c for s in streams for c in s.get("consumer_detail") or () if _leader(c.get("cluster"), me)
    ]
    if consumers:
        reading["consumer_pending"] = float(sum(int(c.get("num_pending", 0)) for c in consumers))
        reading["ack_pending"] = float(sum(int(c.get("num_ack_pending", 0)) for c in consumers))
        reading["redelivered"] = float(sum(int(c.get("num_redelivered", 0)) for c in consumers))
    return reading


def _streams(jsz: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for account in jsz.get("account_details") or ():
        yield from account.get("stream_detail") or ()


def _is_trials(name: str, topic: str) -> bool:
    """The trial's stream, or one of its streams (topic-0, topic-1, ... with several topics)."""
    return name == topic or (name.startswith(f"{topic}-") and name[len(topic) + 1 :].isdigit())


def _leader(cluster: Mapping[str, Any] | None, me: str) -> bool:
    """Whether this node leads the asset; a server outside any cluster leads what it holds."""
    if not cluster:
        return True
    leader = cluster.get("leader")  # none while an election runs
    return bool(leader) and str(leader) == me
