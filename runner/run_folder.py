"""A run's folder: the spec as written, every finished trial, the environment, run metadata.

Layout: `spec.yaml`, `trials.jsonl` (one TrialResult per line, appended and fsynced as each
trial finishes), `environment.json`, `run.json`, and the reports.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from runner.errors import BadInputError, ExprunError
from runner.files import write_atomically
from schemas.results import TrialResult

SPEC_FILE = "spec.yaml"
TRIALS_FILE = "trials.jsonl"
ENVIRONMENT_FILE = "environment.json"
RUN_FILE = "run.json"


class RunInfo(BaseModel):
    """run.json: what was run, from which spec, and whether it finished."""

    schema_version: int = 1
    spec_name: str
    spec_path: str
    spec_sha256: str
    started_at: str
    finished_at: str | None = None
    complete: bool = False
    interrupted: bool = False
    planned_trials: int
    seed: int | None = None
    filters: dict[str, Any] = {}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_run_dir(spec_name: str, root: Path = Path("results")) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / spec_name / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / spec_name / f"{stamp}-{suffix}"
    return path


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    write_atomically(path, json.dumps(data, indent=2) + "\n")


class TrialLog:
    """Appends finished trials to trials.jsonl, each flushed and fsynced at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] = path.open("a")

    def append(self, result: TrialResult) -> None:
        self._handle.write(result.model_dump_json() + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def rewrite_trials(path: Path, trials: list[TrialResult]) -> None:
    """Replace trials.jsonl atomically with exactly these trials."""
    write_atomically(path, "".join(t.model_dump_json() + "\n" for t in trials))


def read_trials(path: Path) -> list[TrialResult]:
    """Every complete line of trials.jsonl; a last line cut by a crash is skipped with a warning."""
    if not path.is_file():
        raise BadInputError(f"{path}: no such file (is this a run folder?)")
    lines = path.read_text().splitlines()
    trials: list[TrialResult] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            trials.append(TrialResult.model_validate_json(line))
        except ValidationError as error:
            if number == len(lines):
                warnings.warn(
                    f"{path}:{number}: last line is incomplete (cut by a crash?); ignored",
                    stacklevel=2,
                )
                break
            raise BadInputError(f"{path}:{number}: not a trial result: {error}") from None
    return trials


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def trials_path(self) -> Path:
        return self.path / TRIALS_FILE

    def info(self) -> RunInfo:
        return RunInfo.model_validate(self._json(RUN_FILE))

    def environment(self) -> dict[str, Any]:
        data = self._json(ENVIRONMENT_FILE)
        return data if isinstance(data, dict) else {}

    def trials(self) -> list[TrialResult]:
        return read_trials(self.trials_path)

    def _json(self, name: str) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise BadInputError(f"{self.path}: missing {name} (is this a run folder?)") from None
        except (OSError, json.JSONDecodeError) as error:
            raise BadInputError(f"{self.path / name}: unreadable: {error}") from None


def create_run_folder(path: Path, spec_text: str, info: RunInfo) -> RunFolder:
    """Make the folder and write the spec copy and run.json, before any trial runs."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / SPEC_FILE).write_text(spec_text)
        write_json(path / RUN_FILE, info.model_dump(mode="json"))
    except OSError as error:
        raise ExprunError(
            f"cannot write the run folder {path}: {error.strerror or error}"
        ) from None
    return RunFolder(path)
