"""Core NATS in a spec (`jetstream: false`): what it cannot take is a located error, and it
shares its server with the JetStream variants of the same broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.execution.instances import plan_instances
from runner.execution.plan import make_plan
from runner.spec.loader import load_spec

BASE = """\
version: 1
name: core
brokers:
  nats:
    type: nats
    jetstream: false
{extra}scenarios:
  Small: {{messages: 1000{scenario}}}
"""


def issues(tmp_path: Path, extra: str = "", scenario: str = "") -> list[str]:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.format(extra=extra, scenario=scenario))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return [str(issue).removeprefix(f"{path}:") for issue in caught.value.issues]


def test_a_core_nats_broker_validates(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.format(extra="", scenario=""))
    assert load_spec(path).spec.brokers["nats"].jetstream is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "line", "field", "words"),
    [
        ("    stream: {replicas: 3}\n", 7, "stream", "no stream (storage, limits, replicas)"),
        ("    consumer: {kind: pull}\n", 7, "consumer", "no consumers"),
        ("    publish: {max_pending: 10}\n", 7, "publish", "no publish acks"),
    ],
)
def test_jetstream_settings_are_located_errors(
    tmp_path: Path, extra: str, line: int, field: str, words: str
) -> None:
    [problem] = issues(tmp_path, extra)
    assert problem.startswith(f"{line}:"), problem
    assert f"brokers.nats.{field}: core NATS (`jetstream: false`) has {words}" in problem


def test_a_backlog_and_a_leader_fault_are_located_errors(tmp_path: Path) -> None:
    scenario = ", rate: 1000/s, backlog: 500, faults: [{at: 1s, action: kill_leader}]"
    found = issues(tmp_path, "    nodes: 3\n", scenario)
    assert any("backlog: core NATS (`jetstream: false`) stores nothing" in p for p in found), found
    assert any(
        "faults.0.action: kill_leader: core NATS (`jetstream: false`) has no stream leader" in p
        for p in found
    ), found


def test_core_and_jetstream_variants_share_one_server(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        """\
version: 1
name: persistence
brokers:
  nats: {type: nats}
scenarios:
  Small: {messages: 1000}
variants:
  core: {brokers: {nats: {jetstream: false}}}
  memory: {}
  file: {brokers: {nats: {stream: {storage: file}}}}
baseline: memory
"""
    )
    loaded = load_spec(path)
    assert len(plan_instances(make_plan(loaded.spec, loaded.cells))) == 1
