"""The code keeps its own rules: no private name of one module used by another.

(The import layering itself is checked by import-linter, `lint-imports` in .ci/run.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("runner", "reporters", "schemas", "benchmarks")
SOURCES = [p for folder in (*OURS, "tests") for p in sorted((ROOT / folder).rglob("*.py"))]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(OURS):
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name}"
                    for alias in node.names
                    if _private(alias.name)
                ]
    assert found == []


def test_no_private_name_of_our_modules_is_reached_through_the_module() -> None:
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        ours = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(OURS)
            for alias in node.names
        } | {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name.startswith(OURS)
        }
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ours
            and _private(node.attr)
        ]
    assert found == []
