"""The trend page, opened in a real browser (headless Chromium): a chart per metric x cell, the
change points marked, each point's commit, label, time and value on hover, nothing fetched."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from exprun_process import exprun
from runs import synthetic_records

from runner.history.location import StoreLocation, parse_store
from runner.history.store import open_store

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("the trend page test needs Chromium: apt-get install chromium")


def rendered_dom(page: Path, tmp_path: Path) -> str:
    """The page's DOM as Chromium built it, offline (any fetch would fail)."""
    done = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--proxy-server=127.0.0.1:9",  # nothing may be fetched: a fetch would fail
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.timeout(180)
def test_the_trend_page_shows_each_series_its_step_and_each_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store = open_store(StoreLocation(parse_store(url, "test"), explicit=True))
    for record in synthetic_records([1000.0] * 12 + [850.0] * 6):
        store.record(record)
    store.close()
    page = tmp_path / "trend.html"
    done = exprun("history", "--store", url, "--html", str(page), tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']https?://""", html)  # self-contained
    dom = rendered_dom(page, tmp_path)
    charts = re.findall(r'<svg class="chart".*?</svg>', dom, re.S)
    assert len(charts) == 2  # throughput and latency p99 of the one cell
    throughput = next(c for c in charts if "Throughput" in c)
    assert throughput.count('class="point"') == 18
    [change] = re.findall(r'<line class="change".*?</line>', throughput, re.S)
    assert 'stroke="#b3261e"' in change and "regression -15" in change
    tips = re.findall(r"<title>(.*?)</title>", throughput, re.S)
    assert any("commit rev12" in tip and "2026-01-01T00:00:12.000Z" in tip for tip in tips)
    assert any("nats/before/Low: " in tip and "msg/s" in tip for tip in tips)
    assert "Change points" in dom and "regression" in dom
