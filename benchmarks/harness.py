"""Does exprun measure the broker, not itself? exprun against the brokers' native tools.

    python -m benchmarks.harness [--quick] [--out FILE.json] [--profile]

One run, on embedded brokers (one at a time): the sides of every comparison are interleaved
(A B A B ...) and repeated, each side summarised by its median; ratios are exprun / reference.
Prints a table and writes JSON with the machine it ran on. Where a goal is missed, the exprun
trial behind it is profiled with py-spy and its busiest code is named.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import (
    book_memory,
    exprun_side,
    history_store,
    machine,
    native,
    security_cost,
    telemetry_cost,
)
from benchmarks.catalogue import KEYS, new_comparison
from benchmarks.exprun_side import (
    MAX_PENDING,
    MESSAGE_SIZE,
    TrialFailed,
    kafka_config,
    nats_config,
    trial_request,
)
from benchmarks.matrix import BUDGET_S, CAPACITY_BUDGET_S, CAPACITY_SPEC, run_matrix
from benchmarks.profile import profile_trial
from benchmarks.report import Comparison, table, write_document
from runner.execution.brokers import (
    BrokerStartError,
    RunningBroker,
    kafka_classpath,
    start_kafka,
    start_nats,
)
from runner.execution.drivers.nats import PUBLISHER_ENV
from runner.execution.load_hosts import LoadHosts
from runner.execution.measure.series import SERIES_ENV
from runner.execution.trial.parent import prestart
from runner.execution.trial.request import TrialRequest
from schemas.results import TrialResult
from schemas.spec import KafkaBroker, NatsBroker, NatsConsumer

T = TypeVar("T")

NATS_READY_BUDGET_S = 1.0
KAFKA_READY_BUDGET_S = 15.0
NATS_CLUSTER_BUDGET_S = 5.0
KAFKA_CLUSTER_BUDGET_S = 30.0
CLUSTER_NODES = 3
FIXED_COST_BUDGET_S = 1.0
HISTORY_RECORD_BUDGET_S = 1.0
HISTORY_QUERY_BUDGET_S = 0.5
HISTORY_CHANGES_BUDGET_S = 10.0
HISTORY_PAGE_BUDGET_S = 5.0
HISTORY_PAGE_BUDGET_MB = 10.0
MEMORY_BUDGET_MB = 0.5  # load-generator RSS growth per million messages
# Kafka producer settings both sides share: acks and linger.ms as in worker_pool_256.yaml,
# batch.size librdkafka's default (Java's own default is 16 KiB).
KAFKA_PRODUCER: dict[str, str | int] = {"acks": "all", "linger.ms": 5, "batch.size": 1_000_000}
# EndToEndLatency's own client settings (linger.ms=0, fetch.max.wait.ms=0), for exprun's side.
LATENCY_PRODUCER: dict[str, str | int] = {"acks": "all", "linger.ms": 0}
LATENCY_CONSUMER: dict[str, str | int] = {"fetch.wait.max.ms": 0}
NATS_BENCH_BATCH = 500  # nats bench's default async batch
CONSUMER_BATCH = 100  # pull batch of the consumer-path rows, on both sides
NATS_PUBLISH = (
    "nats_publish_vs_nats_py",
    "nats_publish_vs_nats_py_window",
    "nats_publish_vs_nats_bench",
    "nats_end_to_end_vs_publish",
)
NATS_PATTERNS = (
    "nats_request_reply_vs_nats_py",
    "nats_request_reply_vs_nats_bench",
    "nats_kv_vs_nats_py",
    "nats_kv_put_vs_nats_bench",
    "nats_kv_get_vs_nats_bench",
)
NATS_CORE = (
    "nats_core_end_to_end_vs_nats_py",
    "nats_core_publish_vs_nats_bench",
    "nats_core_end_to_end_vs_nats_bench",
)
TRANSACTION_MS = 100  # both sides of the transactional row commit this often
KAFKA_PUBLISH = (
    "kafka_publish",
    "kafka_end_to_end_vs_publish",
    "kafka_end_to_end_vs_confluent_kafka",
)
KAFKA_LATENCY = ("kafka_latency_p50", "kafka_latency_p99", "kafka_latency_mean")
MEASURED = (TrialFailed, native.ToolError, BrokerStartError)


@dataclass(frozen=True)
class Settings:
    repetitions: int
    nats_messages: int
    kafka_messages: int
    kafka_tool_warmup: int  # ProducerPerformance --warmup-records: records before its figure
    latency_messages: int
    latency_rate: float  # msg/s of exprun's paced latency trial
    warmup: bool  # one unrecorded round of every side first (JIT, page cache, connections)
    install_natscli: bool
    profile: str  # "missed" (goals missed), "always" or "never"
    matrix_args: tuple[str, ...]
    wait_s: float  # for another Kafka broker on the machine to end
    download_jars: bool  # may resolve the Kafka jars with Maven (minutes on a fresh machine)
    rate_seconds: float  # length of the paced trial behind the rate accuracy
    capacity: bool  # run experiments/capacity.yaml (minutes)
    kafka_cluster: bool  # start a 3-node Kafka cluster (~3 GB, half a minute)
    history_runs: int  # runs in the results store read back (x 100 cells x 20 metrics)
    # rate, seconds of start-up left out of each trial's peak, short and long trial seconds
    memory_trials: tuple[float, float, float, float]
    telemetry_rounds: int  # rounds of one trial read and one not, per broker
    telemetry_seconds: float  # each of those trials, unpaced
    security_rounds: int  # rounds of one trial per side (plaintext, secured ones), per broker
    security_seconds: float  # each of those trials, unpaced
    pattern_messages: int  # requests and key operations, one in flight, per side and round


FULL = Settings(
    repetitions=5,
    nats_messages=100_000,
    kafka_messages=200_000,
    kafka_tool_warmup=200_000,
    latency_messages=1_000,
    latency_rate=200.0,
    warmup=True,
    install_natscli=True,
    profile="missed",
    matrix_args=(),
    wait_s=900.0,
    download_jars=True,
    rate_seconds=20.0,
    capacity=True,
    kafka_cluster=True,
    history_runs=10_000,
    memory_trials=(20_000.0, 60.0, 120.0, 300.0),
    telemetry_rounds=10,
    telemetry_seconds=5.0,
    security_rounds=6,
    security_seconds=5.0,
    pattern_messages=5_000,
)
QUICK = Settings(
    repetitions=1,
    nats_messages=5_000,
    kafka_messages=10_000,
    kafka_tool_warmup=5_000,
    latency_messages=100,
    latency_rate=200.0,
    warmup=False,
    install_natscli=False,
    profile="never",
    matrix_args=("--scenario", "Low", "--repetitions", "1"),
    wait_s=0.0,
    download_jars=False,
    rate_seconds=2.0,
    capacity=False,
    kafka_cluster=False,
    history_runs=200,
    memory_trials=(5_000.0, 0.0, 1.0, 2.0),
    telemetry_rounds=1,
    telemetry_seconds=1.0,
    security_rounds=1,
    security_seconds=1.0,
    pattern_messages=200,
)


class Bench:
    """The comparisons of one harness run, and the exprun trials behind them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.comparisons = {key: new_comparison(key) for key in KEYS}
        self.ready: dict[str, list[float]] = {"nats": [], "kafka": []}
        self._targets: dict[str, tuple[TrialRequest, dict[str, str]]] = {}
        self._profiles: dict[str, dict[str, Any]] = {}  # by trial configuration
        self.kafka_skipped = False

    def __getitem__(self, key: str) -> Comparison:
        return self.comparisons[key]

    def sample(self, keys: tuple[str, ...], side: str, measure: Callable[[], T]) -> T | None:
        """Measure one side once; on failure, every comparison that needed it says why."""
        try:
            return measure()
        except MEASURED as error:
            for key in keys:
                self[key].fail(f"{side}: {error}")
            return None

    def add(
        self, key: str, round_: int, exprun: float | None = None, reference: float | None = None
    ) -> None:
        """Record one round's figures; round -1 is the warm-up, never recorded."""
        if round_ < 0:
            return
        if exprun is not None:
            self[key].exprun_samples.append(exprun)
        if reference is not None:
            self[key].reference_samples.append(reference)

    def rounds(self) -> range:
        return range(-1 if self.settings.warmup else 0, self.settings.repetitions)

    # --- NATS ----------------------------------------------------------------------------

    def nats(self) -> None:
        natscli, how = native.find_natscli(install=self.settings.install_natscli)
        self["nats_publish_vs_nats_bench"].details["natscli"] = how
        if natscli is None:
            self["nats_publish_vs_nats_bench"].fail(how)
        keys = (
            *NATS_PUBLISH,
            "nats_end_to_end_vs_nats_py",
            "nats_publisher_process_vs_loop",
            "nats_message_ids_vs_plain",
            "nats_series_overhead",
            "nats_rate_accuracy",
            "nats_pull_explicit_vs_ordered",
            "nats_consume_vs_nats_bench",
            *NATS_CORE,
            *NATS_PATTERNS,
        )
        try:
            with self._broker(start_nats, "nats") as broker:
                request = trial_request(broker, nats_config(), self.settings.nats_messages)
                self._targets.update(dict.fromkeys(keys, (request, {})))
                one_try = _one_try(request)
                self._targets["nats_end_to_end_vs_nats_py"] = (one_try, {})
                core = trial_request(broker, nats_config(core=True), self.settings.nats_messages)
                self._targets.update(dict.fromkeys(NATS_CORE, (core, {})))
                patterns = self._pattern_requests(broker)
                self._targets[NATS_PATTERNS[0]] = (patterns["request_reply"], {})
                self._targets[NATS_PATTERNS[2]] = (patterns["kv"], {})
                for round_ in self.rounds():
                    self._nats_round(broker, request, one_try, natscli, round_)
                    self._series_ab(request, "nats_series_overhead", round_)
                    self._nats_consumers(broker, natscli, round_)
                    self._nats_core(broker, core, natscli, round_)
                    self._nats_patterns(broker, patterns, natscli, round_)
                self._rate_accuracy(
                    broker, nats_config(), "nats_rate_accuracy", "nats_publish_vs_nats_py"
                )
                self.profile(keys)
        except BrokerStartError as error:
            for key in keys:
                self[key].fail(f"embedded NATS: {error}")

    def _nats_round(
        self,
        broker: RunningBroker,
        request: TrialRequest,
        one_try: TrialRequest,
        natscli: Path | None,
        round_: int,
    ) -> None:
        messages = self.settings.nats_messages
        result = self.sample(NATS_PUBLISH, "exprun", partial(exprun_side.run, request))
        if result is not None:
            for key in NATS_PUBLISH[:3]:
                self.add(key, round_, exprun=_publish(result))
            self._end_to_end(result, "nats_end_to_end_vs_publish", round_)
        for mode, key in (("async", NATS_PUBLISH[0]), ("window", NATS_PUBLISH[1])):
            loop = partial(
                native.bare_nats, broker.address, messages, MESSAGE_SIZE, MAX_PENDING, mode
            )
            rates = self.sample((key,), f"nats-py {mode} loop", loop)
            self.add(key, round_, reference=rates[0] if rates else None)
        pubsub = partial(
            native.bare_nats, broker.address, messages, MESSAGE_SIZE, MAX_PENDING, "window", True
        )
        rates = self.sample(("nats_end_to_end_vs_nats_py",), "nats-py pub+sub", pubsub)
        self.add("nats_end_to_end_vs_nats_py", round_, reference=rates[1] if rates else None)
        if natscli is not None:
            stream = f"bench-{uuid.uuid4().hex[:10]}"
            bench = partial(
                native.nats_bench_publish,
                natscli,
                broker.address,
                stream,
                messages,
                MESSAGE_SIZE,
                NATS_BENCH_BATCH,
            )
            rate = self.sample((NATS_PUBLISH[2],), "nats bench", bench)
            _delete_stream(broker.address, stream)
            self.add(NATS_PUBLISH[2], round_, reference=rate)
        self._publisher_ab(request, round_)
        self._message_ids_ab(request, one_try, round_)

    def _publisher_ab(self, request: TrialRequest, round_: int) -> None:
        """The NATS driver's forked publisher against producers on the trial's own loop."""
        key = "nats_publisher_process_vs_loop"
        for mode in ("process", "loop"):
            probe = partial(exprun_side.run_probe, request, {PUBLISHER_ENV: mode})
            result = self.sample((key,), f"exprun ({PUBLISHER_ENV}={mode})", probe)
            if result is None:
                continue
            e2e = result.metrics.throughput or 0.0
            if mode == "process":
                self.add(key, round_, exprun=e2e)
            else:
                self.add(key, round_, reference=e2e)
            if round_ >= 0:
                publish = self[key].details.setdefault(f"{mode}_publish_throughput", [])
                publish.append(_publish(result))

    def _message_ids_ab(self, request: TrialRequest, one_try: TrialRequest, round_: int) -> None:
        """The JetStream producers' default (ids, retries) against one try without ids; the
        latter's end to end is also the one set against the bare loop, which sends no ids."""
        key, bare_key = "nats_message_ids_vs_plain", "nats_end_to_end_vs_nats_py"
        for tag, trial in (("retrying", request), ("one_try", one_try)):
            keys = (key,) if trial is request else (key, bare_key)
            result = self.sample(keys, f"exprun {tag}", partial(exprun_side.run, trial))
            if result is None:
                continue
            if trial is request:
                self.add(key, round_, exprun=_publish(result))
            else:
                self.add(key, round_, reference=_publish(result))
                self.add(bare_key, round_, exprun=result.metrics.throughput)
            if round_ >= 0:
                details = self[key].details
                details.setdefault(f"{tag}_end_to_end", []).append(result.metrics.throughput)
                details.setdefault(f"{tag}_broker_us_per_msg", []).append(_broker_us(result))

    def _nats_core(
        self, broker: RunningBroker, request: TrialRequest, natscli: Path | None, round_: int
    ) -> None:
        """Core NATS (`jetstream: false`): exprun against the bare nats-py loop and nats bench."""
        bare_key, publish_key, e2e_key = NATS_CORE
        result = self.sample(NATS_CORE, "exprun core", partial(exprun_side.run, request))
        if result is not None:
            self.add(bare_key, round_, exprun=result.metrics.throughput)
            self.add(publish_key, round_, exprun=_publish(result))
            self.add(e2e_key, round_, exprun=result.metrics.throughput)
        messages = self.settings.nats_messages
        loop = partial(native.bare_nats_core, broker.address, messages, MESSAGE_SIZE)
        rates = self.sample((bare_key,), "nats-py core pub+sub", loop)
        self.add(bare_key, round_, reference=rates[1] if rates else None)
        if natscli is None:
            for key in (publish_key, e2e_key):
                self[key].fail("natscli unavailable (see nats_publish_vs_nats_bench)")
            return
        subject = f"bench-core-{uuid.uuid4().hex[:10]}"
        bench = partial(
            native.nats_bench_core, natscli, broker.address, subject, messages, MESSAGE_SIZE
        )
        rates = self.sample((publish_key, e2e_key), "nats bench pub + sub", bench)
        self.add(publish_key, round_, reference=rates[0] if rates else None)
        self.add(e2e_key, round_, reference=rates[1] if rates else None)

    def _pattern_requests(self, broker: RunningBroker) -> dict[str, TrialRequest]:
        """One request or operation in flight, as the native tools and the bare loops do."""
        config, messages = nats_config(in_flight=1), self.settings.pattern_messages
        return {
            "request_reply": trial_request(
                broker, config, messages, pattern={"pattern": "request_reply"}
            ),
            "kv": trial_request(
                broker, config, messages, pattern={"pattern": "kv", "kv": {"reads": 0.5}}
            ),
            "kv_puts": trial_request(
                broker, config, messages, pattern={"pattern": "kv", "kv": {"reads": 0.0}}
            ),
            "kv_gets": trial_request(
                broker,
                config,
                messages,
                pattern={"pattern": "kv", "kv": {"reads": 1.0, "keys": messages, "preload": True}},
            ),
        }

    def _nats_patterns(
        self,
        broker: RunningBroker,
        requests: dict[str, TrialRequest],
        natscli: Path | None,
        round_: int,
    ) -> None:
        """Request-reply and key-value: exprun against nats-py's own loops and natscli."""
        rr_bare, rr_bench, kv_bare, kv_bench, kv_get_bench = NATS_PATTERNS
        messages = self.settings.pattern_messages
        for pattern, keys in (("request_reply", (rr_bare, rr_bench)), ("kv", (kv_bare,))):
            run = partial(exprun_side.run, requests[pattern])
            result = self.sample(keys, f"exprun {pattern}", run)
            for key in keys:
                self.add(key, round_, exprun=result.metrics.throughput if result else None)
            loop = partial(
                native.bare_nats_pattern, broker.address, pattern, messages, MESSAGE_SIZE
            )
            self.add(keys[0], round_, reference=self.sample(keys[:1], f"nats-py {pattern}", loop))
        for key, side in ((kv_bench, "kv_puts"), (kv_get_bench, "kv_gets")):
            result = self.sample((key,), f"exprun {side}", partial(exprun_side.run, requests[side]))
            self.add(key, round_, exprun=result.metrics.throughput if result else None)
        if natscli is None:
            for key in (rr_bench, kv_bench, kv_get_bench):
                self[key].fail("natscli unavailable (see nats_publish_vs_nats_bench)")
            return
        name = uuid.uuid4().hex[:10]
        service = partial(
            native.nats_bench_service,
            natscli,
            broker.address,
            f"bench-svc-{name}",
            messages,
            MESSAGE_SIZE,
        )
        self.add(
            rr_bench, round_, reference=self.sample((rr_bench,), "nats bench service", service)
        )
        bucket = f"bench-kv-{name}"
        put = partial(
            native.nats_bench_kv_put, natscli, broker.address, bucket, messages, MESSAGE_SIZE
        )
        self.add(kv_bench, round_, reference=self.sample((kv_bench,), "nats bench kv put", put))
        get = partial(
            native.nats_bench_kv_get, natscli, broker.address, bucket, messages, MESSAGE_SIZE
        )
        rate = self.sample((kv_get_bench,), "nats bench kv get", get)
        self.add(kv_get_bench, round_, reference=rate)
        _delete_stream(broker.address, f"KV_{bucket}")

    def _nats_consumers(self, broker: RunningBroker, natscli: Path | None, round_: int) -> None:
        """The JetStream consumer path: pull + explicit acks vs ordered (end to end), and its
        read of a stored backlog vs natscli's fetch of a stream it filled first."""
        messages = self.settings.nats_messages
        pulled = nats_config().model_copy(
            update={"consumer": NatsConsumer(kind="pull", ack="explicit", batch=CONSUMER_BATCH)}
        )
        e2e, versus = "nats_pull_explicit_vs_ordered", "nats_consume_vs_nats_bench"
        for side, config in (("exprun pull", pulled), ("exprun ordered", nats_config())):
            run = partial(exprun_side.run, trial_request(broker, config, messages))
            result = self.sample((e2e,), side, run)
            throughput = result.metrics.throughput if result is not None else None
            if config is pulled:
                self.add(e2e, round_, exprun=throughput)
            else:
                self.add(e2e, round_, reference=throughput)
        # Consumers held until all but the last 1% is stored: they then read a stored stream.
        backlog = trial_request(
            broker, pulled, messages, rate=10_000_000.0, backlog=messages - messages // 100
        )
        drained = self.sample((versus,), "exprun drain", partial(exprun_side.run, backlog))
        self.add(versus, round_, exprun=drained.metrics.drain_throughput if drained else None)
        if natscli is None:
            self[versus].fail("natscli unavailable (see nats_publish_vs_nats_bench)")
            return
        stream = f"bench-{uuid.uuid4().hex[:10]}"
        fetch = partial(
            native.nats_bench_fetch,
            natscli,
            broker.address,
            stream,
            messages,
            MESSAGE_SIZE,
            CONSUMER_BATCH,
        )
        rate = self.sample((versus,), "nats bench js fetch", fetch)
        _delete_stream(broker.address, stream)
        self.add(versus, round_, reference=rate)

    def _kafka_group(self, broker: RunningBroker, config: KafkaBroker, round_: int) -> None:
        """A consumer group with auto commit against assigned partitions, same trial."""
        key = "kafka_group_vs_assign"
        grouped = config.model_copy(update={"consumer_mode": "group"})
        messages = self.settings.kafka_messages
        for side, chosen in (("exprun group", grouped), ("exprun assign", config)):
            request = trial_request(broker, chosen, messages)
            result = self.sample((key,), side, partial(exprun_side.run, request))
            throughput = result.metrics.throughput if result is not None else None
            if chosen is grouped:
                self.add(key, round_, exprun=throughput)
            else:
                self.add(key, round_, reference=throughput)

    def _series_ab(self, request: TrialRequest, key: str, round_: int) -> None:
        """The same trial with its per-second time series kept, and without."""
        for mode in ("on", "off"):
            probe = partial(exprun_side.run_probe, request, {SERIES_ENV: mode})
            result = self.sample((key,), f"exprun ({SERIES_ENV}={mode})", probe)
            if result is None:
                continue
            if mode == "on":
                self.add(key, round_, exprun=result.metrics.throughput)
            else:
                self.add(key, round_, reference=result.metrics.throughput)

    def _rate_accuracy(
        self,
        broker: RunningBroker,
        config: NatsBroker | KafkaBroker,
        key: str,
        maximum_from: str,
    ) -> None:
        """A paced trial at half the publish maximum measured above: achieved vs declared."""
        maximum = self[maximum_from].exprun
        if maximum is None:
            self[key].fail(f"no publish maximum measured ({maximum_from})")
            return
        rate = round(maximum / 2)
        self[key].details["declared_rate"] = rate
        seconds = self.settings.rate_seconds
        request = trial_request(broker, config, None, rate=rate, duration=seconds)
        for round_ in range(max(1, self.settings.repetitions)):
            result = self.sample((key,), "exprun paced", partial(exprun_side.run, request))
            if result is not None:
                self.add(key, round_, exprun=result.metrics.achieved_rate, reference=rate)

    # --- Kafka ---------------------------------------------------------------------------

    def kafka(self) -> None:
        keys = (
            *KAFKA_PUBLISH,
            *KAFKA_LATENCY,
            "kafka_series_overhead",
            "kafka_rate_accuracy",
            "kafka_group_vs_assign",
            "kafka_transactions_publish",
        )
        if not (self.settings.download_jars or native.kafka_jars_cached()):
            self.kafka_skipped = True
            for key in keys:
                self[key].fail(
                    "Kafka jars not cached yet (--quick downloads nothing; a full run does)"
                )
            return
        try:
            kafka_classpath()  # resolved and cached before the broker's start is timed
            with self._broker(start_kafka, "kafka") as broker:
                config = kafka_config(KAFKA_PRODUCER)
                request = trial_request(broker, config, self.settings.kafka_messages)
                self._targets.update(dict.fromkeys(KAFKA_PUBLISH, (request, {})))
                for round_ in self.rounds():
                    self._kafka_round(broker, request, round_)
                    self._series_ab(request, "kafka_series_overhead", round_)
                    self._kafka_group(broker, config, round_)
                    self._kafka_transactions(broker, config, round_)
                self._rate_accuracy(broker, config, "kafka_rate_accuracy", "kafka_publish")
                for round_ in self.rounds():
                    self._latency_round(broker, round_)
                self._latency_comparable()
                self.profile(KAFKA_PUBLISH)
        except BrokerStartError as error:
            self.kafka_skipped = True
            for key in keys:
                self[key].fail(f"embedded Kafka: {error}")

    def _kafka_round(self, broker: RunningBroker, request: TrialRequest, round_: int) -> None:
        result = self.sample(KAFKA_PUBLISH, "exprun", partial(exprun_side.run, request))
        if result is not None:
            self.add("kafka_publish", round_, exprun=_publish(result))
            self._end_to_end(result, "kafka_end_to_end_vs_publish", round_)
        properties = {key: str(value) for key, value in KAFKA_PRODUCER.items()}

        def tool() -> float:
            topic = _kafka_topic(broker.address)
            s = self.settings
            return native.producer_performance(
                broker.address,
                topic,
                s.kafka_messages,
                MESSAGE_SIZE,
                properties,
                warmup_records=s.kafka_tool_warmup,
            )

        rate = self.sample(("kafka_publish",), "ProducerPerformance", tool)
        self.add("kafka_publish", round_, reference=rate)
        bare, key = self.settings.kafka_messages, "kafka_end_to_end_vs_confluent_kafka"
        if result is not None:
            self.add(key, round_, exprun=result.metrics.throughput)
        loop = partial(native.bare_kafka, broker.address, bare, MESSAGE_SIZE, properties)
        rates = self.sample((key,), "confluent-kafka produce+consume", loop)
        self.add(key, round_, reference=rates[1] if rates else None)

    def _kafka_transactions(self, broker: RunningBroker, config: KafkaBroker, round_: int) -> None:
        """Transactional publishing, a commit every TRANSACTION_MS on both sides."""
        key, s = "kafka_transactions_publish", self.settings
        every = {"every": f"{TRANSACTION_MS}ms"}
        transactional = KafkaBroker.model_validate(
            {**config.model_dump(mode="json"), "transactions": every}
        )
        request = trial_request(broker, transactional, s.kafka_messages)
        result = self.sample((key,), "exprun transactions", partial(exprun_side.run, request))
        self.add(key, round_, exprun=_publish(result) if result is not None else None)
        properties = {name: str(value) for name, value in KAFKA_PRODUCER.items()}

        def tool() -> float:
            return native.producer_performance(
                broker.address,
                _kafka_topic(broker.address),
                s.kafka_messages,
                MESSAGE_SIZE,
                properties,
                warmup_records=s.kafka_tool_warmup,
                transaction_ms=TRANSACTION_MS,
            )

        self.add(key, round_, reference=self.sample((key,), "ProducerPerformance tx", tool))

    def _latency_round(self, broker: RunningBroker, round_: int) -> None:
        s = self.settings
        config = kafka_config(LATENCY_PRODUCER, LATENCY_CONSUMER)
        request = trial_request(broker, config, s.latency_messages, rate=s.latency_rate)
        result = self.sample(KAFKA_LATENCY, "exprun", partial(exprun_side.run, request))
        if result is not None:
            latency = result.metrics.latency_ms
            self.add("kafka_latency_p50", round_, exprun=latency.p50)
            self.add("kafka_latency_p99", round_, exprun=latency.p99)
            self.add("kafka_latency_mean", round_, exprun=latency.mean)

        def tool() -> native.LatencyFigures:
            topic = _kafka_topic(broker.address)
            return native.end_to_end_latency(
                broker.address, topic, s.latency_messages, MESSAGE_SIZE
            )

        figures = self.sample(KAFKA_LATENCY, "EndToEndLatency", tool)
        if figures is not None:
            self.add("kafka_latency_p50", round_, reference=figures.p50_ms)
            self.add("kafka_latency_p99", round_, reference=figures.p99_ms)
            self.add("kafka_latency_mean", round_, reference=figures.mean_ms)

    def _latency_comparable(self) -> None:
        for key in KAFKA_LATENCY[:2]:
            reference = self[key].reference
            if reference is not None and reference < 1.0:
                self[key].fail(
                    "EndToEndLatency truncates percentiles to whole ms: it printed 0 (< 1 ms)"
                )

    # --- clusters -------------------------------------------------------------------------

    def clusters(self) -> None:
        """3-node clusters of each broker: how long they take to form, what replication costs."""
        nats = nats_config().model_copy(update={"nodes": CLUSTER_NODES})
        self._cluster(
            partial(start_nats, nodes=CLUSTER_NODES),
            ("nats_cluster_ready", "nats_r3_vs_r1"),
            NATS_CLUSTER_BUDGET_S,
            [_replicated(nats, replicas) for replicas in (3, 1)],
            self.settings.nats_messages,
        )
        keys = ("kafka_cluster_ready", "kafka_rf3_vs_rf1")
        skipped = None
        if not self.settings.kafka_cluster:
            skipped = "not run in --quick (3 JVMs)"
        elif self.kafka_skipped:
            skipped = "Kafka did not run above"
        if skipped is not None:
            for key in keys:
                self[key].fail(skipped)
            return
        kafka = kafka_config(KAFKA_PRODUCER).model_copy(update={"nodes": CLUSTER_NODES})
        self._cluster(
            partial(start_kafka, nodes=CLUSTER_NODES, heap="512m"),
            keys,
            KAFKA_CLUSTER_BUDGET_S,
            [_replicated(kafka, replicas) for replicas in (3, 1)],
            self.settings.kafka_messages,
        )

    def _cluster(
        self,
        start: Callable[[], RunningBroker],
        keys: tuple[str, str],
        budget: float,
        configs: list[NatsBroker | KafkaBroker],
        messages: int,
    ) -> None:
        """Formed-in time, then replicated vs not, interleaved (the ratio is first / second)."""
        ready, replication = keys
        try:
            with self._broker(start, None) as broker:
                self.add(ready, 0, exprun=broker.start_seconds, reference=budget)
                replicated, single = (trial_request(broker, c, messages) for c in configs)
                for round_ in self.rounds():
                    first = self.sample(keys, "exprun", partial(exprun_side.run, replicated))
                    second = self.sample(keys, "exprun", partial(exprun_side.run, single))
                    self.add(
                        replication,
                        round_,
                        exprun=first.metrics.throughput if first else None,
                        reference=second.metrics.throughput if second else None,
                    )
        except BrokerStartError as error:
            for key in keys:
                self[key].fail(f"embedded cluster: {error}")

    # --- load-generator processes --------------------------------------------------------

    def scaling(self) -> None:
        """End-to-end throughput with each trial's clients in 2 load-generator processes vs 1,
        and on 2 Dask hosts (a LocalCluster's workers) vs 2 local processes, on each broker
        (one broker start for both); every merged result must be exact."""
        s = self.settings
        with contextlib.ExitStack() as cluster:
            hosts: LoadHosts | str
            try:
                hosts = cluster.enter_context(exprun_side.local_hosts(2))
            except Exception as error:  # e.g. the dask extra is not installed
                hosts = f"no LocalCluster: {type(error).__name__}: {error}"
            self._scaling(start_nats, "nats", nats_config(), s.nats_messages, hosts)
            if self.kafka_skipped:
                for key in ("kafka_processes_2_vs_1", "kafka_dask_vs_local"):
                    self[key].fail("Kafka did not run above")
                return
            kafka = kafka_config(KAFKA_PRODUCER)
            self._scaling(start_kafka, "kafka", kafka, s.kafka_messages, hosts)

    def _scaling(
        self,
        start: Callable[[], RunningBroker],
        name: str,
        config: NatsBroker | KafkaBroker,
        messages: int,
        hosts: LoadHosts | str,
    ) -> None:
        processes, dask = f"{name}_processes_2_vs_1", f"{name}_dask_vs_local"
        try:
            with self._broker(start, None) as broker:
                single = trial_request(broker, config, messages)
                spread = single.model_copy(update={"processes": 2})
                run_spread = partial(exprun_side.run, spread)
                self._side_by_side(processes, run_spread, partial(exprun_side.run, single))
                if isinstance(hosts, str):
                    self[dask].fail(hosts)
                    return
                on_hosts = partial(exprun_side.run_on_hosts, hosts, spread)
                self._side_by_side(dask, on_hosts, run_spread)
        except BrokerStartError as error:
            self[processes].fail(f"embedded broker: {error}")
            self[dask].fail(f"embedded broker: {error}")

    def _side_by_side(
        self, key: str, measured: Callable[[], TrialResult], reference: Callable[[], TrialResult]
    ) -> None:
        """Rounds of both, interleaved: the throughput ratio, as long as both books are exact."""
        for round_ in self.rounds():
            mine = self.sample((key,), "exprun", measured)
            theirs = self.sample((key,), "exprun", reference)
            inexact = [r for r in (mine, theirs) if r is not None and not _exact(r)]
            if inexact:
                m = inexact[0].metrics
                self[key].fail(
                    f"merged books not exact: sent {m.sent}, received {m.received}, "
                    f"lost {m.lost}, duplicated {m.duplicated}"
                )
                return
            self.add(
                key,
                round_,
                exprun=mine.metrics.throughput if mine else None,
                reference=theirs.metrics.throughput if theirs else None,
            )

    # --- matrix and readiness ------------------------------------------------------------

    def capacity(self) -> None:
        comparison = self["capacity_wall"]
        if not self.settings.capacity:
            comparison.fail("not run in --quick (minutes on embedded Kafka)")
            return
        if self.kafka_skipped:
            comparison.fail("Kafka did not run above")
            return
        run = run_matrix([], CAPACITY_SPEC)
        comparison.details = {"argv": run.argv[3:], **run.breakdown()}
        if run.error is not None:
            comparison.fail(run.error)
        self.add("capacity_wall", 0, exprun=run.wall_s, reference=CAPACITY_BUDGET_S)

    def matrix(self) -> None:
        args = list(self.settings.matrix_args)
        if self.kafka_skipped:
            args += ["--broker", "nats"]  # what failed above would fail the matrix too
        run = run_matrix(args)
        wall, fixed = self["matrix_wall"], self["trial_fixed_cost"]
        wall.details = {"argv": run.argv[3:], **run.breakdown()}
        if args:
            wall.note += " Reduced matrix: " + " ".join(args)
        if run.error is not None:
            wall.fail(run.error)
            fixed.fail(run.error)
        self.add("matrix_wall", 0, exprun=run.wall_s, reference=BUDGET_S)
        if run.fixed_costs:
            median = statistics.median(run.fixed_costs)
            self.add("trial_fixed_cost", 0, exprun=median, reference=FIXED_COST_BUDGET_S)
        for name, seconds in run.broker_start_s.items():
            self.ready.setdefault(name, []).append(seconds)

    def history(self) -> None:
        """The results store: recording a run, and a store of many runs read back."""
        figures = history_store.measure(self.settings.history_runs, cells=100, metrics=20)
        for key, seconds, budget in (
            ("history_record", figures.record_s, HISTORY_RECORD_BUDGET_S),
            ("history_series_query", figures.series_query_s, HISTORY_QUERY_BUDGET_S),
            ("history_changes", figures.changes_s, HISTORY_CHANGES_BUDGET_S),
            ("history_trend_page", figures.page_s, HISTORY_PAGE_BUDGET_S),
            ("history_trend_page_size", figures.page_mb, HISTORY_PAGE_BUDGET_MB),
        ):
            self[key].details = dict(figures.details)
            self.add(key, 0, exprun=seconds, reference=budget)

    def memory(self) -> None:
        """The load generator's memory growth per million messages, on each broker."""
        rate, settle_s, short_s, long_s = self.settings.memory_trials
        for kind in ("nats", "kafka"):
            key = f"{kind}_memory_growth"
            if kind == "kafka" and self.kafka_skipped:
                self[key].fail("Kafka did not run above")
                continue
            try:
                growth = book_memory.measure(kind, rate, settle_s, short_s, long_s)
            except MEASURED as error:
                self[key].fail(str(error))
                continue
            self[key].details = growth.details()
            self.add(key, 0, exprun=max(0.0, growth.mb_per_million), reference=MEMORY_BUDGET_MB)

    def telemetry(self) -> None:
        """Broker telemetry on vs off, same trials interleaved, on each embedded broker."""
        settings = self.settings
        for kind in ("nats", "kafka"):
            key = f"{kind}_telemetry_cost"
            if kind == "kafka" and self.kafka_skipped:
                self[key].fail("Kafka did not run above")
                continue
            try:
                cost = telemetry_cost.measure(
                    kind, settings.telemetry_rounds, settings.telemetry_seconds
                )
            except MEASURED as error:
                self[key].fail(str(error))
                continue
            self[key].details = cost.details()
            for on, off in zip(cost.on, cost.off, strict=True):
                self.add(key, 0, exprun=on, reference=off)

    def security(self) -> None:
        """Plaintext vs TLS (and TLS with a login), same trials interleaved, on each broker."""
        settings = self.settings
        for kind in ("nats", "kafka"):
            rows = list(security_cost.SIDES[kind])
            if kind == "kafka" and self.kafka_skipped:
                for row in rows:
                    self[row].fail("Kafka did not run above")
                continue
            try:
                cost = security_cost.measure(
                    kind, settings.security_rounds, settings.security_seconds
                )
            except MEASURED as error:
                for row in rows:
                    self[row].fail(str(error))
                continue
            for row in rows:
                self[row].details = cost.details(row)
                for secured, plain in zip(cost.secured[row], cost.plain, strict=True):
                    self.add(row, 0, exprun=secured, reference=plain)

    def readiness(self) -> None:
        for name, budget in (("nats", NATS_READY_BUDGET_S), ("kafka", KAFKA_READY_BUDGET_S)):
            comparison = self[f"{name}_ready"]
            comparison.exprun_samples.extend(self.ready.get(name, []))
            comparison.reference_samples.append(budget)
            if not comparison.exprun_samples:
                comparison.fail(f"no embedded {name} broker started")

    # --- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _broker(
        self, start: Callable[[], RunningBroker], name: str | None
    ) -> Iterator[RunningBroker]:
        """An embedded broker for one section; a single node's start time counts towards
        readiness (`name`)."""
        broker = start()
        if name is not None:
            self.ready[name].append(broker.start_seconds or 0.0)
        try:
            prestart()
            yield broker
        finally:
            broker.stop()

    def _end_to_end(self, result: TrialResult, key: str, round_: int) -> None:
        self.add(key, round_, exprun=result.metrics.throughput, reference=_publish(result))
        if round_ >= 0:
            costs = self[key].details.setdefault("fixed_costs", [])
            costs.append(exprun_side.fixed_costs(result))

    def profile(self, keys: tuple[str, ...]) -> None:
        """Profile the exprun trial behind each missed (with --profile: every) goal of `keys`,
        while their broker still runs."""
        mode = self.settings.profile
        for key in keys:
            comparison, target = self[key], self._targets.get(key)
            wanted = mode == "always" or (mode == "missed" and comparison.met is False)
            if target is None or not wanted:
                continue
            request, env = target
            signature = request.model_dump_json(exclude={"topic"}) + repr(sorted(env.items()))
            if signature not in self._profiles:
                print(f"   profiling the exprun trial of {key}", file=sys.stderr, flush=True)
                self._profiles[signature] = profile_trial(exprun_side.fresh(request), env)
            comparison.bottleneck = self._profiles[signature]

    def explain_misses(self) -> None:
        """A missed goal without a profile gets what was measured about it instead."""
        for comparison in self.comparisons.values():
            if comparison.met is False and comparison.bottleneck is None:
                comparison.bottleneck = _measured_bottleneck(comparison, self.settings.profile)


def _measured_bottleneck(comparison: Comparison, mode: str) -> dict[str, Any]:
    if comparison.key == "matrix_wall":
        parts = comparison.details
        return {"largest_parts": {k: v for k, v in parts.items() if k.endswith("_s")}}
    if comparison.key.endswith("_ready"):
        return {"note": "the broker process's own start (JVM / server boot), not exprun code"}
    why = "not profiled in --quick" if mode == "never" else "no exprun trial behind it"
    return {"unavailable": why}


def _replicated(config: NatsBroker | KafkaBroker, replicas: int) -> NatsBroker | KafkaBroker:
    """The same broker settings with a file stream / topic of `replicas` copies."""
    if isinstance(config, NatsBroker):
        stream = config.stream.model_copy(update={"replicas": replicas, "storage": "file"})
        return config.model_copy(update={"stream": stream})
    topic = config.topic.model_copy(update={"replication_factor": replicas})
    return config.model_copy(update={"topic": topic})


def _one_try(request: TrialRequest) -> TrialRequest:
    """The trial with one try per message and so no message ids (`delivery_timeout: 0s`)."""
    config = request.broker_config
    assert isinstance(config, NatsBroker)
    publish = config.publish.model_copy(update={"delivery_timeout": 0.0})
    return request.model_copy(
        update={"broker_config": config.model_copy(update={"publish": publish})}
    )


def _broker_us(result: TrialResult) -> float | None:
    """The broker's CPU per message over the measured phase, in microseconds."""
    m = result.metrics
    if m.broker_cpu_percent is None or m.duration_s is None or not m.sent:
        return None
    return round(m.broker_cpu_percent / 100 * m.duration_s / m.sent * 1e6, 3)


def _publish(result: TrialResult) -> float:
    return result.metrics.publish_throughput or 0.0


def _kafka_topic(bootstrap: str) -> str:
    """A fresh one-partition topic, as each exprun trial gets (the tools would auto-create)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=30)[name]
    try:
        future.result(timeout=30)
    except Exception as error:
        raise native.ToolError(f"cannot create topic {name}: {error}") from None
    return name


def _delete_stream(server: str, stream: str) -> None:
    """Drop a nats bench stream: in memory, they would pile up in the broker."""
    import nats

    async def delete() -> None:
        nc = await nats.connect(server)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    with contextlib.suppress(Exception):
        asyncio.run(delete())


# --- command line ----------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness",
        description="exprun against the brokers' native benchmark tools",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts, 1 round")
    parser.add_argument("--out", type=Path, help="JSON file (default results/benchmark-*.json)")
    parser.add_argument("--repetitions", type=int, help="rounds per comparison (default 5)")
    parser.add_argument(
        "--profile", action="store_true", help="profile every exprun trial, not only misses"
    )
    parser.add_argument(
        "--wait", type=float, help="seconds to wait for another Kafka to end (default 900)"
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else FULL
    if args.repetitions is not None:
        settings = replace(settings, repetitions=max(1, args.repetitions))
    if args.profile:
        settings = replace(settings, profile="always")
    if args.wait is not None:
        settings = replace(settings, wait_s=args.wait)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    settings = settings_from(args)
    started, clock = datetime.now(UTC), time.monotonic()
    others = machine.wait_for_quiet_machine(settings.wait_s)
    bench = Bench(settings)
    _section("NATS JetStream", bench.nats)
    _section("Kafka", bench.kafka)
    _section("worker_pool_256 matrix", bench.matrix)
    _section("capacity.yaml", bench.capacity)
    _section("3-node clusters", bench.clusters)
    _section("load-generator processes", bench.scaling)
    _section("results store", bench.history)
    _section("broker telemetry", bench.telemetry)
    _section("secured brokers", bench.security)
    _section("soak memory", bench.memory)
    bench.readiness()
    bench.explain_misses()
    comparisons = [bench[key] for key in KEYS]
    print(table(comparisons))
    for line in bottleneck_lines(comparisons):
        print(line)
    document = {
        "benchmark": "exprun vs the brokers' native tools (python -m benchmarks.harness)",
        "quick": args.quick,
        "started_at": started.isoformat(),
        "wall_s": round(time.monotonic() - clock, 1),
        "machine": machine.describe(),
        "other_brokers_running_at_start": others,
        "settings": asdict(settings),
        "comparisons": [c.document() for c in comparisons],
    }
    out = args.out or Path("results") / f"benchmark-{started:%Y%m%dT%H%M%SZ}.json"
    write_document(out, document)
    print(f"\nJSON: {out}", file=sys.stderr)
    return 0


def _section(name: str, body: Callable[[], None]) -> None:
    print(f"== {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    body()
    print(f"   {name}: {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)


def bottleneck_lines(comparisons: list[Comparison]) -> list[str]:
    """For every missed goal: what was measured to limit it."""
    lines = []
    for c in comparisons:
        if c.met is False:
            lines.append(f"\n{c.title}: goal {c.goal} missed (ratio {c.ratio:.2f}); measured:")
            lines += [f"  {line}" for line in describe_bottleneck(c.bottleneck or {})]
    return lines


def describe_bottleneck(bottleneck: Mapping[str, Any]) -> list[str]:
    """A profile (or a breakdown) as a few readable lines."""
    if "unavailable" in bottleneck:
        return [f"profile unavailable: {bottleneck['unavailable']}"]
    lines = []
    for process in bottleneck.get("processes", []):
        packages = ", ".join(f"{k} {v:.0%}" for k, v in process["packages"].items())
        top = list(process["top_functions"].items())[:4]
        busy = process["busy_share"]
        lines.append(f"{process['process']}: busy {busy:.0%} of its samples; {packages}")
        lines.append("    top: " + ", ".join(f"{k} {v:.0%}" for k, v in top))
    lines += [f"{key}: {value}" for key, value in bottleneck.items() if key != "processes"]
    return lines


def _exact(result: TrialResult) -> bool:
    m = result.metrics
    return result.status == "ok" and m.lost == m.duplicated == 0 and m.received == m.acked == m.sent


if __name__ == "__main__":
    sys.exit(main())
