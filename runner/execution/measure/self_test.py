"""Self-test faults, for exprun's own tests only: they prove that the accounting catches them.

A real experiment never sets them (its faults, done to broker nodes, are the spec's `faults`).
Each one has an exact, predictable effect on the metrics:
- drop_every=n: the consumer discards every message whose (seq + 1) is a multiple of n, before
  accounting -> with 2000 messages and n=10: received 1800, lost 200.
- duplicate_every=n: those messages are accounted twice -> duplicated 200, received 2000.
- leak_threads=n: n threads start with the measured phase and never exit -> leaked_threads n.
- linger_threads_s=s: one thread starts when the clients are closed and exits s seconds later
  -> lingering_threads 1 (and no leak) when s is shorter than the settle time.
- abort_every=n (Kafka transactions): each producer aborts its n-th, 2n-th, ... transaction
  instead of committing it -> those messages failed, and read_committed consumers never see
  them (failed_delivered 0), transactions_aborted counts them.
"""

from __future__ import annotations

import threading
import time

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class SelfTest(BaseModel):
    """Harness self-test hooks; the defaults mean "no fault"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_every: PositiveInt | None = Field(None, description="discard every n-th message")
    duplicate_every: PositiveInt | None = Field(None, description="account every n-th twice")
    leak_threads: int = Field(0, ge=0, description="threads started that never exit")
    linger_threads_s: float = Field(0.0, ge=0, description="a thread exiting this long after close")
    subscription: int | None = Field(
        None, ge=0, description="drop/duplicate only in this subscription (default: every one)"
    )
    abort_every: PositiveInt | None = Field(
        None, description="Kafka transactions: abort each producer's every n-th transaction"
    )

    @property
    def alters_deliveries(self) -> bool:
        return self.drop_every is not None or self.duplicate_every is not None

    def drops(self, seq: int) -> bool:
        return self.drop_every is not None and (seq + 1) % self.drop_every == 0

    def duplicates(self, seq: int) -> bool:
        return self.duplicate_every is not None and (seq + 1) % self.duplicate_every == 0


_NEVER = threading.Event()  # never set: leaked threads wait on it forever


def start_leaked_threads(count: int) -> None:
    # Daemon threads, so that the trial process can still exit once it has reported.
    for index in range(count):
        threading.Thread(target=_NEVER.wait, name=f"exprun-fault-leak-{index}", daemon=True).start()


def start_lingering_thread(seconds: float) -> None:
    if seconds > 0:
        threading.Thread(
            target=time.sleep, args=(seconds,), name="exprun-fault-linger", daemon=True
        ).start()
