"""Synthetic trial sets and run folders for the report tests (no brokers involved).

The figures follow the source report (seed/memory_persistence_report.zh.md): Kafka and NATS
JetStream, worker pool 48 ("before") vs 256 ("after"), four message counts, with NATS
"after" dipping at High exactly as in the report. Noise is seeded, so runs are repeatable.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from schemas.results import TrialResult
from schemas.spec import Experiment

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "worker_pool_256.yaml"
SCENARIOS = {"Low": 500, "Medium": 2000, "High": 5000, "Extreme": 10000}

# Medians per (broker, variant): throughput msg/s, latency ms, memory delta MB, peak threads.
THROUGHPUT = {
    ("kafka", "before"): [493.36, 1918.62, 4426.77, 7892.83],
    ("kafka", "after"): [493.36, 1918.62, 4426.77, 7892.83],
    ("nats", "before"): [143.0, 175.0, 170.0, 176.0],
    ("nats", "after"): [361.30, 830.74, 161.82, 1169.39],
}
LATENCY = {
    ("kafka", "before"): [145.45, 266.23, 296.32, 233.61],
    ("kafka", "after"): [145.45, 266.23, 296.32, 233.61],
    ("nats", "before"): [5.3, 4.9, 5.0, 5.1],
    ("nats", "after"): [5.14, 4.56, 40.81, 4.92],
}
MEMORY = {"kafka": [1.08, 0.98, 0.98, 0.98], "nats": [2.50, 2.47, 2.46, 2.55]}
PEAK_THREADS = {"kafka": [453, 460, 467, 474], "nats": [282, 290, 297, 334]}

Tweak = Callable[[str, str, str, int, dict[str, Any]], None]


def metrics_for(
    broker: str, variant: str, scenario: str, rng: random.Random, noise: float
) -> dict[str, Any]:
    """Plausible metrics of one trial, around the source report's figures."""
    i = list(SCENARIOS).index(scenario)
    messages = SCENARIOS[scenario]

    def jitter(value: float) -> float:
        return value * (1 + rng.gauss(0, noise))

    # Variants other than the source report's two behave like "before".
    known = variant if (broker, variant) in THROUGHPUT else "before"
    throughput = jitter(THROUGHPUT[broker, known][i])
    latency = jitter(LATENCY[broker, known][i])
    leaked = 1 if broker == "kafka" else 0
    lingering = 133 if broker == "kafka" else 10
    return {
        "sent": messages,
        "acked": messages,
        "received": messages,
        "lost": 0,
        "duplicated": 0,
        "success_rate": 100.0,
        "publish_errors": {},
        "throughput": throughput,
        "publish_throughput": throughput * 1.5,
        "latency_ms": {
            "p50": latency * 0.9,
            "p90": latency * 1.2,
            "p99": latency * 1.6,
            "p999": latency * 2.0,
            "max": latency * 2.5,
            "mean": latency,
            "count": messages,
        },
        "publish_latency_ms": {"p50": 0.4, "p99": 1.1, "mean": 0.5, "count": messages},
        "duration_s": messages / throughput,
        "trial_duration_s": messages / throughput + 3.0,
        "rss_before_mb": 60.0,
        "rss_peak_mb": 64.0,
        "rss_after_mb": 60.0 + MEMORY[broker][i],
        "memory_delta_mb": jitter(MEMORY[broker][i]),
        "threads_before": 20,
        "threads_peak": PEAK_THREADS[broker][i],
        "threads_after_immediate": 20 + leaked + lingering,
        "threads_after": 20 + leaked,
        "leaked_threads": leaked,
        "lingering_threads": lingering,
    }


def make_trial(
    broker: str,
    variant: str,
    scenario: str,
    repetition: int,
    metrics: dict[str, Any],
    *,
    index: int = 0,
    warmup: bool = False,
    status: str = "ok",
    error: str | None = None,
    config: dict[str, Any] | None = None,
) -> TrialResult:
    return TrialResult.model_validate(
        {
            "index": index,
            "broker": broker,
            "broker_type": broker if broker in ("kafka", "nats") else "nats",
            "variant": variant,
            "scenario": scenario,
            "repetition": repetition,
            "warmup": warmup,
            "status": status,
            "error": error,
            "started_at": "2026-01-01T00:00:00.000Z",
            "config": config or {"workload": {"settle_time": 2.0}},
            "metrics": metrics,
        }
    )


def source_like_trials(
    repetitions: int = 5,
    *,
    warmup: int = 1,
    noise: float = 0.01,
    seed: int = 7,
    tweak: Tweak | None = None,
    brokers: Iterable[str] = ("kafka", "nats"),
    variants: Iterable[str] = ("before", "after"),
) -> list[TrialResult]:
    """Every trial of the worker_pool_256 matrix, interleaved; `tweak` edits metrics in place."""
    rng = random.Random(seed)
    trials: list[TrialResult] = []
    rounds = [(True, r) for r in range(1, warmup + 1)] + [
        (False, r) for r in range(1, repetitions + 1)
    ]
    for is_warmup, rep in rounds:
        for scenario in SCENARIOS:
            for broker in brokers:
                for variant in variants:
                    metrics = metrics_for(broker, variant, scenario, rng, noise)
                    if tweak is not None and not is_warmup:
                        tweak(broker, variant, scenario, rep, metrics)
                    trials.append(
                        make_trial(
                            broker,
                            variant,
                            scenario,
                            rep,
                            metrics,
                            index=len(trials),
                            warmup=is_warmup,
                        )
                    )
    return trials


def environment(**changes: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "exprun": "0.1.0",
        "python": "3.11.9",
        "clients": {"confluent-kafka": "2.6.0", "librdkafka": "2.6.0", "nats-py": "2.9.0"},
        "brokers": {
            "kafka": {"type": "kafka", "version": "4.1.0", "embedded": True},
            "nats": {"type": "nats", "version": "2.11.0", "embedded": True},
        },
        "machine": {"cpu": "Synthetic CPU @ 3.0GHz", "cpu_count": 2, "memory_gb": 7.8},
    }
    for key, value in changes.items():
        *path, last = key.split(".")
        node = env
        for part in path:
            node = node[part]
        node[last] = value
    return env


def write_run_folder(
    path: Path,
    trials: list[TrialResult],
    *,
    env: dict[str, Any] | None = None,
    complete: bool = True,
    spec: Path = SPEC,
) -> Path:
    """A run folder as `exprun run` leaves it: spec copy, trials.jsonl, run.json, environment."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(spec, path / "spec.yaml")
    (path / "trials.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in trials))
    run = {
        "schema_version": 1,
        "spec_name": "worker-pool-256",
        "spec_path": str(spec),
        "spec_sha256": "0" * 64,
        "started_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:03:00.000Z" if complete else None,
        "complete": complete,
        "interrupted": not complete,
        "planned_trials": 96,
    }
    (path / "run.json").write_text(json.dumps(run))
    (path / "environment.json").write_text(json.dumps(env or environment()))
    return path


def small_spec(**changes: Any) -> Experiment:
    """A one-broker (NATS) before/after spec; keyword arguments replace top-level keys."""
    data: dict[str, Any] = {
        "version": 1,
        "name": "small",
        "brokers": {
            "nats": {
                "type": "nats",
                "workers": 48,
                "stream": {"max_msgs": 100000, "max_bytes": "100MB", "discard": "old"},
            }
        },
        "scenarios": {"Low": {"messages": 500}, "Medium": {"messages": 2000}},
        "variants": {"before": {}, "after": {"brokers": {"nats": {"workers": 256}}}},
        "baseline": "before",
        "repetitions": 5,
        "warmup": 0,
    }
    data.update(changes)
    return Experiment.model_validate(data)


def cell_trials(
    variant: str,
    scenario: str,
    throughputs: Iterable[float],
    *,
    broker: str = "nats",
    **metrics: Any,
) -> list[TrialResult]:
    """Measured trials of one cell, one per throughput value, with 100% delivery."""
    messages = SCENARIOS.get(scenario, 1000)
    out = []
    for rep, throughput in enumerate(throughputs, 1):
        values: dict[str, Any] = {
            "sent": messages,
            "acked": messages,
            "received": messages,
            "success_rate": 100.0,
            "throughput": throughput,
            "latency_ms": {"p50": 5.0, "p99": 9.0, "mean": 5.5, "count": messages},
            "duration_s": messages / throughput,
            "leaked_threads": 0,
            "lingering_threads": 0,
        }
        values.update(metrics)
        out.append(make_trial(broker, variant, scenario, rep, values))
    return out
