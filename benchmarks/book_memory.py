"""How the load generator's memory grows with the messages of a trial: the same paced trial,
short and long, on an embedded broker; the peak RSS of the trial process (its publisher
process's own memory included) after its start-up, per million messages more.

The start-up is left out of both (the per-second series says when each peak was): in its first
minute a load generator's RSS climbs a few megabytes in steps, its clients' buffers and the
allocator's heaps reaching their working size, whatever the trial's length.

The JetStream stream keeps the last STREAM_MAX_MSGS messages, as a soak's broker keeps bounded
retention: a memory stream that keeps every message holds 1.5 GB by the end of the long trial,
and the broker's CPU bursts then take both cores for up to a second: stalls whose burst of
messages the load generator's peak follows. Its consumer reads in step (a loss fails the trial).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.exprun_side import TrialFailed, kafka_config, nats_config, run, trial_request
from runner.execution.brokers import start_kafka, start_nats
from runner.execution.trial.parent import prestart
from schemas.results import TimeSeries, TrialResult
from schemas.spec import NatsBroker

MESSAGE_SIZE = 256
WARM_UP_S = 10.0  # a first trial warms the broker and the clients; its figures are not used
KAFKA_PRODUCER: dict[str, str | int] = {"acks": "all", "linger.ms": 5}
STREAM_MAX_MSGS = 200_000  # 10 s of the full run's rate


@dataclass(frozen=True)
class Growth:
    """Peak RSS after the start-up of a short and a long trial at one rate, and the slope
    between them."""

    rate: float
    settle_s: float  # the start-up left out of each trial's peak
    short: tuple[int, float, float]  # (messages, peak RSS MB after settle_s, whole trial's)
    long: tuple[int, float, float]

    @property
    def mb_per_million(self) -> float:
        return self._per_million(1)

    def _per_million(self, peak: int) -> float:
        messages = self.long[0] - self.short[0]
        return 1e6 * (self.long[peak] - self.short[peak]) / messages if messages else 0.0

    def details(self) -> dict[str, Any]:
        def trial(figures: tuple[int, float, float]) -> dict[str, Any]:
            messages, settled, whole = figures
            return {"messages": messages, "rss_peak_mb": settled, "rss_peak_mb_whole": whole}

        return {
            "rate_msg_s": self.rate,
            "message_size": MESSAGE_SIZE,
            "start_up_left_out_s": self.settle_s,
            "short": trial(self.short),
            "long": trial(self.long),
            "mb_per_million_messages": round(self.mb_per_million, 3),
            "mb_per_million_messages_whole": round(self._per_million(2), 3),
        }


def settled_peak_mb(series: TimeSeries | None, settle_s: float) -> float | None:
    """The highest load-generator RSS of the windows that start `settle_s` or later."""
    if series is None or series.loadgen_rss_mb is None:
        return None
    peaks = zip(series.start_s, series.loadgen_rss_mb, strict=True)
    return max((mb for start, mb in peaks if start >= settle_s and mb is not None), default=None)


def bounded_stream(config: NatsBroker) -> NatsBroker:
    """`config` with its stream keeping only the last STREAM_MAX_MSGS messages."""
    stream = config.stream.model_copy(update={"max_msgs": STREAM_MAX_MSGS, "discard": "old"})
    return config.model_copy(update={"stream": stream})


def measure(kind: str, rate: float, settle_s: float, short_s: float, long_s: float) -> Growth:
    """One short and one long paced trial on a fresh embedded `kind` broker, after a warm-up."""
    start = start_nats if kind == "nats" else start_kafka
    config = bounded_stream(nats_config()) if kind == "nats" else kafka_config(KAFKA_PRODUCER)

    def trial(seconds: float) -> TrialResult:
        request = trial_request(broker, config, None, rate=rate, duration=seconds)
        workload = request.workload.model_copy(update={"message_size": MESSAGE_SIZE})
        return run(request.model_copy(update={"workload": workload}))

    with start() as broker:
        prestart()
        trial(min(WARM_UP_S, short_s))
        figures = []
        for seconds in (short_s, long_s):
            result = trial(seconds)
            settled = settled_peak_mb(result.series, settle_s)
            if settled is None:
                why = f"a {seconds:g} s trial has no RSS after its first {settle_s:g} s"
                raise TrialFailed(why)
            figures.append((result.metrics.sent, settled, result.metrics.rss_peak_mb or 0.0))
    return Growth(rate, settle_s, figures[0], figures[1])
