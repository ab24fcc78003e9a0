"""JetStream key-value (`pattern: kv`): producers put and get the keys of a per-trial bucket.

Each producer owns the keys k with k % producers == its index, so it sees every put of its
keys: a get must return at least the newest revision acked before the get was sent (else it
is a stale read), and some value once any put of the key was acked (else a lost read). A put
is a publish to $KV.<bucket>.<key>, answered by a PubAck whose seq is the revision; a get is
a direct get of the key's last message (its Nats-Sequence header is the revision, status 404:
none). As with the JetStream producers, at most `max_pending` operations are in flight, and
answers come to `<inbox>.<seq>-<send ns>`, found without a lookup table.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from runner.execution.drivers.base import PublishPlan
from runner.execution.drivers.nats_producers import InFlightWindow, Write, command_writer, pub
from runner.execution.measure.ledger import TIMEOUT, OperationBook, ProducerLedger
from runner.execution.measure.messages import NS_PER_S, now_ns
from schemas.spec import PublishSettings

HASH = 2654435761  # Knuth's multiplicative hash: which operations are gets, spread evenly
NOT_FOUND = "404"
PUT = -1  # the read floor of an operation that is a put


def key_name(key: int) -> str:
    return f"k{key}"


class KvClient:
    """One producer's puts and gets on the bucket, checked against its own acked puts."""

    def __init__(self, index: int, settings: PublishSettings, bucket: str) -> None:
        self.index = index  # of the layout's producers: it sends seq index, index + n, ...
        self.bucket = bucket
        self.window = InFlightWindow(settings.max_pending)
        self.timeout_ns = round(settings.ack_timeout * NS_PER_S)
        self.prefix = ""
        self._write: Write | None = None
        self.ledger: ProducerLedger | None = None
        self.book = OperationBook()
        # seq -> (stamp, sent ns, key, read floor: PUT, or the revision a get must reach)
        self.inflight: dict[int, tuple[int, int, int, int]] = {}
        self.acked_revision: dict[int, int] = {}  # key -> newest revision of an acked put
        self.sending = False
        self.blocked_since: int | None = None
        self.last_answer_ns = 0
        self.all_answered = asyncio.Event()

    async def listen(self, nc: NATS) -> None:
        self.prefix = f"{nc.new_inbox()}."
        self._write = command_writer(nc)
        await nc.subscribe(f"{self.prefix}*", cb=self.on_answer)

    def disconnected(self) -> None:
        pass  # what was in flight times out

    def reconnected(self) -> None:
        pass

    async def run(self, plan: PublishPlan, ledger: ProducerLedger) -> None:
        assert plan.kv is not None and self._write is not None
        self.ledger, self.sending = ledger, True
        ledger.operations = self.book
        write, window, due, until = self._write, self.window, plan.due, plan.until_ns
        producers, paced = plan.producers, plan.rate is not None
        owned = len(range(self.index, plan.kv.keys, producers))
        gets_below = round(plan.kv.reads * 2**32)
        puts_to, gets_from = f"$KV.{self.bucket}.", f"$JS.API.DIRECT.GET.KV_{self.bucket}.$KV."
        for seq in plan.seqs(self.index):
            if paced:
                _, wait = due(seq)
                if wait > 0:
                    await asyncio.sleep(wait)
            if not window.free:
                since = self.blocked_since = now_ns()
                await window.opened()
                self.blocked_since = None
                ledger.blocked_ns += now_ns() - since
            stamp = due(seq)[0] if paced else now_ns()
            if until is not None and stamp >= until:
                break
            window.free -= 1
            ledger.on_send(seq, stamp)
            key = self.index + producers * ((seq // producers) % owned)
            reply = f"{self.prefix}{seq}-{stamp}"
            if (seq * HASH) & 0xFFFFFFFF < gets_below:
                floor = self.acked_revision.get(key, 0)
                command = pub(f"{gets_from}{self.bucket}.{key_name(key)}", reply, b"")
            else:
                floor = PUT
                command = pub(f"{puts_to}{key_name(key)}", reply, plan.codec.encode(seq, stamp))
            self.inflight[seq] = (stamp, now_ns(), key, floor)
            await write(command)
        ledger.sending_done_ns = now_ns()
        self.sending = False
        self._check_done()

    async def on_answer(self, msg: Msg) -> None:
        """A PubAck or a get's message: the operation is done, and its revision checked."""
        now = self.last_answer_ns = now_ns()
        ledger = self.ledger
        seq = int(msg.subject[len(self.prefix) :].partition("-")[0])
        entry = self.inflight.pop(seq, None)
        if ledger is None or entry is None:
            return  # answered after its timeout: counted as one already
        stamp, _, key, floor = entry
        measured = stamp >= ledger.measure_from_ns
        if floor == PUT:
            revision, error = put_revision(msg.data)
            if error is not None:
                ledger.on_failed(seq, error)
                self._settled()
                return
            if revision > self.acked_revision.get(key, 0):
                self.acked_revision[key] = revision
            if measured:
                self.book.puts.record_ns(now - stamp)
        else:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status == NOT_FOUND:
                self.book.lost_reads += floor > 0
            elif status is not None:
                ledger.on_failed(seq, f"get refused: {status} {headers.get('Description', '')}")
                self._settled()
                return
            elif int(headers.get("Nats-Sequence", 0)) < floor:
                self.book.stale_reads += 1
            if measured:
                self.book.gets.record_ns(now - stamp)
        ledger.on_ack(seq, stamp, now)
        self._settled()

    def _settled(self) -> None:
        self.window.release()
        self._check_done()

    def _check_done(self) -> None:
        if not self.sending and self.ledger is not None and self.ledger.unresolved <= 0:
            self.all_answered.set()

    async def resend_due(self, now: int) -> None:
        """Nothing is resent: an operation unanswered for the ack timeout is given up."""
        inflight, ledger = self.inflight, self.ledger
        while inflight and ledger is not None:
            seq = next(iter(inflight))
            if inflight[seq][1] > now - self.timeout_ns:
                break
            del inflight[seq]
            ledger.on_unknown(TIMEOUT)
            self._settled()


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
