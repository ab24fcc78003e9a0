"""`exprun report` on a committed run folder writes exactly the committed reports.

The run folder in tests/golden/worker_pool_run is a real run (worker_pool_256.yaml, scenarios
Low, Medium and High, embedded brokers). Its reports were written by `exprun report`; a change
that alters any byte of them is a change of the product's output, to be made on purpose:
regenerate with `exprun report tests/golden/worker_pool_run --format all` and review the diff.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runner.reporting import write_reports

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "worker_pool_run"
INPUTS = ("spec.yaml", "trials.jsonl", "environment.json", "run.json")
OUTPUTS = (
    "report.md",
    "report.html",
    "results.json",
    "trials.csv",
    "cells.csv",
    "comparisons.csv",
)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("golden")
    for name in INPUTS:
        shutil.copy(GOLDEN / name, folder / name)
    write_reports(folder, ["all"])
    return folder


@pytest.mark.parametrize("name", OUTPUTS)
def test_report_is_byte_identical(regenerated: Path, name: str) -> None:
    expected = (GOLDEN / name).read_bytes()
    actual = (regenerated / name).read_bytes()
    if actual != expected:
        old, new = expected.decode().splitlines(), actual.decode().splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
            min(len(old), len(new)),
        )
        pytest.fail(
            f"{name} differs from the committed one from line {first + 1}:\n"
            f"committed: {old[first] if first < len(old) else '(end)'}\n"
            f"now:       {new[first] if first < len(new) else '(end)'}"
        )
