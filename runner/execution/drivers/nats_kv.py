"""JetStream key-value (`pattern: kv`): producers put and get the keys of a per-trial bucket.

Each producer owns the keys k with k % producers == its index, so it sees every put of its
keys: a get must return at least the newest revision acked before the get was sent (else it
is a stale read), and some value once any put of the key was acked (else a lost read). A put
is a publish to $KV.<bucket>.<key>, answered by a PubAck whose seq is the revision; a get is
a direct get of the key's last message (its Nats-Sequence header is the revision, status 404:
none). Operations go out as the JetStream producers' messages do (nats_producers.Producer:
the same window, pacing and timeouts), one try each. With `preload`, each producer puts its
keys once before the measured phase, and those puts' revisions are the first floors.
"""

from __future__ import annotations

import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from runner.execution.drivers.base import DriverError, PublishPlan
from runner.execution.drivers.nats_producers import Producer, pub
from runner.execution.measure.accounting import Layout
from runner.execution.measure.ledger import OperationBook, ProducerLedger
from runner.execution.measure.messages import now_ns
from schemas.spec import PublishSettings

HASH = 2654435761  # Knuth's multiplicative hash: which operations are gets, spread evenly
NOT_FOUND = "404"
PUT = -1  # the read floor of an operation that is a put
PRELOADED = b"exprun-preloaded"  # the value every key gets before the phase, with preload


def key_name(key: int) -> str:
    return f"k{key}"


class KvClient(Producer):
    """One producer's puts and gets on the bucket, checked against its own acked puts."""

    def __init__(self, index: int, settings: PublishSettings, bucket: str, layout: Layout) -> None:
        one_try = settings.model_copy(update={"delivery_timeout": 0.0})
        super().__init__(index, one_try, f"$KV.{bucket}", "")
        assert layout.kv is not None
        self.bucket, self.kv = bucket, layout.kv
        self.book = OperationBook()
        self.operations: dict[int, tuple[int, int]] = {}  # in flight: seq -> (key, read floor)
        self.acked_revision: dict[int, int] = {}  # key -> newest revision of an acked put
        self.producers = layout.producers
        self.owned = len(range(index, layout.kv.keys, layout.producers))
        self.gets_below = round(layout.kv.reads * 2**32)

    def key_of(self, seq: int) -> int:
        return self.index + self.producers * ((seq // self.producers) % self.owned)

    async def preload(self, nc: NATS, timeout: float) -> None:
        """Put each of its keys once (if the spec says so), before the measured phase."""
        if not self.kv.preload:
            return
        js = nc.jetstream(timeout=timeout)
        keys = range(self.index, self.kv.keys, self.producers)
        try:
            acks = [
                await js.publish_async(f"{self.subject}.{key_name(key)}", PRELOADED) for key in keys
            ]
            await js.publish_async_completed()
            for key, ack in zip(keys, acks, strict=True):
                self.acked_revision[key] = (await ack).seq
        except (TimeoutError, NatsError) as error:
            raise DriverError(f"cannot preload the KV bucket {self.bucket!r}: {error}") from None

    async def run(self, plan: PublishPlan, ledger: ProducerLedger) -> None:
        ledger.operations = self.book
        await super().run(plan, ledger)

    def command(self, seq: int, stamp: int) -> bytes:
        """A get (its floor: the newest revision acked so far) or a put of one of its keys."""
        key = self.key_of(seq)
        reply = f"{self.prefix}{seq}"
        if (seq * HASH) & 0xFFFFFFFF < self.gets_below:
            self.operations[seq] = (key, self.acked_revision.get(key, 0))
            direct = f"$JS.API.DIRECT.GET.KV_{self.bucket}.$KV.{self.bucket}.{key_name(key)}"
            return pub(direct, reply, b"")
        self.operations[seq] = (key, PUT)
        assert self.plan is not None
        return pub(f"{self.subject}.{key_name(key)}", reply, *self.plan.codec.pieces(seq, stamp))

    async def on_reply(self, msg: Msg) -> None:
        """A PubAck or a get's message: the operation is done, and its revision checked."""
        now = self.last_answer_ns = now_ns()
        ledger = self.ledger
        seq = int(msg.subject[len(self.prefix) :])
        entry = self.inflight.pop(seq, None)
        if ledger is None or entry is None:
            return  # answered after its timeout: counted as one already
        key, floor = self.operations.pop(seq)
        stamp = entry[0]
        measured = stamp >= ledger.measure_from_ns
        if floor == PUT:
            revision, error = put_revision(msg.data)
            if error is not None:
                self.give_up(seq, error)
                return
            if revision > self.acked_revision.get(key, 0):
                self.acked_revision[key] = revision
            if measured:
                self.book.puts.record_ns(now - stamp)
        else:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status == NOT_FOUND and floor > 0:
                self.book.lost_reads += 1
            elif status == NOT_FOUND:
                self.book.misses += 1
            elif status is not None:
                self.give_up(seq, f"get refused: {status} {headers.get('Description', '')}")
                return
            elif int(headers.get("Nats-Sequence", 0)) < floor:
                self.book.stale_reads += 1
            if measured:
                self.book.gets.record_ns(now - stamp)
        ledger.on_ack(seq, stamp, now)
        self.settle(seq)

    def give_up(self, seq: int, reason: str) -> None:
        self.operations.pop(seq, None)
        super().give_up(seq, reason)


def put_revision(data: bytes) -> tuple[int, str | None]:
    """(the revision a PubAck gives the put, or the reason it was refused)."""
    try:
        answer = json.loads(data)
    except ValueError:
        return 0, "unreadable JetStream answer"
    error = answer.get("error")
    if error:
        return 0, str(error.get("description") or f"error code {error.get('err_code')}")
    return int(answer["seq"]), None
