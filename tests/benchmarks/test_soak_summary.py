"""The soak summary's arithmetic on a synthetic hour of windows (no brokers)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_rss_every_five_minutes_and_its_growth_per_million(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of the repo, not installed
    soak = importlib.import_module("benchmarks.soak")
    seconds = 3600
    # 10,000 messages a second; 60 MB after start-up, growing 0.2 MB per million messages.
    series = {
        "start_s": [float(s) for s in range(seconds)],
        "seconds": [1.0] * seconds,
        "published": [10_000] * seconds,
        "loadgen_rss_mb": [
            (40.0 if s < 60 else 60.0 + 0.2 * s * 10_000 / 1e6) for s in range(seconds)
        ],
    }
    course = soak.rss_course(series, 300.0)
    assert [s for s, _, _ in course] == [300 * k for k in range(1, 13)]
    assert course[-1][2] == 36_000_000 and course[0][1] == pytest.approx(60.0 + 0.2 * 2.99)
    assert soak.growth_per_million(course) == pytest.approx(0.2, rel=1e-6)
