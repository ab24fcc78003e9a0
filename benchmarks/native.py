"""The brokers' own benchmark tools, run as they ship: Kafka's ProducerPerformance and
EndToEndLatency (kafka-tools, same Maven resolution as the embedded broker) and natscli's
`nats bench` (built with `go install` into exprun's cache), plus the bare nats-py loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.execution.brokers.kafka import (
    BROKER_JVM_OPTS,
    COMPLETE_MARKER,
    KAFKA_LIBS_ENV,
    cache_dir,
    find_java,
    kafka_classpath,
    kafka_version,
)

NATSCLI_MODULE = "github.com/nats-io/natscli/nats"
NATSCLI_VERSION = "v0.5.0"  # pinned so figures stay comparable (v0.5.1 is no longer served)
GO_INSTALL_TIMEOUT_S = 600.0
# kafka-producer-perf-test.sh and kafka-e2e-latency.sh run their JVM with this heap.
TOOL_HEAP = "-Xmx512M"
TOOL_TIMEOUT_S = 300.0


class ToolError(Exception):
    """A native tool failed or printed nothing we can read; str() says which and why."""


@dataclass(frozen=True)
class LatencyFigures:
    """EndToEndLatency's summary: mean in ms, percentiles in whole ms (it truncates them)."""

    mean_ms: float
    p50_ms: float
    p99_ms: float
    p999_ms: float


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exprun"


# --- natscli -----------------------------------------------------------------------------


def find_natscli(install: bool) -> tuple[Path | None, str]:
    """(the `nats` binary or None, how it was found or why there is none)."""
    cached = cache_root() / "natscli" / NATSCLI_VERSION / "nats"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached, f"natscli {NATSCLI_VERSION} from {cached}"
    if not install:
        return None, f"natscli not built yet ({cached} missing; a run without --quick builds it)"
    go = shutil.which("go")
    if go is None:
        return None, "natscli unavailable: no Go toolchain (`go`) on PATH to build it"
    env = {**os.environ, "GOBIN": str(cached.parent), "GOFLAGS": "-mod=mod"}
    argv = [go, "install", f"{NATSCLI_MODULE}@{NATSCLI_VERSION}"]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=GO_INSTALL_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"natscli unavailable: `{' '.join(argv)}` failed: {error}"
    if done.returncode != 0 or not cached.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"natscli unavailable: `{' '.join(argv)}` exit {done.returncode}: {last}"
    return cached, f"natscli {NATSCLI_VERSION} built with go install into {cached}"


def nats_bench_publish(
    nats: Path, server: str, stream: str, messages: int, size: int, batch: int
) -> float:
    """`nats bench js pub async` into a fresh in-memory stream; its publish rate in msg/s."""
    argv = [str(nats), "bench", "js", "pub", "async", stream, "--server", server]
    argv += ["--msgs", str(messages), "--size", str(size), "--batch", str(batch)]
    argv += ["--create", "--storage", "memory", "--stream", stream, "--no-progress"]
    return _bench_rate(_run(argv), "publisher")


def nats_bench_fetch(
    nats: Path, server: str, stream: str, messages: int, size: int, batch: int
) -> float:
    """`nats bench js fetch` (explicit acks) of a stream `nats bench js pub` filled first; its
    consume rate in msg/s."""
    fill = [str(nats), "bench", "js", "pub", "async", stream, "--server", server]
    fill += ["--msgs", str(messages), "--size", str(size), "--create", "--storage", "memory"]
    _run([*fill, "--stream", stream, "--no-progress"])
    argv = [str(nats), "bench", "js", "fetch", "--server", server, "--stream", stream]
    argv += ["--msgs", str(messages), "--size", str(size), "--batch", str(batch)]
    return _bench_rate(_run([*argv, "--acks", "explicit", "--no-progress"]), "consumer (fetch)")


def nats_bench_core(
    nats: Path, server: str, subject: str, messages: int, size: int
) -> tuple[float, float]:
    """`nats bench sub` reading while `nats bench pub` publishes on a core subject: (publish
    msg/s, subscribe msg/s)."""
    common = [subject, "--server", server, "--msgs", str(messages), "--size", str(size)]
    subscriber = [str(nats), "bench", "sub", *common, "--no-progress"]
    with _beside(subscriber, "Starting Core NATS subscriber") as reader:
        published = _run([str(nats), "bench", "pub", *common, "--no-progress"])
        try:
            read, _ = reader.communicate(timeout=TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ToolError(f"nats bench sub timed out after {TOOL_TIMEOUT_S:g}s") from None
    return _bench_rate(published, "Core NATS publisher"), _bench_rate(read, "Core NATS subscriber")


@contextlib.contextmanager
def _beside(argv: list[str], ready: str) -> Iterator[subprocess.Popen[str]]:
    """`argv` running beside the with-block once it printed a line with `ready` (it
    subscribed, say); killed after the block if it has not ended by then."""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=_repo_root()
    )
    try:
        assert process.stdout is not None
        if not any(ready in line for line in process.stdout):
            raise ToolError(f"nats bench ended before saying {ready!r}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def bare_nats_core(server: str, messages: int, size: int) -> tuple[float, float]:
    """benchmarks.bare_nats_core in a fresh interpreter: (publish msg/s, end-to-end msg/s)."""
    argv = [sys.executable, "-m", "benchmarks.bare_nats_core", "--server", server]
    out = _run([*argv, "--messages", str(messages), "--size", str(size)])
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ToolError(f"bare nats-py core loop printed no result: {_last_line(out)}") from None
    if result["received"] != messages:
        raise ToolError(f"bare nats-py core loop received {result['received']} of {messages}")
    return float(result["msgs_per_s"]), float(result["e2e_msgs_per_s"])


def nats_bench_service(nats: Path, server: str, subject: str, messages: int, size: int) -> float:
    """`nats bench service request` against `nats bench service serve`: requests per second."""
    common = [subject, "--server", server, "--msgs", str(messages), "--size", str(size)]
    serve = [str(nats), "bench", "service", "serve", *common, "--no-progress"]
    with _beside(serve, "Starting Core NATS service server"):
        out = _run([str(nats), "bench", "service", "request", *common, "--no-progress"])
    return _bench_rate(out, "Core NATS service requester")


def nats_bench_kv_put(nats: Path, server: str, bucket: str, messages: int, size: int) -> float:
    """`nats bench kv put` into a fresh memory bucket (made by `nats kv add`): puts per second."""
    _run([str(nats), "kv", "add", bucket, "--storage", "memory", "--server", server])
    argv = [str(nats), "bench", "kv", "put", "--server", server, "--bucket", bucket]
    argv += ["--msgs", str(messages), "--size", str(size), "--no-progress"]
    return _bench_rate(_run(argv), "JetStream KV putter")


def nats_bench_kv_get(nats: Path, server: str, bucket: str, messages: int, size: int) -> float:
    """`nats bench kv get` of the keys `nats bench kv put` stored in `bucket`: gets per second."""
    argv = [str(nats), "bench", "kv", "get", "--server", server, "--bucket", bucket]
    argv += ["--msgs", str(messages), "--size", str(size), "--no-progress"]
    return _bench_rate(_run(argv), "JetStream KV getter")


def _bench_rate(out: str, side: str) -> float:
    """The msg/s natscli printed for `side` (e.g. "Core NATS publisher"); ToolError if none."""
    match = re.search(rf"{re.escape(side)} stats: ([\d,]+) msgs/sec", out)
    if match is None:
        raise ToolError(f"nats bench printed no {side} stats: {_last_line(out)}")
    return float(match.group(1).replace(",", ""))


def bare_nats_pattern(server: str, pattern: str, messages: int, size: int) -> float:
    """benchmarks.bare_nats_patterns in a fresh interpreter: requests or operations per second."""
    argv = [sys.executable, "-m", "benchmarks.bare_nats_patterns", "--server", server]
    out = _run([*argv, "--pattern", pattern, "--messages", str(messages), "--size", str(size)])
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ToolError(
            f"bare nats-py {pattern} loop printed no result: {_last_line(out)}"
        ) from None
    if pattern == "request_reply" and result["failed"]:
        raise ToolError(f"bare nats-py request loop: {result['failed']} requests timed out")
    return float(result["per_s"])


# --- Kafka tools -------------------------------------------------------------------------


def kafka_jars_cached() -> bool:
    """True when the Kafka jars need no Maven download (which can take minutes)."""
    if os.environ.get(KAFKA_LIBS_ENV):
        return True
    return (cache_dir(kafka_version()) / "libs" / COMPLETE_MARKER).is_file()


def _java_tool(main_class: str, *args: str) -> list[str]:
    classpath = ":".join(str(jar) for jar in kafka_classpath())
    return [str(find_java()), TOOL_HEAP, *BROKER_JVM_OPTS, "-cp", classpath, main_class, *args]


def producer_performance(
    bootstrap: str,
    topic: str,
    records: int,
    size: int,
    properties: dict[str, str],
    warmup_records: int = 0,
    transaction_ms: int | None = None,
) -> float:
    """kafka-producer-perf-test: records/s (send of the first -> last ack) of `records` sent
    after `warmup_records` more (the tool's --warmup-records: its JVM's JIT warm-up left out);
    with `transaction_ms`, in transactions committed that often."""
    props = [
        f"{key}={value}" for key, value in {"bootstrap.servers": bootstrap, **properties}.items()
    ]
    total = records + warmup_records
    warmup = ("--warmup-records", str(warmup_records)) if warmup_records else ()
    argv = _java_tool(
        "org.apache.kafka.tools.ProducerPerformance",
        *("--topic", topic, "--num-records", str(total), "--record-size", str(size)),
        *warmup,
        *_transactions(topic, transaction_ms),
        *("--throughput", "-1", "--command-property", *props),
    )
    out = _run(argv)
    line = rf"{records} steady state records sent" if warmup_records else rf"{total} records sent"
    match = re.search(rf"{line}, ([\d.]+) records/sec", out)
    if match is None:
        raise ToolError(f"ProducerPerformance printed no total: {_last_line(out)}")
    return float(match.group(1))


def _transactions(topic: str, transaction_ms: int | None) -> tuple[str, ...]:
    if transaction_ms is None:
        return ()
    return ("--transactional-id", f"{topic}-tx", "--transaction-duration-ms", str(transaction_ms))


def end_to_end_latency(bootstrap: str, topic: str, records: int, size: int) -> LatencyFigures:
    """kafka-e2e-latency: one record at a time, send -> the consumer's poll returns it."""
    argv = _java_tool(
        "org.apache.kafka.tools.EndToEndLatency",
        *("--bootstrap-server", bootstrap, "--topic", topic, "--num-records", str(records)),
        *("--producer-acks", "all", "--record-size", str(size)),
    )
    out = _run(argv)
    mean = re.search(r"Avg latency: ([\d.]+) ms", out)
    pct = re.search(r"50th = (\d+), 99th = (\d+), 99.9th = (\d+)", out)
    if mean is None or pct is None:
        raise ToolError(f"EndToEndLatency printed no summary: {_last_line(out)}")
    p50, p99, p999 = (float(value) for value in pct.groups())
    return LatencyFigures(float(mean.group(1)), p50, p99, p999)


# --- bare nats-py ------------------------------------------------------------------------


def bare_nats(
    server: str, messages: int, size: int, window: int, mode: str, consume: bool = False
) -> tuple[float, float | None]:
    """benchmarks.bare_nats in a fresh interpreter: (publish msg/s, end-to-end msg/s or None)."""
    argv = [sys.executable, "-m", "benchmarks.bare_nats", "--server", server, "--mode", mode]
    argv += ["--messages", str(messages), "--size", str(size), "--max-pending", str(window)]
    out = _run([*argv, "--consume"] if consume else argv)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ToolError(f"bare nats-py loop printed no result: {_last_line(out)}") from None
    if result["stored"] != messages:
        raise ToolError(f"bare nats-py loop stored {result['stored']} of {messages} messages")
    return float(result["msgs_per_s"]), result["e2e_msgs_per_s"]


def bare_kafka(
    bootstrap: str, messages: int, size: int, properties: dict[str, str]
) -> tuple[float, float]:
    """benchmarks.bare_kafka in a fresh interpreter: (produce msg/s, end-to-end msg/s)."""
    argv = [sys.executable, "-m", "benchmarks.bare_kafka", "--bootstrap", bootstrap]
    argv += ["--messages", str(messages), "--size", str(size)]
    argv += [arg for key, value in properties.items() for arg in ("--property", f"{key}={value}")]
    out = _run(argv)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ToolError(f"bare confluent-kafka loop printed no result: {_last_line(out)}") from None
    if result["received"] != messages:
        raise ToolError(f"bare confluent-kafka loop received {result['received']} of {messages}")
    return float(result["msgs_per_s"]), float(result["e2e_msgs_per_s"])


def _run(argv: list[str]) -> str:
    """stdout of a tool run to completion; ToolError with its last words otherwise."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, cwd=_repo_root()
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"{Path(argv[0]).name} timed out after {TOOL_TIMEOUT_S:g}s") from None
    except OSError as error:
        raise ToolError(f"cannot run {argv[0]}: {error}") from None
    if done.returncode != 0:
        words = _last_line(done.stderr) or _last_line(done.stdout)
        raise ToolError(f"{Path(argv[0]).name} exit {done.returncode}: {words}")
    return done.stdout


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
