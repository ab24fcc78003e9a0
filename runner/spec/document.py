"""A spec file read as YAML into plain data, with the line and column of every key and value.

Problems found at any later stage are issued here, at the place they were written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.errors import SpecIssue
from runner.redaction import redact
from schemas.problems import Loc

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_NODES = 100_000
_PLAIN_PART = re.compile(r"[\w.+-]+")


class _TooLarge(Exception):
    pass


@dataclass
class SpecDocument:
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
        message = redact(message, self.secrets)
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


def read_document(path: Path) -> tuple[SpecDocument, str | None]:
    """The document, and the text as written (None when it could not be read or parsed)."""
    document = SpecDocument(path)
    text = _read_text(path, document)
    if text is not None:
        _parse(text, document)
    return document, text


def _read_text(path: Path, document: SpecDocument) -> str | None:
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


def _parse(text: str, document: SpecDocument) -> None:
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


def _build(node: Node, loc: Loc, loader: yaml.SafeLoader, document: SpecDocument) -> Any:
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
    node: MappingNode, loc: Loc, loader: yaml.SafeLoader, document: SpecDocument
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


def _expand_env(value: str, loc: Loc, document: SpecDocument) -> str:
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
