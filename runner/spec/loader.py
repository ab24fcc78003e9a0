"""Load a spec: read it with positions, then every check in one pass, each problem located."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reporters.base import installed_reporters
from runner.errors import SpecError
from runner.spec.document import SpecDocument, read_document
from runner.spec.kafka_properties import kafka_property_problems
from runner.spec.secret_fields import written_secrets
from runner.spec.server_settings import server_setting_problems
from schemas.problems import problems_from
from schemas.resolve import CellConfig, ResolutionError, lookup, resolve_cells
from schemas.spec import Experiment, reference_problems


@dataclass(frozen=True)
class LoadedSpec:
    path: Path
    text: str  # as written: `${ENV}` references unexpanded, so it is safe to copy
    spec: Experiment
    raw: dict[str, Any]
    cells: list[CellConfig]
    secrets: frozenset[str]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_spec(path: str | Path) -> LoadedSpec:
    """Parse and validate a spec; raise SpecError listing every located problem.

    Field errors, reference problems, unknown reporters and librdkafka's verdict on the Kafka
    properties are all collected in one pass, so one run of `exprun validate` shows them all.
    """
    path = Path(path)
    document, text = read_document(path)
    if document.issues:
        raise SpecError(document.issues)
    spec: Experiment | None = None
    try:
        spec = Experiment.model_validate(document.data, context={"defer_reference_checks": True})
    except ValidationError as error:
        for problem in problems_from(error, Experiment, document.data):
            document.issue(problem.loc, problem.message, problem.at_key)
    for loc, message in reference_problems(document.data):
        document.issue(loc, message)
    _check_reporters(document)
    cells: list[CellConfig] = []
    if spec is not None and not document.issues:
        try:
            cells = resolve_cells(spec, document.data, base_dir=path.resolve().parent)
        except ResolutionError as error:
            for problem in error.problems:
                document.issue(problem.loc, problem.message, problem.at_key)
    for loc, message, at_key in kafka_property_problems(document.data):
        document.issue(loc, message, at_key)
    for loc, message in server_setting_problems(document.data):
        document.issue(loc, message, at_key=True)
    for loc, message in written_secrets(document.data, frozenset(document.secrets)):
        document.issue(loc, message)
    if document.issues or spec is None:
        raise SpecError(document.sorted_issues())
    assert text is not None
    return LoadedSpec(path, text, spec, document.data, cells, frozenset(document.secrets))


def _check_reporters(document: SpecDocument) -> None:
    reports = lookup(document.data, "reports")
    known = sorted(installed_reporters())
    for index, name in enumerate(reports if isinstance(reports, list) else ()):
        if isinstance(name, str) and name not in known:
            document.issue(
                ("reports", index), f"unknown reporter {name!r} (installed: {', '.join(known)})"
            )
