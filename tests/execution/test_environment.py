"""What a run records of the repository its spec lives in (a real git repository)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runner.execution.environment import spec_git


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


def test_the_spec_repository_commit_branch_and_dirty_state(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\n")
    assert spec_git(spec) is None  # not in a repository
    git(tmp_path, "init", "-q", "-b", "perf")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "add", "spec.yaml")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "spec")
    clean = spec_git(spec)
    assert clean is not None and len(clean["commit"]) == 40
    assert (clean["branch"], clean["spec_modified"], clean["dirty"]) == ("perf", False, False)
    spec.write_text("name: y\n")
    edited = spec_git(spec)
    assert edited is not None and (edited["spec_modified"], edited["dirty"]) == (True, True)
    git(tmp_path, "checkout", "-q", "--detach")
    detached = spec_git(spec)
    assert detached is not None and detached["branch"] is None
