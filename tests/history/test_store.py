"""The results store, against an SQLite file and a real PostgreSQL server alike: record,
import, query, concurrent writers, the schema version; the CLI on top of it."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
from exprun_process import exprun
from runs import synthetic_records, synthetic_report
from sqlalchemy import update

from runner.history.location import StoreLocation, parse_store
from runner.history.record import run_record
from runner.history.series import SeriesFilter, gate, load_history, matching_series
from runner.history.store import SCHEMA_VERSION, StoreError, meta, open_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "worker_pool_run"


def opened(url: str):  # type: ignore[no-untyped-def]
    return open_store(StoreLocation(parse_store(url, "test"), explicit=True))


def test_a_run_is_recorded_once_with_every_cell_and_trial(store_url: str) -> None:
    store = opened(store_url)
    try:
        [record] = synthetic_records([1000.0])
        assert store.record(record) is True
        assert store.record(record) is False  # the same run again: nothing added
        [run] = store.runs()
        assert run.run_key == record.run.run_key and run.commit == "rev00"
        assert run.testbed == "Synthetic CPU @ 3.0GHz, 2 cores, 8 GB, unknown OS"
        [key] = matching_series(store, SeriesFilter(metrics=("throughput",)))
        assert (key.broker, key.variant, key.scenario) == ("nats", "before", "Low")
        [point] = store.points(key)
        figure = next(f for f in record.figures if f.metric == "throughput")
        assert point.median == pytest.approx(figure.median)
        assert point.trials == pytest.approx(figure.trials) and len(point.trials) == 5
        assert (point.ci_low, point.ci_high, point.n) == (figure.ci_low, figure.ci_high, 5)
        store.forget(run.run_key)
        assert store.runs() == [] and store.points(key) == []
    finally:
        store.close()


def test_a_planted_step_is_found_and_gates_while_a_flat_series_does_not(store_url: str) -> None:
    store = opened(store_url)
    try:
        # 20 runs at 1,000 msg/s, then 6 at 900: a 10% throughput regression (1% noise).
        for record in synthetic_records([1000.0] * 20 + [900.0] * 6):
            store.record(record)
        keys = matching_series(store, SeriesFilter(metrics=("throughput", "latency_p99_ms")))
        shown = load_history(store, keys)
        stepped = next(s for s in shown.series if s.metric == "throughput")
        [change] = stepped.changes
        assert change.index == 20 and change.regression
        assert change.run_after.endswith(SHA_SUFFIX) and change.commit_after == "rev20"
        assert change.change_pct == pytest.approx(-10, abs=1.5)
        assert change.p_value < 0.01
        flat = next(s for s in shown.series if s.metric == "latency_p99_ms")
        assert flat.changes == []  # the same 9 ms in every run
        findings, looked_at = gate(store, keys, threshold_pct=5, window=8)
        assert looked_at == 2 and [f.series.metric for f in findings] == ["throughput"]
        # The step lies before the newest 5 runs' window: not the gate's business any more.
        assert gate(store, keys, threshold_pct=5, window=5)[0] == []
        assert gate(store, keys, threshold_pct=15, window=8)[0] == []  # smaller than asked
    finally:
        store.close()


SHA_SUFFIX = "#" + "ab" * 8


def test_each_step_is_measured_between_its_neighbours(store_url: str) -> None:
    store = opened(store_url)
    try:
        for record in synthetic_records([1000.0] * 10 + [800.0] * 10 + [1200.0] * 10):
            store.record(record)
        keys = matching_series(store, SeriesFilter(metrics=("throughput",)))
        [series] = load_history(store, keys).series
        first, second = series.changes
        assert (first.index, second.index) == (10, 20)
        assert first.median_before == pytest.approx(1000, rel=0.02)
        assert first.median_after == pytest.approx(800, rel=0.02)  # not mixed with the 1,200s
        assert second.median_before == pytest.approx(800, rel=0.02)
        assert second.change_pct == pytest.approx(50, abs=3) and not second.regression
    finally:
        store.close()


def test_an_edited_spec_is_marked_on_the_series(store_url: str) -> None:
    store = opened(store_url)
    try:
        for day in range(8):
            report = synthetic_report(day, 1000.0, workers=48 if day < 4 else 256)
            store.record(run_record(report, None))
        [key] = matching_series(store, SeriesFilter(metrics=("throughput",)))
        marks = [p.settings_changed for p in store.points(key)]
        assert marks == [False] * 4 + [True] + [False] * 3
    finally:
        store.close()


def _record_in_another_process(url: str, days: list[int], start: float) -> None:
    store = opened(url)
    time.sleep(max(0.0, start - time.time()))
    for day in days:
        store.record(run_record(synthetic_report(day, 1000.0), None))
    store.close()


def test_runs_finishing_at_once_lose_nothing(store_url: str) -> None:
    opened(store_url).close()  # the tables exist; the writers race on the rows
    start = time.time() + 1.0
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_record_in_another_process, args=(store_url, days, start))
        for days in (list(range(0, 12)), list(range(6, 18)), list(range(12, 24)))
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    store = opened(store_url)
    try:
        assert len(store.runs()) == 24  # overlapping imports were recorded once each
        [key] = matching_series(store, SeriesFilter(metrics=("throughput",)))
        assert len(store.points(key)) == 24
    finally:
        store.close()


def test_a_store_written_by_a_newer_exprun_is_refused_not_misread(store_url: str) -> None:
    store = opened(store_url)
    with store.engine.begin() as conn:
        conn.execute(update(meta).values(value=str(SCHEMA_VERSION + 1)))
    store.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, written by a"):
        opened(store_url)


def test_history_commands_over_an_imported_run(store_url: str, tmp_path: Path) -> None:
    imported = exprun("history", "import", str(GOLDEN), "--store", store_url, tmp=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("recorded: worker-pool-256@2026-11-28T09:57:03.761Z")
    again = exprun("history", "--store", store_url, "import", str(GOLDEN), tmp=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("already recorded:")
    runs = exprun("history", "runs", "--store", store_url, tmp=tmp_path)
    assert runs.returncode == 0 and "1 run(s)" in runs.stdout and "worker-pool-256" in runs.stdout
    spec = str(ROOT / "experiments" / "worker_pool_256.yaml")
    table = exprun(
        "history", "--store", store_url, "--spec", spec, "--metric", "throughput",
        "--scenario", "Low", tmp=tmp_path,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "kafka/before/Low" in table.stdout and "5,831" in table.stdout
    wrong = exprun("history", "--store", store_url, "--metric", "thruput", tmp=tmp_path)
    assert wrong.returncode == 2 and "did you mean 'throughput'?" in wrong.stderr
    assert "Traceback" not in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    gate_run = exprun("history", "--store", store_url, "--fail-on-change", "5", tmp=tmp_path)
    assert gate_run.returncode == 0 and "no significant regression" in gate_run.stdout


@pytest.mark.timeout(60)
def test_stores_that_cannot_be_used_fail_in_one_line(tmp_path: Path) -> None:
    unknown = exprun("history", "--store", "mysql://me:secret@host/db", tmp=tmp_path)
    assert unknown.returncode == 2 and "unknown store scheme 'mysql'" in unknown.stderr
    assert "secret" not in unknown.stderr
    # Nothing listens there: PostgreSQL's refusal, in seconds, without the password.
    started = time.monotonic()
    down = exprun("history", "--store", "postgresql://me:s3cret@127.0.0.1:9/db", tmp=tmp_path)
    assert time.monotonic() - started < 10
    assert down.returncode == 3 and "Traceback" not in down.stderr
    assert "s3cret" not in down.stderr and "postgresql+psycopg://me:***@127.0.0.1:9/db" in (
        down.stderr
    )
