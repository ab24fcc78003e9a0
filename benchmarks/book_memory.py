"""How the load generator's memory grows with the messages of a trial: the same paced trial,
short and long, on an embedded broker; the peak RSS of the trial process (its publisher
process's own memory included) per million messages more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.exprun_side import kafka_config, nats_config, run, trial_request
from runner.execution.brokers import start_kafka, start_nats
from runner.execution.trial.parent import prestart

MESSAGE_SIZE = 256
KAFKA_PRODUCER: dict[str, str | int] = {"acks": "all", "linger.ms": 5}


@dataclass(frozen=True)
class Growth:
    """Peak RSS of a short and a long trial at one rate, and the slope between them."""

    rate: float
    short: tuple[int, float]  # (messages, peak RSS MB)
    long: tuple[int, float]

    @property
    def mb_per_million(self) -> float:
        messages = self.long[0] - self.short[0]
        return 1e6 * (self.long[1] - self.short[1]) / messages if messages else 0.0

    def details(self) -> dict[str, Any]:
        return {
            "rate_msg_s": self.rate,
            "message_size": MESSAGE_SIZE,
            "short": {"messages": self.short[0], "rss_peak_mb": self.short[1]},
            "long": {"messages": self.long[0], "rss_peak_mb": self.long[1]},
            "mb_per_million_messages": round(self.mb_per_million, 3),
        }


def measure(kind: str, rate: float, short_s: float, long_s: float) -> Growth:
    """One short and one long paced trial on a fresh embedded `kind` broker, after a warm-up."""
    start = start_nats if kind == "nats" else start_kafka
    config = nats_config() if kind == "nats" else kafka_config(KAFKA_PRODUCER)
    with start() as broker:
        prestart()
        figures = []
        for seconds in (short_s, short_s, long_s):  # the first warms the broker and clients
            request = trial_request(broker, config, None, rate=rate, duration=seconds)
            workload = request.workload.model_copy(update={"message_size": MESSAGE_SIZE})
            result = run(request.model_copy(update={"workload": workload}))
            figures.append((result.metrics.sent, result.metrics.rss_peak_mb or 0.0))
    return Growth(rate, figures[1], figures[2])
