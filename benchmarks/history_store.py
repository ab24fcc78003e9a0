"""The results store at scale: recording a run, and reading a big store back.

A store of RUNS runs x CELLS cells x METRICS metrics (5 trial values per point) is written
straight into SQLite through the store's own tables, then read the way `exprun history` reads
it: one series, `--changes` over every series of the spec, and the trend page of the spec.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reporters.trend import render_trend_page
from runner.history.location import StoreLocation, parse_store
from runner.history.record import run_record
from runner.history.series import SeriesFilter, load_history, matching_series
from runner.history.store import Store, open_store, points, runs, series
from runner.reporting import analyse_run

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "worker_pool_run"
SPEC = "big"
TESTBED = "bench"
METRIC_NAMES = (
    "throughput",
    "latency_p99_ms",
    "latency_p50_ms",
    "publish_throughput",
    "success_rate",
    "duration_s",
    "memory_delta_mb",
    "threads_peak",
    "rss_peak_mb",
    "broker_cpu_percent",
    "latency_p90_ms",
    "latency_max_ms",
    "latency_mean_ms",
    "publish_latency_p50_ms",
    "publish_latency_p99_ms",
    "publish_latency_max_ms",
    "broker_rss_mb",
    "lost",
    "duplicated",
    "publish_errors_total",
)


INSERT_POINT = (
    f"INSERT INTO {points.name} (series_pk, run_pk, started_at, median, ci_low, ci_high, n, "
    "trials, settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class StoreFigures:
    record_s: float = 0.0
    build_s: float = 0.0
    size_mb: float = 0.0
    series_query_s: float = 0.0
    changes_s: float = 0.0
    page_s: float = 0.0
    page_mb: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def _opened(path: Path) -> Store:
    return open_store(StoreLocation(parse_store(str(path), "benchmark"), explicit=True))


def record_seconds(folder: Path) -> float:
    """Recording the committed worker_pool_256 run (its Report analysed beforehand)."""
    report = analyse_run(GOLDEN)
    store = _opened(folder / "record.sqlite")
    try:
        started = time.perf_counter()
        store.record(run_record(report, str(GOLDEN)))
        return time.perf_counter() - started
    finally:
        store.close()


def build(store: Store, run_count: int, cells: int, metrics: int) -> None:
    """RUNS x CELLS x METRICS points, written in one transaction per 100 runs; the points'
    indexes are made again afterwards (a bulk load, not what recording a run costs)."""
    indexes = list(points.indexes)
    with store.engine.begin() as conn:
        for index in indexes:
            index.drop(conn)
    rng = random.Random(1)
    keys = [
        {
            "spec_name": SPEC,
            "testbed": TESTBED,
            "broker": "kafka" if cell % 2 else "nats",
            "variant": f"v{cell // 20}",
            "scenario": f"S{cell % 20}",
            "metric": METRIC_NAMES[metric],
        }
        for cell in range(cells)
        for metric in range(metrics)
    ]
    with store.engine.begin() as conn:
        conn.execute(series.insert(), keys)
        pks = list(conn.execute(series.select().with_only_columns(series.c.pk)).scalars())
    # Trial values drawn once and reused: drawing 20M sets would take longer than writing them.
    drawn = []
    for _ in range(997):
        trials = [round(1000 * (1 + rng.gauss(0, 0.03)), 3) for _ in range(5)]
        drawn.append((sorted(trials)[2], min(trials), max(trials), 5, json.dumps(trials), "s"))
    for first in range(0, run_count, 100):
        with store.engine.begin() as conn:
            for number in range(first, min(first + 100, run_count)):
                started = f"2026-{1 + number // 2000:02d}-01T{(number // 60) % 24:02d}:" + (
                    f"{number % 60:02d}:00.{number % 1000:03d}Z"
                )
                run_pk = conn.execute(
                    runs.insert()
                    .values(
                        run_key=f"{SPEC}@{started}#{number}",
                        spec_name=SPEC,
                        testbed=TESTBED,
                        started_at=started,
                        commit=f"rev{number}",
                    )
                    .returning(runs.c.pk)
                ).scalar_one()
                offset = number * 7
                rows = [
                    (pk, run_pk, started, *drawn[(offset + i) % len(drawn)])
                    for i, pk in enumerate(pks)
                ]
                # The driver's own executemany: the building, not the store, is not measured.
                driver = conn.connection.driver_connection
                assert driver is not None
                driver.executemany(INSERT_POINT, rows)
    with store.engine.begin() as conn:
        for index in indexes:
            index.create(conn)


def measure(run_count: int, cells: int, metrics: int, last: int = 100) -> StoreFigures:
    figures = StoreFigures()
    with tempfile.TemporaryDirectory(prefix="exprun-store-bench-") as folder:
        path = Path(folder)
        figures.record_s = record_seconds(path)
        store = _opened(path / "big.sqlite")
        try:
            started = time.perf_counter()
            build(store, run_count, cells, metrics)
            figures.build_s = time.perf_counter() - started
            figures.size_mb = (path / "big.sqlite").stat().st_size / 1e6
            [key] = matching_series(
                store,
                SeriesFilter(SPEC, None, "nats", "v0", "S0", ("throughput",)),
            )
            started = time.perf_counter()
            store.points(key, last)
            figures.series_query_s = time.perf_counter() - started
            started = time.perf_counter()
            everything = matching_series(store, SeriesFilter(spec_name=SPEC))
            load_history(store, everything, last=last)
            figures.changes_s = time.perf_counter() - started
            started = time.perf_counter()
            headline = [k for k in everything if k.metric in ("throughput", "latency_p99_ms")]
            page = render_trend_page(load_history(store, headline, last=last))
            figures.page_s = time.perf_counter() - started
            figures.page_mb = len(page.encode()) / 1e6
        finally:
            store.close()
    figures.details = {
        "runs": run_count,
        "cells": cells,
        "metrics": metrics,
        "series": cells * metrics,
        "last": last,
        "build_s": round(figures.build_s, 1),
        "store_mb": round(figures.size_mb, 1),
        "page_mb": round(figures.page_mb, 2),
    }
    return figures
