"""JetStream key-value trials (`pattern: kv`) on a real embedded server, and the revision
check that finds a stale or lost read (fed made-up answers: pure logic)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from test_trials import make_request, nats_config, nats_stream_exists

from runner.execution.brokers import RunningBroker
from runner.execution.drivers.nats_kv import PUT, KvClient
from runner.execution.measure.accounting import Layout
from runner.execution.measure.ledger import ProducerLedger
from runner.execution.measure.seqsets import SeqSet
from runner.execution.trial.parent import run_trial
from schemas.spec import KvSettings, PublishSettings

OPERATIONS = 4000


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("storage", ["memory", "file"])
def test_kv_operations_read_every_acked_put(nats_broker: RunningBroker, storage: str) -> None:
    config = nats_config(stream={"storage": storage, "history": 2})
    request = make_request(
        nats_broker,
        config,
        messages=OPERATIONS,
        pattern="kv",
        producers=2,
        kv={"keys": 50, "reads": "80%"},
    )
    result = run_trial(request)
    m = result.metrics
    assert result.status == "ok", result.error
    assert (m.sent, m.acked, m.received, m.lost) == (OPERATIONS, OPERATIONS, OPERATIONS, 0)
    assert (m.stale_reads, m.lost_reads, m.publish_errors) == (0, 0, {})
    gets, puts = m.kv_get_latency_ms.count, m.kv_put_latency_ms.count
    assert gets + puts == OPERATIONS and 0.75 < gets / OPERATIONS < 0.85
    assert m.latency_ms == m.publish_latency_ms and m.throughput == m.publish_throughput
    assert result.subscriptions == []
    assert not nats_stream_exists(nats_broker.address, f"KV_{request.topic}")  # the bucket


@dataclass
class Answer:
    """What nats-py hands the client's callback: the reply subject, data and headers."""

    subject: str
    data: bytes = b""
    headers: dict[str, str] | None = None


def client() -> tuple[KvClient, ProducerLedger]:
    kv = KvClient(0, PublishSettings(), "bucket", Layout(pattern="kv", kv=KvSettings()))
    kv.prefix = "_INBOX.x."
    ledger = kv.ledger = ProducerLedger(SeqSet())
    return kv, ledger


def send(kv: KvClient, ledger: ProducerLedger, seq: int, key: int, floor: int) -> None:
    ledger.on_send(seq, 1000)
    kv.inflight[seq] = (1000, 1000, 1000)
    kv.operations[seq] = (key, floor)


def test_a_get_older_than_an_acked_put_is_stale_and_a_missing_one_lost() -> None:
    kv, ledger = client()
    send(kv, ledger, 0, 7, PUT)
    asyncio.run(kv.on_reply(Answer("_INBOX.x.0", b'{"stream":"KV_bucket","seq":5}')))  # type: ignore[arg-type]
    assert kv.acked_revision == {7: 5}
    send(kv, ledger, 1, 7, kv.acked_revision[7])  # a get sent after the put was acked
    asyncio.run(kv.on_reply(Answer("_INBOX.x.1", b"v", {"Nats-Sequence": "3"})))  # type: ignore[arg-type]
    send(kv, ledger, 2, 7, 5)
    asyncio.run(kv.on_reply(Answer("_INBOX.x.2", headers={"Status": "404"})))  # type: ignore[arg-type]
    send(kv, ledger, 3, 8, 0)  # never put: nothing to find
    asyncio.run(kv.on_reply(Answer("_INBOX.x.3", headers={"Status": "404"})))  # type: ignore[arg-type]
    send(kv, ledger, 4, 7, 5)  # the newest (or a newer) revision: fine
    asyncio.run(kv.on_reply(Answer("_INBOX.x.4", b"v", {"Nats-Sequence": "6"})))  # type: ignore[arg-type]
    assert (kv.book.stale_reads, kv.book.lost_reads, kv.book.misses) == (1, 1, 1)
    assert (ledger.acked, kv.book.puts.count, kv.book.gets.count) == (5, 1, 4)


def test_a_refused_put_fails_and_an_answer_after_its_timeout_is_ignored() -> None:
    kv, ledger = client()
    send(kv, ledger, 0, 1, PUT)
    refusal = b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}'
    asyncio.run(kv.on_reply(Answer("_INBOX.x.0", refusal)))  # type: ignore[arg-type]
    assert ledger.errors == {"maximum messages exceeded": 1} and ledger.failed == 1
    send(kv, ledger, 1, 1, PUT)
    asyncio.run(kv.resend_due(1000 + kv.ack_timeout_ns))
    asyncio.run(kv.on_reply(Answer("_INBOX.x.1", b'{"stream":"KV_bucket","seq":9}')))  # type: ignore[arg-type]
    assert ledger.unknown == 1 and ledger.acked == 0 and kv.acked_revision == {}
    assert kv.operations == {} and kv.inflight == {}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_preloaded_keys_are_found_by_every_get(nats_broker: RunningBroker) -> None:
    """Gets only: without a preload every one misses (no error); with it none does, and each
    must return at least its key's preloaded revision."""
    figures = {}
    for preload in (False, True):
        kv = {"keys": 100, "reads": 1.0, "preload": preload}
        request = make_request(
            nats_broker, nats_config(), messages=1000, pattern="kv", producers=2, kv=kv
        )
        result = run_trial(request)
        m = result.metrics
        assert result.status == "ok", result.error
        assert (m.acked, m.kv_get_latency_ms.count, m.stale_reads, m.lost_reads) == (1000,) * 2 + (
            0,
            0,
        )
        figures[preload] = m.kv_misses
    assert figures == {False: 1000, True: 0}
