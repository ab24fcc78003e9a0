"""Which of a trial's clients one load-generator process runs, when a trial has several.

Producer i runs on process i mod n. Consumer c of subscription s (of `count` per subscription)
runs on process (s * count + c + 1) mod n: with one producer and one consumer on two processes,
every message is sent by one process and received by the other. A Kafka consumer group is kept
whole, on process (s + 1) mod n: its join and rebalances are timed where its members run.
"""

from __future__ import annotations

from dataclasses import dataclass


def whole_groups(config: object) -> bool:
    """Whether a broker config's subscriptions are consumer groups kept on one process."""
    return getattr(config, "commit_mode", None) is not None


@dataclass(frozen=True)
class Placement:
    """Process `process` of `processes`; the default runs every client."""

    process: int = 0
    processes: int = 1

    @property
    def shared(self) -> bool:
        return self.processes > 1

    def runs_producer(self, producer: int) -> bool:
        return producer % self.processes == self.process

    def producers(self, total: int) -> list[int]:
        return [index for index in range(total) if self.runs_producer(index)]

    def consumer_process(self, subscription: int, consumer: int, count: int, whole: bool) -> int:
        """The process of consumer `consumer` of `subscription`; `whole`: of its whole group."""
        slot = subscription if whole else subscription * count + consumer
        return (slot + 1) % self.processes

    def runs_consumer(self, subscription: int, consumer: int, count: int, whole: bool) -> bool:
        return self.consumer_process(subscription, consumer, count, whole) == self.process

    def workers(self, workers: int, subscription: int, count: int, whole: bool) -> int:
        """Handlers of the subscription's pool here: `workers` split over the processes that
        run its consumers, so the application's concurrency stays what the spec says (0: no
        consumer of it runs here)."""
        serving = sorted(
            {self.consumer_process(subscription, c, count, whole) for c in range(count)}
        )
        if self.process not in serving:
            return 0
        rank = serving.index(self.process)
        return max(1, workers // len(serving) + (1 if rank < workers % len(serving) else 0))

    def describe(self, producers: int, subscriptions: int, count: int, whole: bool) -> str:
        """What this process runs: 'producers 0, 2; consumers s0/1, s1/0' (subscription/index)."""
        mine = [str(p) for p in self.producers(producers)]
        consumers = [
            f"s{s}/{c}"
            for s in range(subscriptions)
            for c in range(count)
            if self.runs_consumer(s, c, count, whole)
        ]
        parts = [f"producers {', '.join(mine)}" if mine else "no producer"]
        parts.append(f"consumers {', '.join(consumers)}" if consumers else "no consumer")
        return "; ".join(parts)
