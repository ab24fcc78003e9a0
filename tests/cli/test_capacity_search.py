"""A capacity search end to end: it converges on a rate limit and finds it again."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from exprun_process import exprun, no_leftovers, read_jsonl

pytestmark = pytest.mark.integration

# One handler busy 2 ms per message reads at most ~450 msg/s: above that a queue builds and
# p99 climbs through the budget within the 2 s of a step.
SPEC = """\
version: 1
name: search
brokers:
  nats: {type: nats, workers: 1, stream: {storage: memory}}
defaults: {message_size: 512B, processing_time: 2ms, settle_time: 100ms, drain_timeout: 10s}
scenarios:
  Capacity:
    duration: 2s
    search: {rate: 100/s..2000/s, until: "latency_p99_ms <= 250", steps: 6}
repetitions: 2
warmup: 0
reports: [markdown, json, html]
"""
RESOLUTION = (2000 / 100) ** (1 / 2 ** (6 - 2))  # bounds, then 4 bisections


@pytest.mark.timeout(300)
def test_search_converges_on_the_limit_and_finds_it_again(tmp_path: Path) -> None:
    spec = tmp_path / "search.yaml"
    spec.write_text(SPEC)
    done = exprun("run", str(spec), "--out", str(tmp_path / "run"), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(tmp_path / "run" / "trials.jsonl")
    results = [r for r in records if r["search"]["step"] is None]
    steps = [r for r in records if r["search"]["step"] is not None]
    assert len(results) == 2 and 2 * 3 <= len(steps) <= 2 * 6
    capacities = []
    for result in results:
        search = result["search"]
        mine = [s for s in steps if s["repetition"] == result["repetition"]]
        assert [s["search"]["step"] for s in mine] == list(range(1, len(mine) + 1))
        assert search["steps"] == [
            {k: s["search"][k] for k in ("rate", "passed", "reason")} for s in mine
        ]
        assert mine[0]["search"]["rate"] == 100 and mine[0]["search"]["passed"] is True
        assert mine[1]["search"]["rate"] == 2000 and mine[1]["search"]["passed"] is False
        assert "latency_p99_ms" in mine[1]["search"]["reason"]
        # The capacity is the highest rate that held, and its record carries that step's figures.
        held = [s["search"]["rate"] for s in mine if s["search"]["passed"]]
        assert result["metrics"]["capacity"] == search["rate"] == max(held)
        assert result["metrics"]["latency_ms"]["p99"] <= 250
        # Every trial of the search offered the rate it was asked for, or failed the step.
        for step in mine:
            assert step["config"]["workload"]["rate"] == step["search"]["rate"]
        capacities.append(search["rate"])
    assert all(200 <= c <= 1000 for c in capacities), capacities
    # Twice the same answer, within the steps' resolution (adjacent intervals at worst).
    assert abs(math.log(capacities[0] / capacities[1])) <= 2 * math.log(RESOLUTION) + 1e-9
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    [cell] = report["cells"]
    assert cell["measured"] == 2 and cell["metrics"]["capacity"]["n"] == 2
    assert "vs offered rate" in (tmp_path / "run" / "report.html").read_text()
    assert "capacity search 100/s..2000/s" in (tmp_path / "run" / "report.md").read_text()
    assert no_leftovers(tmp_path) == []
