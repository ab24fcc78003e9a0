"""Patterns in a spec (`pattern: request_reply | kv`): names as the issue gives them, and
what a pattern cannot use is a located error."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.spec.loader import load_spec
from schemas.units import parse_share

SPEC = """\
version: 1
name: patterns
brokers:
  nats:
    type: nats
    endpoint: embedded
    jetstream: {jetstream}
  kafka:
    type: kafka
    endpoint: embedded
scenarios:
  Stream:   {{messages: 200000}}
  Requests: {{pattern: request_reply, messages: 100000, rate: 5000/s, timeout: 2s}}
  Keys:     {{pattern: kv, messages: 100000, kv: {{keys: 10000, reads: 80%}}}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def issues(path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return [str(issue).removeprefix(f"{path}:") for issue in caught.value.issues]


def test_the_issue_example_names_kv_on_kafka_and_on_core_nats(tmp_path: Path) -> None:
    found = issues(write(tmp_path, SPEC.format(jetstream="false")))
    assert len(found) == 2, found
    assert any(
        p.startswith("14:")
        and "scenarios.Keys.pattern: pattern kv is JetStream's key-value store (NATS only)" in p
        for p in found
    ), found
    assert any("pattern kv needs JetStream" in p for p in found), found


def test_the_example_on_nats_alone_validates(tmp_path: Path) -> None:
    kafka = "  kafka:\n    type: kafka\n    endpoint: embedded\n"
    loaded = load_spec(write(tmp_path, SPEC.format(jetstream="true").replace(kafka, "")))
    by_scenario = {c.cell.scenario: c.workload for c in loaded.cells}
    assert by_scenario["Stream"].pattern == "stream"
    assert by_scenario["Requests"].request_timeout == 2.0
    assert by_scenario["Keys"].kv_settings.reads == 0.8
    assert by_scenario["Keys"].kv_settings.keys == 10000


@pytest.mark.parametrize(
    ("scenario", "field", "words"),
    [
        ("{messages: 10, timeout: 2s}", "timeout", "`timeout` is a request's"),
        ("{messages: 10, kv: {keys: 5}}", "kv", "`kv` sets the keys of pattern: kv"),
        (
            "{pattern: request_reply, duration: 2s, rate: 100/s, backlog: 50}",
            "backlog",
            "pattern request_reply keeps no backlog",
        ),
        (
            "{pattern: request_reply, messages: 10, subscriptions: 2}",
            "subscriptions",
            "one group of responders",
        ),
        ("{pattern: kv, messages: 10, producers: 4, kv: {keys: 3}}", "kv.keys", "3 keys for 4"),
        ("{pattern: kv, messages: 10, kv: {reads: 120%}}", "kv.reads", "not between 0% and 100%"),
    ],
)
def test_what_a_pattern_cannot_use_is_located(
    tmp_path: Path, scenario: str, field: str, words: str
) -> None:
    text = f"version: 1\nname: p\nbrokers:\n  nats: {{type: nats}}\nscenarios:\n  S: {scenario}\n"
    [problem] = issues(write(tmp_path, text))
    assert problem.startswith("6:"), problem
    assert f"scenarios.S.{field}" in problem and words in problem, problem


def test_a_share_is_a_percentage_or_a_fraction() -> None:
    assert parse_share("80%") == 0.8 and parse_share(0.25) == 0.25 and parse_share(1) == 1.0
    for bad in ("eighty", "-5%", 1.5, True):
        with pytest.raises(ValueError):
            parse_share(bad)
