"""A nats-server node's monitoring answers as a reading (pure)."""

from __future__ import annotations

from typing import Any

from runner.execution.telemetry.nats_reading import nats_reading

VARZ = {
    "server_name": "n2",
    "cpu": 37.5,
    "mem": 64 * 1024 * 1024,
    "in_msgs": 1000,
    "out_msgs": 900,
    "in_bytes": 256000,
    "out_bytes": 230400,
    "slow_consumers": 1,
}


def _stream(name: str, leader: str | None, consumer_leader: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "cluster": {
            "leader": leader,
            "replicas": [{"name": "n1", "lag": 7, "current": False}, {"name": "n3", "lag": 0}],
        },
        "state": {"messages": 500, "bytes": 128000},
        "consumer_detail": [
            {
                "name": "c1",
                "num_pending": 40,
                "num_ack_pending": 12,
                "num_redelivered": 3,
                "cluster": {"leader": consumer_leader},
            }
        ],
    }


def _jsz(*streams: dict[str, Any]) -> dict[str, Any]:
    return {"account_details": [{"name": "$G", "stream_detail": list(streams)}]}


def test_the_leader_reports_its_streams_and_consumers_once() -> None:
    jsz = _jsz(_stream("trial", "n2", "n2"), _stream("other-run", "n2", "n2"))
    assert nats_reading(VARZ, jsz, "trial") == {
        "cpu_pct": 37.5,
        "memory_mb": 64.0,
        "msgs_in": 1000.0,
        "msgs_out": 900.0,
        "bytes_in": 256000.0,
        "bytes_out": 230400.0,
        "slow_consumers": 1.0,
        "topic_leader": 1.0,
        "stream_messages": 500.0,
        "stream_bytes": 128000.0,
        "replica_lag": 7.0,
        "consumer_pending": 40.0,
        "ack_pending": 12.0,
        "redelivered": 3.0,
    }


def test_a_follower_says_it_does_not_lead_and_counts_nothing_twice() -> None:
    reading = nats_reading(VARZ, _jsz(_stream("trial", "n1", "n1")), "trial")
    assert reading["topic_leader"] == 0.0
    assert "stream_messages" not in reading and "consumer_pending" not in reading


def test_during_an_election_nobody_leads_and_several_topics_sum() -> None:
    electing = nats_reading(VARZ, _jsz(_stream("trial", None, None)), "trial")
    assert electing["topic_leader"] == 0.0
    several = _jsz(_stream("trial-0", "n2", "n2"), _stream("trial-1", "n2", "n2"))
    reading = nats_reading(VARZ, several, "trial")
    assert reading["stream_messages"] == 1000.0 and reading["consumer_pending"] == 80.0


def test_a_single_server_outside_a_cluster_leads_what_it_holds() -> None:
    stream = {"name": "trial", "state": {"messages": 5, "bytes": 10}, "consumer_detail": []}
    reading = nats_reading({"cpu": 1.0}, _jsz(stream), "trial")
    assert reading["topic_leader"] == 1.0 and reading["stream_messages"] == 5.0
    assert nats_reading({}, {}, "trial") == {}
