"""The run folder on disk: trials.jsonl read back, even after a crash cut its last line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from synthetic_runs import make_trial

from runner.errors import BadInputError
from runner.run_folder import read_trials, rewrite_trials, write_json


def trials(count: int) -> list[str]:
    return [
        make_trial("nats", "a", "S", rep, {"sent": 10}, index=rep).model_dump_json()
        for rep in range(1, count + 1)
    ]


def test_a_cut_last_line_is_dropped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    lines = trials(3)
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    with pytest.warns(UserWarning, match=r"trials.jsonl:3: last line is incomplete"):
        read = read_trials(path)
    assert [t.repetition for t in read] == [1, 2]


def test_a_broken_line_before_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    lines = trials(3)
    path.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
    with pytest.raises(BadInputError, match=r"trials.jsonl:2: not a trial result"):
        read_trials(path)


def test_complete_file_reads_without_warning(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    path.write_text("\n".join(trials(2)) + "\n\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_trials(path)) == 2


def test_rewrite_and_write_json_replace_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    path.write_text("\n".join(trials(3)) + "\n" + '{"cut')
    with pytest.warns(UserWarning):
        kept = read_trials(path)
    rewrite_trials(path, kept)
    assert path.read_text().endswith("\n") and len(read_trials(path)) == 3
    write_json(tmp_path / "run.json", {"complete": True})
    assert json.loads((tmp_path / "run.json").read_text()) == {"complete": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "trials.jsonl"]
