"""Load a spec file: YAML with positions, strict validation, located errors."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.drivers.kafka_config import ROLES, Role, property_problem
from runner.errors import SpecError, SpecIssue
from schemas.problems import Loc, problems_from
from schemas.resolve import CellConfig, ResolutionError, lookup, resolve_cells
from schemas.spec import Experiment, KafkaBroker

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MERGE_TAG = "tag:yaml.org,2002:merge"
REPORTER_GROUP = "exprun.reporters"
MAX_NODES = 100_000
_PLAIN_PART = re.compile(r"[\w.+-]+")


class _TooLarge(Exception):
    pass


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


@dataclass
class _Document:
    """YAML turned into plain data, with where each key and value was written."""

    path: Path
    data: Any = None
    key_marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    value_marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    issues: list[SpecIssue] = field(default_factory=list)
    nodes: int = 0

    def issue(self, loc: Loc, message: str, at_key: bool = False) -> None:
        line, column = self.mark(loc, at_key)
        path = ".".join(map(_path_part, loc)) or "(document)"
        for secret in self.secrets:
            message = message.replace(secret, "***")
        self.issues.append(SpecIssue(str(self.path), line, column, path, message))

    def issue_at(self, position: tuple[int, int], message: str) -> None:
        self.issues.append(SpecIssue(str(self.path), *position, "(document)", message))

    def mark(self, loc: Loc, at_key: bool) -> tuple[int, int]:
        for cut in range(len(loc), -1, -1):
            prefix = loc[:cut]
            preferred = (self.key_marks, self.value_marks)
            for marks in preferred if at_key or cut < len(loc) else preferred[::-1]:
                if prefix in marks:
                    return marks[prefix]
        return (1, 1)


def load_spec(path: str | Path) -> LoadedSpec:
    """Parse and validate a spec; raise SpecError listing every located problem."""
    path = Path(path)
    document = _Document(path)
    text = _read_text(path, document)
    if text is not None:
        _parse(text, document)
    if document.issues:
        raise SpecError(document.issues)
    try:
        spec = Experiment.model_validate(document.data, context={"defer_reference_checks": True})
    except ValidationError as error:
        for problem in problems_from(error, Experiment, document.data):
            document.issue(problem.loc, problem.message, problem.at_key)
        raise SpecError(document.issues) from None
    for loc, message in spec.reference_problems():
        document.issue(loc, message)
    _check_reporters(spec, document)
    cells: list[CellConfig] = []
    if not document.issues:
        try:
            cells = resolve_cells(spec, document.data)
        except ResolutionError as error:
            for problem in error.problems:
                document.issue(problem.loc, problem.message, problem.at_key)
    _check_kafka_properties(cells, document)
    if document.issues:
        raise SpecError(document.issues)
    assert text is not None
    return LoadedSpec(path, text, spec, document.data, cells, frozenset(document.secrets))


def _read_text(path: Path, document: _Document) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as error:
        document.issue((), f"cannot read the spec: {error.strerror or error}")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        document.issue_at((line, column), "not UTF-8 text (binary file?)")
        return None
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        document.issue((), "the spec is empty")
        return None
    return text


def _parse(text: str, document: _Document) -> None:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:
        message = f"YAML: character #x{error.character:04x} is not allowed ({error.reason})"
        document.issue_at(_reader_position(text, error), message)
        return
    try:
        root = loader.get_single_node()
        if root is None:
            document.issue((), "the spec is empty")
            return
        if not isinstance(root, MappingNode):
            document.issue_at(_position(root), "the spec must be a mapping of keys")
            return
        document.data = _build(root, (), loader, document)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        position = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = ": ".join(filter(None, [error.context, error.problem])) or "invalid"
        document.issue_at(position, f"YAML: {reason}")
    except yaml.YAMLError as error:
        document.issue_at((1, 1), f"YAML: {str(error).splitlines()[0]}")
    except (RecursionError, _TooLarge):
        document.issue_at(
            (1, 1), f"the spec nests or expands too deeply (over {MAX_NODES:,} values)"
        )
    finally:
        loader.dispose()


def _reader_position(text: str, error: yaml.YAMLError) -> tuple[int, int]:
    position = getattr(error, "position", 0) or 0
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def _build(node: Node, loc: Loc, loader: yaml.SafeLoader, document: _Document) -> Any:
    # Aliases share nodes, so a few lines can expand exponentially ("billion laughs").
    document.nodes += 1
    if document.nodes > MAX_NODES:
        raise _TooLarge
    if isinstance(node, MappingNode):
        return _build_mapping(node, loc, loader, document)
    if isinstance(node, SequenceNode):
        return [_build(item, (*loc, i), loader, document) for i, item in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str):
        return _expand_env(value, loc, document)
    return value


def _build_mapping(
    node: MappingNode, loc: Loc, loader: yaml.SafeLoader, document: _Document
) -> dict[str, Any]:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = _key(key_node)
        if key in seen:
            document.key_marks[(*loc, key)] = _position(key_node)
            document.issue(
                (*loc, key),
                f"duplicate key {key!r} (first written on line {seen[key]}); YAML would keep "
                "only the last one",
                at_key=True,
            )
        seen[key] = _position(key_node)[0]
    loader.flatten_mapping(node)  # expands `<<: *anchor` merges; explicit keys win
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = _key(key_node)
        here = (*loc, key)
        document.key_marks[here] = _position(key_node)
        document.value_marks[here] = _position(value_node)
        result[key] = _build(value_node, here, loader, document)
    return result


def _position(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _path_part(part: str | int) -> str:
    text = str(part)
    return text if _PLAIN_PART.fullmatch(text) else repr(text)


def _key(node: Node) -> str:
    # The key as written: YAML 1.1 would turn `on:` into True and `1:` into 1.
    if isinstance(node, ScalarNode):
        return str(node.value)
    raise yaml.constructor.ConstructorError(
        None, None, "a mapping key must be a plain name", node.start_mark
    )


def _expand_env(value: str, loc: Loc, document: _Document) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            document.issue(loc, f"environment variable {name} is not set")
            return ""
        secret = os.environ[name]
        if secret:
            document.secrets.add(secret)
        return secret

    return _ENV_REFERENCE.sub(substitute, value)


def reporter_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=REPORTER_GROUP))


def _check_reporters(spec: Experiment, document: _Document) -> None:
    known = reporter_names()
    for index, name in enumerate(spec.reports):
        if name not in known:
            document.issue(
                ("reports", index), f"unknown reporter {name!r} (installed: {', '.join(known)})"
            )


def _check_kafka_properties(cells: list[CellConfig], document: _Document) -> None:
    """Ask librdkafka about the producer/consumer properties as each variant merges them."""
    checked: set[tuple[str, str]] = set()
    for config in cells:
        if not isinstance(config.broker, KafkaBroker):
            continue
        name, variant = config.cell.broker, config.cell.variant
        for role in ROLES:
            properties: Mapping[str, object] = getattr(config.broker, role)
            key = (role, repr(sorted(properties.items())))
            if key in checked:
                continue
            checked.add(key)
            found = _find_bad_property(role, properties)
            if found is None:
                continue
            prop, message = found
            override = lookup(document.data, "variants", variant, "brokers", name, role) or {}
            base: Loc = (
                ("variants", variant, "brokers", name) if prop in override else ("brokers", name)
            )
            loc = (*base, role, prop) if prop is not None else (*base, role)
            document.issue(loc, f"librdkafka: {message}", at_key=prop is not None)


def _find_bad_property(
    role: Role, properties: Mapping[str, object]
) -> tuple[str | None, str] | None:
    problem = property_problem(role, properties)
    if problem is None or problem[0] in properties:
        return problem
    # librdkafka names a property by its canonical name (acks -> request.required.acks).
    for name, value in properties.items():
        alone = property_problem(role, {name: value})
        if alone is not None:
            return name, alone[1]
    return problem
