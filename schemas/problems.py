"""Turn pydantic errors into located, human problems (path into the YAML, one message)."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str
    # An unknown key is reported at the key itself rather than at its value.
    at_key: bool = False

    @property
    def path(self) -> str:
        return ".".join(str(part) for part in self.loc) or "(document)"


def problems_from(error: ValidationError, model: type[BaseModel], data: Any) -> list[Problem]:
    """Locate each pydantic error in `data` and phrase it for a spec author."""
    found: list[Problem] = []
    for detail in error.errors(include_url=False):
        kind = detail["type"]
        loc = _data_loc(data, detail["loc"], missing=kind == "missing")
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = allowed_keys(model, loc[:-1], data)
            hint = key_hints(model, loc[:-1], data).get(key)
            message = hint or unknown_key_message(key, allowed)
            found.append(Problem(loc, message, at_key=True))
        elif kind == "union_tag_invalid":
            found.append(Problem((*loc, "type"), _message(detail)))
        elif kind == "missing":
            found.append(Problem(loc, "required field is missing", at_key=True))
        else:
            found.append(Problem(loc, _message(detail)))
    return _unique(found)


def unknown_key_message(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    if allowed:
        return f"unknown key {key!r} (allowed: {', '.join(allowed)})"
    return f"unknown key {key!r}"


def _message(detail: Mapping[str, Any]) -> str:
    message = str(detail["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if detail["type"] == "union_tag_invalid":
        message = "type must be one of " + str(detail.get("ctx", {}).get("expected_tags", ""))
    return message


def _data_loc(data: Any, loc: Sequence[str | int], missing: bool = False) -> Loc:
    """Pydantic's loc with union tags and validator names dropped: a real path into data."""
    path: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        if _has(node, part):
            node = node[part]
        elif not (missing and index == len(loc) - 1):
            continue
        path.append(part)
    return tuple(path)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, Mapping):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def key_hints(model: type[BaseModel], loc: Loc, data: Any) -> dict[str, str]:
    """A model's own words for keys it does not take (e.g. another broker type's settings)."""
    found = _model_at(model, loc, data)
    hints = getattr(found, "KEY_HINTS", None) if found is not None else None
    return dict(hints) if isinstance(hints, dict) else {}


def allowed_keys(model: type[BaseModel], loc: Loc, data: Any) -> list[str]:
    """Field names accepted by the mapping at `loc` of `model`, for 'did you mean'."""
    found = _model_at(model, loc, data)
    return list(found.model_fields) if found is not None else []


def _model_at(model: type[BaseModel], loc: Loc, data: Any) -> type[BaseModel] | None:
    """The model of the mapping at `loc`, or None when it is not a model."""
    annotation: Any = model
    node = data
    for part in loc:
        annotation = _pick_model(annotation, node)
        node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        else:
            annotation = _element_type(annotation)
    annotation = _pick_model(annotation, node)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _element_type(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, Sequence) and args:
        return args[0]
    return annotation


def _pick_model(annotation: Any, node: Any) -> Any:
    """Resolve Annotated/Optional/discriminated unions to the model that `node` is."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        models = [
            arg
            for arg in typing.get_args(annotation)
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        ]
        tag = node.get("type") if isinstance(node, Mapping) else None
        for candidate in models:
            literal = candidate.model_fields.get("type")
            if literal is not None and tag in typing.get_args(literal.annotation):
                return candidate
        return models[0] if len(models) == 1 else annotation
    return annotation


def _unique(problems: list[Problem]) -> list[Problem]:
    """One problem per place: the branches of a failed union are joined with 'or'."""
    merged: dict[Loc, Problem] = {}
    for problem in problems:
        known = merged.get(problem.loc)
        if known is None:
            merged[problem.loc] = problem
        elif problem.message not in known.message:
            message = f"{known.message}, or {problem.message}"
            merged[problem.loc] = Problem(problem.loc, message, known.at_key)
    return list(merged.values())
