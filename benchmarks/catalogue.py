"""Every comparison the benchmark makes: its title, unit, reference, goal and what it compares."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.book_memory import STREAM_MAX_MSGS
from benchmarks.report import Comparison
from runner.execution.drivers.nats import PUBLISHER_ENV
from runner.execution.measure.series import SERIES_ENV


@dataclass(frozen=True)
class Entry:
    title: str
    unit: str
    reference: str
    goal: str | None  # on the ratio exprun / reference
    note: str


ENTRIES: dict[str, Entry] = {
    "kafka_publish": Entry(
        "Kafka publish",
        "msg/s",
        "ProducerPerformance",
        ">= 0.8",
        "exprun: publish throughput (first send -> last ack) of a trial whose consumer runs "
        "too; the tool only produces, and its figure leaves out its first --warmup-records "
        "(its JIT warming up; as many as it measures in the full run). Same record size, "
        "count, acks, linger.ms, batch.size.",
    ),
    "kafka_transactions_publish": Entry(
        "Kafka transactional publish",
        "msg/s",
        "ProducerPerformance --transactional-id",
        ">= 0.8",
        "Both commit a transaction every 100 ms (exprun: transactions {every: 100ms}; the "
        "tool: --transaction-duration-ms 100), same record size, count, acks, linger.ms, "
        "batch.size and warm-up as the Kafka publish row; exprun's figure is its publish "
        "throughput, a message acked when its transaction committed.",
    ),
    "kafka_end_to_end_vs_publish": Entry(
        "Kafka end-to-end / publish",
        "msg/s",
        "publish",
        ">= 0.7",
        "Received msg/s (first send -> last handled) / published msg/s of the same trials; "
        "256 workers, zero processing time.",
    ),
    "kafka_latency_p50": Entry(
        "Kafka e2e latency p50",
        "ms",
        "EndToEndLatency",
        None,
        "The tool sends one record, polls until it is back, commits, repeats; exprun's trial "
        "is paced at a low rate so that messages travel alone. Both: acks=all, linger.ms=0, "
        "consumer fetch wait 0. The tool truncates its percentiles to whole ms.",
    ),
    "kafka_latency_p99": Entry(
        "Kafka e2e latency p99", "ms", "EndToEndLatency", None, "As for p50."
    ),
    "kafka_latency_mean": Entry(
        "Kafka e2e latency mean",
        "ms",
        "EndToEndLatency",
        None,
        "As for p50; the tool prints its mean to 0.1 us, so this row always compares.",
    ),
    "nats_publish_vs_nats_py": Entry(
        "JetStream publish vs nats-py publish_async",
        "msg/s",
        "nats-py publish_async",
        ">= 0.9",
        "exprun: publish throughput of a trial whose consumer runs too; the bare loop only "
        "publishes (JetStream.publish_async, the same in-flight limit, 4096).",
    ),
    "nats_publish_vs_nats_py_window": Entry(
        "JetStream publish vs leanest nats-py loop",
        "msg/s",
        "nats-py window loop",
        None,
        "The fastest publish loop nats-py allows (core publish + reply inbox, acks counted, "
        "not parsed), publishing alone: the Python client's real ceiling.",
    ),
    "nats_publish_vs_nats_bench": Entry(
        "JetStream publish vs nats bench",
        "msg/s",
        "nats bench js pub async",
        None,
        "natscli (Go) publishing alone: async batches of 500, in-memory stream.",
    ),
    "nats_end_to_end_vs_publish": Entry(
        "JetStream end-to-end / publish",
        "msg/s",
        "publish",
        ">= 0.7",
        "Received msg/s / published msg/s of the same trials; 256 workers, zero processing time.",
    ),
    "nats_end_to_end_vs_nats_py": Entry(
        "JetStream end-to-end vs bare nats-py pub+sub",
        "msg/s",
        "nats-py window loop + consumer",
        ">= 0.95",
        "The same work with nothing of exprun: the leanest publish loop, and a forked process "
        "whose ordered push consumer only counts. exprun's end-to-end against it is the "
        "harness's own cost on top of the Python client (goal: at most 5%). Both sides send "
        "the same messages: exprun's with one try and so no message id (`delivery_timeout: "
        "0s`), as the bare loop's; what ids cost the broker is row nats_message_ids_vs_plain.",
    ),
    "kafka_end_to_end_vs_confluent_kafka": Entry(
        "Kafka end-to-end vs bare confluent-kafka produce + consume",
        "msg/s",
        "confluent-kafka loop + consumer",
        ">= 0.95",
        "The same work with nothing of exprun (benchmarks.bare_kafka): a produce loop polling "
        "its delivery reports with the trial's producer settings, and a forked assigned "
        "consumer that only counts. exprun's end-to-end against it is exprun's own cost "
        "(stamping, books, hand-off, series) on top of the client (goal: at most 5%).",
    ),
    "nats_publisher_process_vs_loop": Entry(
        "JetStream e2e: forked publisher vs one loop",
        "msg/s",
        "publisher on trial loop",
        None,
        "End-to-end msg/s with the NATS driver's producers in a forked process (the default) "
        f"vs on the trial's event loop ({PUBLISHER_ENV}=loop); both run by benchmarks.probe.",
    ),
    "nats_message_ids_vs_plain": Entry(
        "JetStream publish with message ids and retries vs one try",
        "msg/s",
        "delivery_timeout 0s",
        ">= 0.95",
        "Publish msg/s of the same unpaced trial, no faults: the default producers (a "
        "Nats-Msg-Id on every publish, the stream's duplicate window, retries until 30s) "
        "against one try without ids (publish.delivery_timeout 0s, the behaviour before "
        "retries). The details hold both sides' end-to-end msg/s and the broker's CPU per "
        "message: the ids' cost on the broker's side.",
    ),
    "nats_rate_accuracy": Entry(
        "JetStream paced rate accuracy",
        "msg/s",
        "declared rate",
        ">= 0.99",
        "A paced trial at half the measured publish maximum for 20 s: achieved_rate (msg/s "
        "really sent in the measured window) against the declared rate.",
    ),
    "kafka_rate_accuracy": Entry(
        "Kafka paced rate accuracy",
        "msg/s",
        "declared rate",
        ">= 0.99",
        "As for JetStream: half the measured publish maximum, 20 s, achieved vs declared.",
    ),
    "nats_series_overhead": Entry(
        "JetStream e2e with time series vs without",
        "msg/s",
        f"{SERIES_ENV}=off",
        ">= 0.95",
        "End-to-end msg/s of the same unpaced trial with its per-second time series kept "
        f"(the default) and with {SERIES_ENV}=off; both run by benchmarks.probe.",
    ),
    "nats_telemetry_cost": Entry(
        "JetStream e2e with broker telemetry vs without",
        "msg/s",
        "telemetry off",
        ">= 0.99",
        "End-to-end msg/s of the same unpaced trial with the broker read every second "
        "(/varz and /jsz, by the run's process) and not read, rounds interleaved. The details "
        "hold exprun's own U test of the two (goal: no significant difference) and the "
        "sampler's CPU in ms per second of trial.",
    ),
    "kafka_telemetry_cost": Entry(
        "Kafka e2e with broker telemetry vs without",
        "msg/s",
        "telemetry off",
        ">= 0.99",
        "End-to-end msg/s of the same unpaced trial on a Kafka running the JMX exporter agent "
        "and read every second, and on one without the agent, rounds interleaved. The details "
        "hold exprun's own U test (goal: no significant difference) and the sampler's CPU.",
    ),
    "nats_tls_cost": Entry(
        "JetStream e2e with TLS and an nkey login vs plaintext",
        "msg/s",
        "plaintext",
        None,
        "End-to-end msg/s of the same unpaced trial on an embedded nats-server with TLS (a CA "
        "made by exprun) and an nkey user, and on a plaintext one, rounds interleaved. No goal: "
        "what TLS costs is the broker's and the client's; the details hold exprun's U test.",
    ),
    "kafka_tls_cost": Entry(
        "Kafka e2e over SSL vs plaintext",
        "msg/s",
        "plaintext",
        None,
        "End-to-end msg/s of the same unpaced trial on an embedded Kafka with an SSL listener "
        "and on a plaintext one, rounds interleaved; no goal, the U test in the details.",
    ),
    "kafka_sasl_ssl_cost": Entry(
        "Kafka e2e over SASL_SSL (SCRAM-SHA-512) vs plaintext",
        "msg/s",
        "plaintext",
        None,
        "As kafka_tls_cost, with a SASL_SSL listener and a SCRAM-SHA-512 user.",
    ),
    "nats_memory_growth": Entry(
        "JetStream load generator memory growth",
        "MB per million messages",
        "budget 0.5 MB",
        "<= 1.0",
        "Peak RSS of the trial process (its publisher process's own memory included) of a long "
        "and a short paced trial of 256 B messages at the same rate, after each one's first "
        "minute (its start-up), per million messages more, against the 0.5 MB budget (about "
        f"half a byte a message). The stream keeps its last {STREAM_MAX_MSGS:,} messages, as a "
        "soak's retention is bounded. The whole trials' peaks are in the details.",
    ),
    "kafka_memory_growth": Entry(
        "Kafka load generator memory growth",
        "MB per million messages",
        "budget 0.5 MB",
        "<= 1.0",
        "As for JetStream: the trial process's peak RSS after its first minute, long vs short "
        "trial, per million messages more, against the 0.5 MB budget.",
    ),
    "kafka_series_overhead": Entry(
        "Kafka e2e with time series vs without",
        "msg/s",
        f"{SERIES_ENV}=off",
        ">= 0.95",
        "As for JetStream.",
    ),
    "capacity_wall": Entry(
        "capacity.yaml wall time",
        "s",
        "budget",
        "<= 1.0",
        "`exprun run experiments/capacity.yaml` as a subprocess: 10 capacity searches of up to "
        "7 steps of 5 s, and 2 warm-ups; details break it down.",
    ),
    "kafka_group_vs_assign": Entry(
        "Kafka e2e: consumer group (auto commit) vs assigned",
        "msg/s",
        "assigned partitions",
        None,
        "End-to-end msg/s of the same trial read by a consumer group with librdkafka's auto "
        "commit against partitions assigned directly (exprun's default reader).",
    ),
    "nats_pull_explicit_vs_ordered": Entry(
        "JetStream e2e: pull + explicit acks vs ordered",
        "msg/s",
        "ordered push consumer",
        None,
        "End-to-end msg/s of the same trial read by a pull consumer (batch 100) acking each "
        "message after its handler, against the ordered push consumer (the default reader).",
    ),
    "nats_core_end_to_end_vs_nats_py": Entry(
        "Core NATS end-to-end vs bare nats-py pub + sub",
        "msg/s",
        "nats-py publish loop + subscriber",
        ">= 0.9",
        "jetstream: false. The bare loop publishes with nats-py's publish and flushes; a forked "
        "process subscribes and only counts. exprun adds its stamps, books, PING confirmations "
        "and handler pool; both lost nothing (exprun's trial is checked exact).",
    ),
    "nats_core_publish_vs_nats_bench": Entry(
        "Core NATS publish vs nats bench pub",
        "msg/s",
        "nats bench pub",
        None,
        "natscli (Go) publishing alone to a subject nats bench sub reads; exprun's publish "
        "throughput of the same trials as the row above (first send to last PONG).",
    ),
    "nats_core_end_to_end_vs_nats_bench": Entry(
        "Core NATS end-to-end vs nats bench sub",
        "msg/s",
        "nats bench sub",
        None,
        "natscli's subscriber rate while nats bench pub publishes the same count and size; "
        "exprun's end-to-end of the same trials as the rows above. Go against Python: beside "
        "each other, not a goal.",
    ),
    "nats_request_reply_vs_nats_py": Entry(
        "Request-reply vs bare nats-py request loop",
        "req/s",
        "nats-py request() loop + responder",
        ">= 0.9",
        "pattern: request_reply, one request in flight (publish.max_pending 1), one responder, "
        "1 KiB requests answered with 16 bytes; the bare loop awaits nc.request() one at a "
        "time against a forked responder doing the same. Both lost and timed out nothing.",
    ),
    "nats_request_reply_vs_nats_bench": Entry(
        "Request-reply vs nats bench service",
        "req/s",
        "nats bench service request / serve",
        None,
        "natscli (Go): one requester, one request at a time, against `serve`; exprun's figure "
        "is the row above's. Go against Python: beside each other, not a goal.",
    ),
    "nats_kv_vs_nats_py": Entry(
        "Key-value vs bare nats-py kv.put / kv.get loop",
        "ops/s",
        "nats-py KeyValue loop",
        ">= 0.9",
        "pattern: kv, half gets, 1,000 keys, one operation in flight (publish.max_pending 1), "
        "memory bucket with direct gets on both sides; the bare loop runs the same sequence "
        "of puts and gets with nats-py's KeyValue, awaiting each.",
    ),
    "nats_kv_get_vs_nats_bench": Entry(
        "Key-value get vs nats bench kv get",
        "ops/s",
        "nats bench kv get",
        None,
        "exprun: pattern kv, gets only, every key preloaded (kv.preload), each read once, one "
        "get in flight; natscli (Go): one getter of the keys `kv put` stored. Beside each "
        "other, not a goal.",
    ),
    "nats_kv_put_vs_nats_bench": Entry(
        "Key-value put vs nats bench kv put",
        "ops/s",
        "nats bench kv put",
        None,
        "exprun: pattern kv with no gets (reads 0%), one put in flight; natscli (Go): one "
        "putter into a memory bucket. Beside each other, not a goal.",
    ),
    "nats_consume_vs_nats_bench": Entry(
        "JetStream pull + explicit vs nats bench js fetch",
        "msg/s",
        "nats bench js fetch",
        ">= 0.5",
        "exprun: drain_throughput of a pull consumer (batch 100, explicit acks, each message "
        "acked after its handler) released onto a stored backlog; natscli (Go): fetch (batch "
        "100, explicit acks) of a stream it filled first. Both share 2 cores with the server.",
    ),
    "history_record": Entry(
        "Results store: recording a worker_pool_256 run",
        "s",
        "budget",
        "<= 1.0",
        "The committed worker_pool_256 run folder's report recorded into a fresh SQLite store "
        "(every cell x metric with its trial values), its analysis done beforehand.",
    ),
    "history_series_query": Entry(
        "Results store: one series read",
        "s",
        "budget",
        "<= 1.0",
        "The newest 100 points of one series of a store of RUNS runs x 100 cells x 20 metrics "
        "(details), as `exprun history` reads them.",
    ),
    "history_changes": Entry(
        "Results store: change points of a whole spec",
        "s",
        "budget",
        "<= 1.0",
        "`--changes` over every series of the spec in that store (2,000 series, their newest "
        "100 runs each): read, and segmented.",
    ),
    "history_trend_page": Entry(
        "Results store: the trend page of a spec",
        "s",
        "budget",
        "<= 1.0",
        "`--html` for the spec's headline metrics (200 charts of 100 runs): read and rendered.",
    ),
    "history_trend_page_size": Entry(
        "Results store: the trend page's size",
        "MB",
        "budget",
        "<= 1.0",
        "The same page's size in MB against a 10 MB budget.",
    ),
    "matrix_wall": Entry(
        "worker_pool_256 matrix wall time",
        "s",
        "budget",
        "<= 1.0",
        "`exprun run experiments/worker_pool_256.yaml` as a subprocess, the brokers' start "
        "included; details break it down.",
    ),
    "trial_fixed_cost": Entry(
        "Per-trial fixed cost (median)",
        "s",
        "budget",
        "<= 1.0",
        "spawn + topic/stream create + clients ready + tear-down, per matrix trial.",
    ),
    "nats_ready": Entry(
        "Embedded NATS ready",
        "s",
        "budget",
        "<= 1.0",
        "start_seconds of every embedded NATS start of this run (harness and matrix).",
    ),
    "kafka_ready": Entry(
        "Embedded Kafka ready (jars cached)",
        "s",
        "budget",
        "<= 1.0",
        "start_seconds of every embedded Kafka start of this run (harness and matrix).",
    ),
    "nats_cluster_ready": Entry(
        "Embedded 3-node NATS cluster formed",
        "s",
        "budget",
        "<= 1.0",
        "start_seconds of a 3-node cluster (routes, JetStream on each): until the JetStream meta "
        "leader is elected with every peer known.",
    ),
    "kafka_cluster_ready": Entry(
        "Embedded 3-node Kafka cluster formed",
        "s",
        "budget",
        "<= 1.0",
        "start_seconds of a 3-node KRaft cluster (combined broker+controller nodes, 512 MB "
        "heaps): storage formatted, until every broker is registered.",
    ),
    "nats_processes_2_vs_1": Entry(
        "JetStream end to end, 2 load-generator processes / 1",
        "msg/s",
        "1 process",
        None,
        "Received msg/s of the same trial with its clients spread over 2 load-generator "
        "processes vs run by the trial's own (with its forked publisher); the merged books "
        "must be exact in every round. On 2 cores the broker competes for the same CPU.",
    ),
    "kafka_processes_2_vs_1": Entry(
        "Kafka end to end, 2 load-generator processes / 1",
        "msg/s",
        "1 process",
        None,
        "Received msg/s of the same trial with its clients spread over 2 load-generator "
        "processes vs all in the trial's own; the merged books must be exact in every round.",
    ),
    "nats_dask_vs_local": Entry(
        "JetStream end to end, 2 Dask hosts / 2 local processes",
        "msg/s",
        "local",
        ">= 0.9",
        "Received msg/s of the same trial with its clients on 2 load-generator hosts (a "
        "LocalCluster's 2 workers offering loadgen=1, 1 process each) vs 2 local processes: "
        "what the Dask path costs (fresh share processes linked over TCP, clocks measured). "
        "Merged books exact in every round.",
    ),
    "kafka_dask_vs_local": Entry(
        "Kafka end to end, 2 Dask hosts / 2 local processes",
        "msg/s",
        "local",
        ">= 0.9",
        "As the JetStream row, on Kafka.",
    ),
    "nats_r3_vs_r1": Entry(
        "JetStream R3 / R1 end to end (3 nodes)",
        "msg/s",
        "R1",
        None,
        "Received msg/s of a file stream with 3 replicas vs 1, same cluster, same trial "
        "otherwise: what replication costs (all nodes share this machine's 2 cores).",
    ),
    "kafka_rf3_vs_rf1": Entry(
        "Kafka RF 3 / RF 1 end to end (3 nodes, acks=all)",
        "msg/s",
        "RF 1",
        None,
        "Received msg/s of a topic replicated 3 times vs once, same cluster, acks=all on "
        "both (an RF-3 write is acked once every in-sync replica has it).",
    ),
}
KEYS = tuple(ENTRIES)  # table order; the smoke test checks that the JSON holds every one


def new_comparison(key: str) -> Comparison:
    entry = ENTRIES[key]
    return Comparison(key, entry.title, entry.unit, entry.reference, entry.goal, entry.note)
