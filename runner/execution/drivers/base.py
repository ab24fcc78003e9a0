"""The driver interface: what exprun needs from a broker's client library for one trial.

A driver is looked up by broker type in the entry-point group `exprun.drivers` (see
runner.execution.drivers.load_driver), so a plugin package can add a broker without touching exprun.
One driver instance serves one trial, inside the trial's own process, on its event loop.
"""

from __future__ import annotations

import itertools
import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from runner.execution.brokers.access import PLAIN, ClientAccess
from runner.execution.drivers.placement import Placement, whole_groups
from runner.execution.measure.accounting import Layout
from runner.execution.measure.latency import LatencyRecorder
from runner.execution.measure.ledger import ProducerLedger
from runner.execution.measure.messages import NS_PER_S, KeyPlan, MessageCodec, now_ns
from runner.execution.measure.series import Schedule
from schemas.results import PublishPolicy

REACH_TIMEOUT_S = 2.0


class DriverError(Exception):
    """A broker operation failed (unreachable, refused, timed out); str() is one line."""


class PublishStalled(DriverError):
    """Publishing could not go on: no broker answer for the whole drain timeout."""


class MessageSink(Protocol):
    """Where one subscription's consumers put what they receive (its handler pool)."""

    @property
    def topic(self) -> int: ...

    @property
    def subscription(self) -> int: ...

    async def deliver(
        self,
        payload: bytes,
        ack: Callable[[], Awaitable[None]] | None = None,
        redelivered: bool = False,
        reply: Callable[[], Awaitable[None]] | None = None,
    ) -> None: ...

    async def deliver_many(self, payloads: Sequence[bytes]) -> None: ...

    @property
    def immediate(self) -> bool: ...

    def deliver_now(self, payload: bytes) -> None: ...


@dataclass
class ConsumerFigures:
    """What a driver measured of its consumers besides the messages themselves."""

    ready_s: float | None = None  # started until every partition was assigned
    rebalances: int | None = None  # during the measured phase (consumer groups)
    commit_latency: list[LatencyRecorder] = field(default_factory=list)


@dataclass
class ProducerFigures:
    """What a driver measured of its producers besides the messages (their transactions)."""

    transaction_commit: list[LatencyRecorder] = field(default_factory=list)
    transactions_aborted: int | None = None  # None: the producers write no transactions


@dataclass(frozen=True)
class PublishPlan:
    """Who sends which sequence numbers, when, and with what payload.

    Either a number of messages, or (unpaced, for a duration) as many as fit before
    `until_ns`: a producer stops at its first message stamped at or after it.
    """

    messages: int | None
    producers: int  # over all topics
    rate: float | None  # msg/s over all producers; None = as fast as acks allow
    codec: MessageCodec
    schedule: Schedule  # the phase's start, its ramp, and the ticks of its time series
    until_ns: int | None = None
    layout: Layout = field(default_factory=Layout)  # which topic each producer publishes to
    keys: KeyPlan = field(default_factory=lambda: KeyPlan("none"))
    acks_over_time: bool = False  # ledgers keep an AckTimeline (trials with faults)
    request_timeout_s: float | None = None  # pattern request_reply: unanswered this long
    abort_every: int | None = None  # self-test: abort every n-th transaction of each producer

    @property
    def start_ns(self) -> int:
        return self.schedule.start_ns

    def seqs(self, producer: int) -> Iterable[int]:
        # Interleaved, so that paced producers share the rate evenly at every moment.
        if self.messages is None:
            return itertools.count(producer, self.producers)
        return range(producer, self.messages, self.producers)

    def due(self, seq: int) -> tuple[int, float]:
        """(send stamp in ns, seconds to wait before sending) for message `seq`.

        Paced messages are stamped with their intended send time, not the actual one: a stall
        in the client or broker then shows up in latency instead of being hidden
        (coordinated omission).
        """
        if self.rate is None:
            return now_ns(), 0.0
        due = self.schedule.start_ns + round(seq * NS_PER_S / self.rate)
        return due, max(0.0, (due - now_ns()) / NS_PER_S)

    def over(self, stamp: int) -> bool:
        """Whether a message stamped `stamp` falls after the end of a timed phase."""
        return self.until_ns is not None and stamp >= self.until_ns


class Driver(ABC):
    """One broker type's clients for one trial: destination, producers, consumers."""

    def __init__(
        self,
        address: str,
        config: Any,
        destination: str,
        setup_timeout: float,
        layout: Layout | None = None,
        *,
        faults: bool = False,
        placement: Placement | None = None,
        access: ClientAccess = PLAIN,
    ) -> None:
        self.address = address
        self.config = config
        self.access = access  # TLS files and login of every client it makes
        # The run kills or pauses broker nodes during this trial: a lost connection is part of
        # the experiment, so clients reconnect (to another node) instead of failing the trial.
        self.faults = faults
        self.destination = destination  # the trial's unique name: its topics are named after it
        self.setup_timeout = setup_timeout
        self.layout = layout or Layout()
        # Which of the layout's producers and consumers run in this process (trials spread
        # over several load-generator processes); by default all of them.
        self.placement = placement or Placement()
        # One topic / stream (and subject) per topic of the trial.
        self.destinations = (
            [destination]
            if self.layout.topics == 1
            else [f"{destination}-{t}" for t in range(self.layout.topics)]
        )
        # A fatal client-side event seen during the trial (e.g. the connection was lost).
        self.problem: str | None = None
        self.consumer_figures = ConsumerFigures()
        self.producer_figures = ProducerFigures()
        self.phase_started_ns: int | None = None

    def placed(self, placement: Placement) -> Driver:
        """A fresh driver like this one, for the clients `placement` gives a load generator."""
        return type(self)(
            self.address,
            self.config,
            self.destination,
            self.setup_timeout,
            self.layout,
            faults=self.faults,
            placement=placement,
            access=self.access,
        )

    @property
    def whole_groups(self) -> bool:
        """True when a subscription's consumers form a group that must run in one process."""
        return whole_groups(self.config)

    def runs_consumer(self, subscription: int, consumer: int, count: int) -> bool:
        """Whether consumer `consumer` (of `count`) of `subscription` runs in this process."""
        return self.placement.runs_consumer(subscription, consumer, count, self.whole_groups)

    def helper_pids(self) -> Sequence[int]:
        """Processes this driver runs for the trial now: their threads and memory are its."""
        return ()

    def publish_policy(self) -> PublishPolicy | None:
        """What the producers do when a publish fails (None: the driver does not say)."""
        return None

    @property
    def counts_retries(self) -> bool:
        """True when the producers' retries are exprun's own, so their ledgers count them."""
        return False

    @property
    def at_most_once(self) -> bool:
        """True when the broker keeps nothing: a message not delivered soon never will be."""
        return False

    @abstractmethod
    async def create_destination(self) -> None:
        """Create the topic / stream with the declared settings; ready to use on return."""

    @abstractmethod
    async def delete_destination(self) -> None:
        """Delete the topic / stream (called after every client is closed)."""

    @abstractmethod
    async def start_consumers(
        self, sinks: Sequence[MessageSink], count: int, *, held: bool = False
    ) -> None:
        """Start the consumers placed here of `count` per subscription (one sink each, on its
        topic), reading from the beginning; returns once they are ready to receive. `held`
        consumers are ready but read nothing until release_consumers()."""

    @abstractmethod
    async def release_consumers(self) -> None:
        """Let held consumers start reading, from the destination's beginning."""

    async def stored_messages(self) -> int | None:
        """Messages the broker holds now, when the driver cannot count its own acks (its
        producers run elsewhere); None means: count the trial's acks."""
        return None

    @property
    def start_lead_ns(self) -> int:
        """How far after "now" the measured phase starts: load-generator processes elsewhere
        need the time to hear of it, so that every one of them begins at the same instant."""
        return 0

    @property
    def marks_producers(self) -> bool:
        """True when the producers' books are marked where they run (another process)."""
        return False

    @abstractmethod
    async def connect_producers(self) -> None:
        """Create and connect the layout's producers placed here (out of the measured phase)."""

    def phase_started(self) -> None:
        """The measured phase begins (a rebalance from now on counts against it)."""
        self.phase_started_ns = now_ns()

    @abstractmethod
    async def publish(
        self, plan: PublishPlan, ledgers: Sequence[ProducerLedger], resolve_timeout: float
    ) -> None:
        """Send every message of the producers placed here, producer i accounting in
        ledgers[i]; returns once each sent message is acked or failed, closing the ledgers after
        `resolve_timeout` without a broker answer. Raises PublishStalled if sending itself
        cannot progress."""

    @abstractmethod
    async def close(self) -> None:
        """Stop the consumers and close every client; their threads are gone on return (unless
        the client library lets them linger, which is what the trial measures)."""


def check_reachable(broker: str, servers: Iterable[str]) -> None:
    """Fail in milliseconds, not after a client's connect retries, when no server listens.

    `servers` are "host:port" or "scheme://host:port"; one that accepts TCP is enough.
    """
    reasons = []
    for server in servers:
        text = server.strip()
        parts = urlsplit(text if "://" in text else f"tcp://{text}")
        try:
            host, port = parts.hostname, parts.port
            if host is None or port is None:
                raise ValueError("not host:port")
            with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
                return
        except (OSError, ValueError) as error:
            reasons.append(f"{text}: {getattr(error, 'strerror', None) or error}")
    raise DriverError(f"cannot reach {broker} at {'; '.join(reasons)}")
