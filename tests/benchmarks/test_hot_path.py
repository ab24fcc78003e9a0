"""The hot-path benchmark runs both sides of each path to the end, exactly (no brokers)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_each_side_handles_every_message_and_a_figure_comes_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of the repo, not installed
    hot_path = importlib.import_module("benchmarks.hot_path")
    # Each side asserts its own books (every message received, or acked) before it returns.
    figures = hot_path.measure(messages=3 * hot_path.WINDOW, rounds=1)
    assert set(figures) == {"consumer", "producer", "kafka_reports"}
    for sides in figures.values():
        assert sides["exprun"] > 0 and sides["bare"] > 0
        assert sides["exprun_extra_ns"] == sides["exprun"] - sides["bare"]
