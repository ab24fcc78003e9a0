"""Load a spec file: YAML with positions, strict validation, located errors."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
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
from schemas.spec import Experiment, reference_problems

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

    def sorted_issues(self) -> list[SpecIssue]:
        """Every distinct issue, in the order of their places in the file."""
        unique = list(dict.fromkeys(self.issues))
        return sorted(unique, key=lambda issue: (issue.line, issue.column))

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
    """Parse and validate a spec; raise SpecError listing every located problem.

    Field errors, reference problems, unknown reporters and librdkafka's verdict on the Kafka
    properties are all collected in one pass, so one run of `exprun validate` shows them all.
    """
    path = Path(path)
    document = _Document(path)
    text = _read_text(path, document)
    if text is not None:
        _parse(text, document)
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
            cells = resolve_cells(spec, document.data)
        except ResolutionError as error:
            for problem in error.problems:
                document.issue(problem.loc, problem.message, problem.at_key)
    _check_kafka_properties(document)
    if document.issues or spec is None:
        raise SpecError(document.sorted_issues())
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


def _check_reporters(document: _Document) -> None:
    reports = lookup(document.data, "reports")
    known = reporter_names()
    for index, name in enumerate(reports if isinstance(reports, list) else ()):
        if isinstance(name, str) and name not in known:
            document.issue(
                ("reports", index), f"unknown reporter {name!r} (installed: {', '.join(known)})"
            )


def _check_kafka_properties(document: _Document) -> None:
    """Ask librdkafka about the producer/consumer properties as each variant merges them."""
    checked: set[tuple[str, str]] = set()
    for broker_loc, role, properties, origin in _kafka_properties(document.data):
        key = (role, repr(sorted(properties.items())))
        if key in checked:
            continue
        checked.add(key)
        found = _find_bad_property(role, properties)
        if found is None:
            continue
        prop, message = found
        if prop is None:
            document.issue((*broker_loc, role), f"librdkafka: {message}")
        else:
            document.issue((*origin[prop], role, prop), f"librdkafka: {message}", at_key=True)


def _kafka_properties(data: Any) -> Iterator[tuple[Loc, Role, dict[str, object], dict[str, Loc]]]:
    """Each Kafka broker's properties per role as each variant merges them, as written.

    Works on the data as written, so that a field error elsewhere does not hide these; values
    that are not scalars are field errors of their own and are left out. Yields the broker's
    place, the role, the merged properties and, per property, the broker or variant that set it.
    """
    brokers = lookup(data, "brokers")
    variants = lookup(data, "variants")
    names = [str(v) for v in variants] if isinstance(variants, Mapping) else []
    for name, broker in brokers.items() if isinstance(brokers, Mapping) else ():
        if not isinstance(broker, Mapping) or broker.get("type") != "kafka":
            continue
        for variant in names or [""]:
            sources: list[tuple[Loc, Any]] = [(("brokers", name), broker)]
            override = lookup(data, "variants", variant, "brokers", name) if variant else None
            if override is not None:
                sources.append((("variants", variant, "brokers", name), override))
            for role in ROLES:
                properties: dict[str, object] = {}
                origin: dict[str, Loc] = {}
                for loc, settings in sources:
                    written = lookup(settings, role)
                    for prop, value in written.items() if isinstance(written, Mapping) else ():
                        if isinstance(value, str | int | float):
                            properties[str(prop)], origin[str(prop)] = value, loc
                yield ("brokers", name), role, properties, origin


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
