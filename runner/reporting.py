"""Reports of a run folder: analyse its trials, run the reporter plugins, write their files."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from reporters.base import Reporter, installed_reporters
from reporters.markdown import render_summary
from runner.analysis.analyse import analyse
from runner.errors import BadInputError, ExprunError, SpecError
from runner.files import write_atomically
from runner.run_folder import ENVIRONMENT_FILE, RUN_FILE, RunFolder
from runner.spec.loader import LoadedSpec, load_spec
from runner.versions import package_version
from schemas.report import REPORT_SCHEMA_VERSION, Report

RESULTS_FILE = "results.json"
ALL_FORMATS = "all"


def _load_run_spec(folder: RunFolder) -> LoadedSpec:
    if not folder.spec_path.is_file():
        raise BadInputError(f"{folder.path}: no spec.yaml (is this a run folder?)")
    try:
        return load_spec(folder.spec_path)
    except SpecError as error:
        first = error.issues[0] if error.issues else "invalid"
        hint = ""
        if any("environment variable" in issue.message for issue in error.issues):
            hint = " (set the variables the spec references to regenerate its reports)"
        raise BadInputError(f"the run's spec copy does not load: {first}{hint}") from None


def analyse_run(run_dir: Path) -> Report:
    """The Report of a run folder, from spec.yaml and trials.jsonl (run.json and
    environment.json are used when present)."""
    if not run_dir.is_dir():
        raise BadInputError(f"{run_dir}: no such run folder")
    folder = RunFolder(run_dir)
    loaded = _load_run_spec(folder)
    trials = folder.trials()
    run = folder.info() if (run_dir / RUN_FILE).is_file() else None
    environment = folder.environment() if (run_dir / ENVIRONMENT_FILE).is_file() else {}
    return analyse(
        loaded.spec,
        trials,
        environment,
        run,
        cells=loaded.cells,
        spec_sha256=run.spec_sha256 if run else loaded.digest,
        secrets=loaded.secrets,
        exprun_version=package_version("exprun"),
    )


def _reporter(entry: EntryPoint) -> Reporter:
    try:
        reporter = entry.load()()
    except Exception as error:  # a broken third-party plugin must not look like our crash
        raise ExprunError(
            f"reporter {entry.name!r} ({entry.value}) failed to load: {error}"
        ) from None
    if not isinstance(reporter, Reporter):
        raise ExprunError(f"reporter {entry.name!r} ({entry.value}) has no render(report)")
    return reporter


def choose_formats(formats: Sequence[str]) -> list[EntryPoint]:
    """Entry points of the named reporters ("all" = every installed one)."""
    installed = installed_reporters()
    if ALL_FORMATS in formats:
        return [installed[name] for name in sorted(installed)]
    unknown = [name for name in formats if name not in installed]
    if unknown:
        raise BadInputError(
            f"unknown report format {', '.join(map(repr, unknown))} "
            f"(installed: {', '.join(sorted(installed))})"
        )
    return [installed[name] for name in dict.fromkeys(formats)]


def _safe_name(reporter: str, name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        raise ExprunError(f"reporter {reporter!r} wants to write outside the run folder: {name!r}")
    return name


def write_reports(
    run_dir: Path,
    formats: list[str] | None = None,
    *,
    announce: Callable[[Path], None] | None = None,
) -> Report:
    """Analyse the run folder and write the chosen reports into it (default: the spec's).

    Raises BadInputError for a missing or broken run folder and for unknown formats.
    """
    run_dir = Path(run_dir)
    report = analyse_run(run_dir)
    chosen = formats if formats is not None else list(report.spec.document.get("reports", []))
    for entry in choose_formats(chosen):
        reporter = _reporter(entry)
        for name, content in reporter.render(report).items():
            target = run_dir / _safe_name(entry.name, name)
            try:
                write_atomically(target, content)
            except OSError as error:
                raise ExprunError(f"cannot write {target}: {error.strerror or error}") from None
            if announce is not None:
                announce(target)
    return report


def markdown_summary(report: Report) -> str:
    """The short Markdown printed at the end of a run."""
    return render_summary(report)


def load_report(path: Path) -> Report:
    """A run's Report from a run folder (recomputed from its trials) or a results.json."""
    path = Path(path)
    if path.is_dir():
        if (path / "trials.jsonl").is_file():
            return analyse_run(path)
        if (path / RESULTS_FILE).is_file():
            return _read_results(path / RESULTS_FILE)
        raise BadInputError(f"{path}: neither trials.jsonl nor {RESULTS_FILE} (not a run folder?)")
    if path.is_file():
        return _read_results(path)
    raise BadInputError(f"{path}: no such run folder or results file")


def _read_results(path: Path) -> Report:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(f"{path}: not a readable results.json: {error}") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: not an exprun results.json (expected an object)")
    found = data.get("schema_version")
    if found != REPORT_SCHEMA_VERSION:
        raise BadInputError(
            f"{path}: results schema_version {found!r}; this exprun reads {REPORT_SCHEMA_VERSION}"
        )
    try:
        return Report.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        raise BadInputError(
            f"{path}: not an exprun results.json: {where}: {problem['msg']}"
        ) from None
