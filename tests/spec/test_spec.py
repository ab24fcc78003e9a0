"""The spec contract: every committed spec validates; every kind of bad input is located."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.execution.measure.messages import HEADER_SIZE
from runner.execution.plan import make_plan
from runner.spec.loader import load_spec
from schemas.json_schema import experiment_schema
from schemas.resolve import resolve_cells
from schemas.spec import DEFAULT_WORKERS, MESSAGE_HEADER_BYTES, PayloadFile

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "experiments").glob("*.yaml"))
BASE = (ROOT / "experiments" / "worker_pool_256.yaml").read_text()


def issues_of(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "spec.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return [str(issue).removeprefix(f"{path}:") for issue in caught.value.issues]


def edit(old: str, new: str, count: int = 1) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, count)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [
        i
        for i, line in enumerate(text.splitlines(), 1)
        if needle in line and not line.lstrip().startswith("#")
    ]
    return lines[occurrence - 1]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_committed_specs_validate(spec: Path) -> None:
    loaded = load_spec(spec)
    assert loaded.cells
    assert make_plan(loaded.spec, loaded.cells).trials


def test_unknown_key_is_located_with_suggestion(tmp_path: Path) -> None:
    text = edit("    workers: 48\n", "    workerz: 48\n")
    line = line_of(text, "workerz")
    assert f"{line}:5: brokers.kafka.workerz: unknown key 'workerz'; did you mean 'workers'?" in (
        issues_of(tmp_path, text)
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = edit("repetitions: 5", "repetition: 5")
    line = line_of(text, "repetition:")
    assert issues_of(tmp_path, text) == [
        f"{line}:1: repetition: unknown key 'repetition'; did you mean 'repetitions'?"
    ]


def test_bad_unit(tmp_path: Path) -> None:
    text = edit("message_size: 1KiB", "message_size: 1KB2")
    line = line_of(text, "message_size")
    [issue] = issues_of(tmp_path, text)
    assert issue.startswith(f"{line}:17: defaults.message_size: '1KB2' is not a size")


def test_message_size_below_the_header_is_refused(tmp_path: Path) -> None:
    text = edit("message_size: 1KiB", "message_size: 0KiB")
    line = line_of(text, "message_size")
    [issue] = issues_of(tmp_path, text)
    assert issue.startswith(f"{line}:17: defaults.message_size: 0 B is too small")
    assert f"{MESSAGE_HEADER_BYTES}-byte header" in issue
    # The header the trials write is the size the spec says.
    assert HEADER_SIZE == MESSAGE_HEADER_BYTES


def test_the_load_hosts_example_of_the_issue_validates_as_written(tmp_path: Path) -> None:
    execution = (
        "execution:\n  processes: 4\n  engine: dask\n  scheduler: tcp://10.0.0.5:8786\n  hosts: 4\n"
    )
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + execution)
    settings = load_spec(path).spec.execution
    assert (settings.processes, settings.engine, settings.hosts) == (4, "dask", 4)
    assert settings.scheduler == "tcp://10.0.0.5:8786" and settings.distributed


@pytest.mark.parametrize(
    ("execution", "expected"),
    [
        ("{scheduler: tcp://10.0.0.5:8786}", "scheduler is for engine: dask"),
        ("{hosts: 2}", "hosts: 2 needs engine: dask"),
        ("{engine: dask, scheduler: 10.0.0.5}", "execution.scheduler: String should match"),
        ("{engine: ray}", "execution.engine: Input should be 'local' or 'dask'"),
    ],
)
def test_load_host_settings_are_checked(tmp_path: Path, execution: str, expected: str) -> None:
    [issue] = issues_of(tmp_path, BASE + f"execution: {execution}\n")
    assert expected in issue, issue


def test_unknown_unit(tmp_path: Path) -> None:
    text = edit("drain_timeout: 30s", "drain_timeout: 30d")
    [issue] = issues_of(tmp_path, text)
    assert "defaults.drain_timeout: unknown duration unit 'd'" in issue


def test_duration_without_unit(tmp_path: Path) -> None:
    text = edit("settle_time: 2s", "settle_time: 2")
    [issue] = issues_of(tmp_path, text)
    assert f"{line_of(text, 'settle_time')}:16: defaults.settle_time: 2 has no unit" in issue


def test_wrong_type(tmp_path: Path) -> None:
    text = edit("repetitions: 5", "repetitions: five")
    [issue] = issues_of(tmp_path, text)
    assert issue.startswith(f"{line_of(text, 'repetitions')}:14: repetitions: ")
    assert "integer" in issue


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("repetitions: 5", "repetitions: 0", "repetitions"),
        ("Low: {messages: 500}", "Low: {messages: -500}", "scenarios.Low.messages"),
        ("partitions: 1,", "partitions: 0,", "brokers.kafka.topic.partitions"),
        ("max_pending: 4096", "max_pending: 0", "brokers.nats.publish.max_pending"),
    ],
)
def test_non_positive_counts(tmp_path: Path, old: str, new: str, path: str) -> None:
    text = edit(old, new)
    [issue] = issues_of(tmp_path, text)
    assert f": {path}: " in issue and "greater than 0" in issue
    assert issue.startswith(f"{line_of(text, new)}:")


def test_duplicate_key(tmp_path: Path) -> None:
    text = edit("repetitions: 5\n", "repetitions: 5\nrepetitions: 3\n")
    first, second = line_of(text, "repetitions"), line_of(text, "repetitions", 2)
    assert issues_of(tmp_path, text) == [
        f"{second}:1: repetitions: duplicate key 'repetitions' (first written on line {first}); "
        "YAML would keep only the last one"
    ]


def test_duplicate_nested_key(tmp_path: Path) -> None:
    text = edit("  Low: {messages: 500}\n", "  Low: {messages: 500}\n  Low: {messages: 600}\n")
    [issue] = issues_of(tmp_path, text)
    assert issue.startswith(f"{line_of(text, 'Low', 2)}:3: scenarios.Low: duplicate key 'Low'")


def test_variant_naming_unknown_broker(tmp_path: Path) -> None:
    text = edit("brokers: {nats: {workers: 256}}", "brokers: {natz: {workers: 256}}")
    [issue] = issues_of(tmp_path, text)
    assert issue == (
        f"{line_of(text, 'natz')}:21: variants.after.brokers.natz: "
        "unknown broker 'natz'; did you mean 'nats'?"
    )


def test_variant_override_is_validated_where_written(tmp_path: Path) -> None:
    text = edit("brokers: {nats: {workers: 256}}", "brokers: {nats: {stream: {max_msg: 9}}}")
    [issue] = issues_of(tmp_path, text)
    assert issue == (
        f"{line_of(text, 'max_msg: 9')}:31: variants.after.brokers.nats.stream.max_msg: "
        "unknown key 'max_msg'; did you mean 'max_msgs'?"
    )


def test_target_naming_unknown_names(tmp_path: Path) -> None:
    text = edit("broker: nats, change", "broker: natz, change")
    text = text.replace('variant: after, value: "<= 1"', 'variant: afterr, value: "<= 1"')
    issues = issues_of(tmp_path, text)
    assert any("targets.0.broker: unknown broker 'natz'; did you mean 'nats'?" in i for i in issues)
    assert any("targets.1.variant: unknown variant 'afterr'" in i for i in issues)


def test_target_goal_syntax(tmp_path: Path) -> None:
    text = edit('change: ">= +400%"', 'change: "at least 400%"')
    [issue] = issues_of(tmp_path, text)
    assert "targets.0.change:" in issue


def test_missing_baseline(tmp_path: Path) -> None:
    text = edit("baseline: before\n", "")
    assert issues_of(tmp_path, text) == [
        "1:1: baseline: required when there are 2 or more variants"
    ]


def test_unknown_baseline(tmp_path: Path) -> None:
    text = edit("baseline: before", "baseline: befor")
    assert issues_of(tmp_path, text) == [
        f"{line_of(text, 'baseline')}:11: baseline: unknown variant 'befor'; did you mean 'before'?"
    ]


def test_librdkafka_rejects_unknown_property(tmp_path: Path) -> None:
    text = edit("linger.ms: 5", "linger.mss: 5")
    assert issues_of(tmp_path, text) == [
        f"{line_of(text, 'linger.mss')}:27: brokers.kafka.producer.linger.mss: "
        'librdkafka: No such configuration property: "linger.mss"'
    ]


def test_librdkafka_rejects_bad_value_under_alias(tmp_path: Path) -> None:
    text = edit("acks: all", "acks: most")
    [issue] = issues_of(tmp_path, text)
    assert issue.startswith(f"{line_of(text, 'acks: most')}:16: brokers.kafka.producer.acks: ")
    assert "Invalid value" in issue


def test_librdkafka_property_of_the_other_role(tmp_path: Path) -> None:
    text = edit("consumer: {fetch.min.bytes: 1}", "consumer: {linger.ms: 1}")
    [issue] = issues_of(tmp_path, text)
    assert "brokers.kafka.consumer.linger.ms: librdkafka:" in issue
    assert "producer property" in issue


def test_unknown_broker_type(tmp_path: Path) -> None:
    text = edit("type: nats", "type: rabbit")
    assert issues_of(tmp_path, text) == [
        f"{line_of(text, 'rabbit')}:11: brokers.nats.type: type must be one of 'kafka', 'nats'"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "version: 1\nname: [x\n",
            "3:1: (document): YAML: while parsing a flow sequence: expected ',' or ']'",
        ),
        ("", "1:1: (document): the spec is empty"),
        ("# only a comment\n", "1:1: (document): the spec is empty"),
        ("- a\n- b\n", "1:1: (document): the spec must be a mapping of keys"),
        ("just text\n", "1:1: (document): the spec must be a mapping of keys"),
        (
            "a: 1\n---\nb: 2\n",
            "2:1: (document): YAML: expected a single document in the stream: but found another",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "1:1: (document): not UTF-8 text"),
        ("version: 1\x00\n", "1:11: (document): YAML: character #x0000 is not allowed"),
    ],
)
def test_unparseable_documents(tmp_path: Path, content: str | bytes, expected: str) -> None:
    [issue] = issues_of(tmp_path, content)
    assert issue.startswith(expected), issue


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, prev in zip("bcdefg", "abcdef", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    [issue] = issues_of(tmp_path, "\n".join(lines) + "\n")
    assert "expands too deeply" in issue


def test_env_reference_expanded_and_kept_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPRUN_TEST_PASSWORD", "hunter2-secret")
    text = edit("linger.ms: 5}", "linger.ms: 5, sasl.password: '${EXPRUN_TEST_PASSWORD}'}")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    loaded = load_spec(path)
    assert loaded.spec.brokers["kafka"].producer["sasl.password"] == "hunter2-secret"  # type: ignore[union-attr]
    assert "hunter2-secret" in loaded.secrets
    assert "hunter2-secret" not in loaded.text


def test_unset_env_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPRUN_UNSET_VAR", raising=False)
    text = edit("endpoint: embedded", "endpoint: ${EXPRUN_UNSET_VAR}")
    assert issues_of(tmp_path, text) == [
        f"{line_of(text, 'EXPRUN_UNSET')}:15: brokers.kafka.endpoint: "
        "environment variable EXPRUN_UNSET_VAR is not set"
    ]


def test_secret_never_echoed_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPRUN_TEST_SIZE", "topsecret-size")
    text = edit("message_size: 1KiB", "message_size: ${EXPRUN_TEST_SIZE}")
    [issue] = issues_of(tmp_path, text)
    assert "topsecret" not in issue and "***" in issue


def test_committed_schema_is_generated() -> None:
    committed = json.loads((ROOT / "schemas" / "experiment.schema.json").read_text())
    assert committed == experiment_schema(), "run: exprun schema > schemas/experiment.schema.json"


def test_specs_point_editors_at_the_schema() -> None:
    for spec in SPECS:
        first = spec.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/experiment.schema.json"


def exprun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit("workers: 48\n", "workerz: 48\n"))
    ok = exprun("validate", *map(str, SPECS))
    assert ok.returncode == 0, ok.stderr
    failed = exprun("validate", str(SPECS[0]), str(bad))
    assert failed.returncode == 2
    assert re.search(
        rf"^{re.escape(str(bad))}:\d+:\d+: brokers\.kafka\.workerz: ", failed.stderr, re.M
    )
    assert "Traceback" not in failed.stderr
    missing = exprun("validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read the spec" in missing.stderr


def test_plan_and_shorthand_dry_run() -> None:
    planned = exprun("plan", "experiments/worker_pool_256.yaml")
    assert planned.returncode == 0, planned.stderr
    assert "16 cells, 96 trials (80 measured, 16 warm-up), order interleaved" in planned.stdout
    assert "estimated run time" in planned.stdout
    dry = exprun("experiments/worker_pool_256.yaml", "--dry-run")
    assert dry.returncode == 0 and dry.stdout == planned.stdout


def test_bad_filter_is_bad_input() -> None:
    result = exprun("plan", "experiments/worker_pool_256.yaml", "--broker", "rabbit")
    assert result.returncode == 2
    assert "--broker rabbit: not in the spec" in result.stderr


def test_schema_command_prints_the_schema() -> None:
    result = exprun("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == experiment_schema()


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_dumped_spec_resolves_to_the_same_cells(spec: Path) -> None:
    # Reports re-resolve cells from a spec dumped as JSON: units must survive the round trip.
    loaded = load_spec(spec)
    dumped = loaded.spec.model_dump(mode="json", exclude_unset=True)
    assert resolve_cells(loaded.spec, dumped) == loaded.cells


def test_workers_has_a_documented_default(tmp_path: Path) -> None:
    text = BASE.replace("    workers: 48\n", "").replace("brokers: {nats: {workers: 48}}", "")
    text = text.replace("brokers: {nats: {workers: 256}}", "")
    assert "workers" not in text
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    loaded = load_spec(path)
    assert {c.broker.workers for c in loaded.cells} == {DEFAULT_WORKERS}
    for broker in ("KafkaBroker", "NatsBroker"):
        schema = experiment_schema()["$defs"][broker]
        assert schema["properties"]["workers"]["default"] == DEFAULT_WORKERS
        assert "workers" not in schema.get("required", [])


def test_every_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    text = edit("repetitions: 5", "repetitions: five")  # a field error
    text = text.replace("brokers: {nats: {workers: 256}}", "brokers: {natz: {workers: 256}}")
    text = text.replace("linger.ms: 5", "linger.mss: 5")
    issues = issues_of(tmp_path, text)
    assert [issue.split(": ")[1] for issue in issues] == [
        "brokers.kafka.producer.linger.mss",
        "variants.after.brokers.natz",
        "repetitions",
    ]
    lines = [int(issue.split(":")[0]) for issue in issues]
    assert lines == sorted(lines)
    assert "librdkafka: No such configuration property" in issues[0]
    assert "unknown broker 'natz'; did you mean 'nats'?" in issues[1]


def test_a_reference_check_with_a_malformed_part_is_skipped_alone(tmp_path: Path) -> None:
    # The variants are malformed: the baseline cannot be checked against them, but the
    # target's unknown metric and the unknown reporter still are.
    text = edit("variants:\n", "variants: [before, after]\nunused:\n")
    text = text.replace("metric: leaked_threads", "metric: leaked_thread")
    text = text.replace("reports: [markdown, csv, json, html]", "reports: [markdown, pdf]")
    issues = issues_of(tmp_path, text)
    paths = [issue.split(": ")[1] for issue in issues]
    assert "variants" in paths and "unused" in paths
    assert "targets.1.metric" in paths and "reports.1" in paths
    assert not any(path == "baseline" for path in paths)


def test_committed_variant_override_property_is_checked_where_written(tmp_path: Path) -> None:
    text = edit("brokers: {nats: {workers: 256}}", "brokers: {kafka: {producer: {lingr.ms: 1}}}")
    [issue] = issues_of(tmp_path, text)
    assert issue.startswith(f"{line_of(text, 'lingr.ms')}:")
    assert "variants.after.brokers.kafka.producer.lingr.ms: librdkafka: No such" in issue


@pytest.mark.parametrize("metric", ["success_rate", "broker_cpu_percent"])
def test_percent_goal_on_a_percent_metric_is_its_unit(tmp_path: Path, metric: str) -> None:
    text = edit(
        'metric: success_rate, variant: after, value: ">= 100"',
        f'metric: {metric}, variant: after, value: ">= 100%"',
    )
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    target = load_spec(path).spec.targets[2]
    assert target.value == ">= 100%"


def test_percent_goal_on_another_unit_is_refused(tmp_path: Path) -> None:
    text = edit(
        'metric: leaked_threads, variant: after, value: "<= 1"',
        'metric: leaked_threads, variant: after, value: "<= 1%"',
    )
    [issue] = issues_of(tmp_path, text)
    assert "targets.1.value: a value goal is in the metric's own unit: drop the '%'" in issue


def test_new_writes_a_starter_that_validates(tmp_path: Path) -> None:
    for brokers, name in (((), "both"), (("kafka",), "kafka-only"), (("nats",), "nats-only")):
        flags = [arg for b in brokers for arg in ("--broker", b)]
        made = exprun("new", str(tmp_path / name), *flags)
        assert made.returncode == 0, made.stderr
        path = tmp_path / f"{name}.yaml"
        loaded = load_spec(path)
        assert loaded.spec.name == name
        assert sorted(loaded.spec.brokers) == sorted(brokers or ("kafka", "nats"))
        assert len(loaded.spec.variants) == 2 and len(loaded.spec.scenarios) == 2
        assert loaded.spec.targets
        first = path.read_text().splitlines()[0]
        schema = first.removeprefix("# yaml-language-server: $schema=")
        assert (path.parent / schema).resolve() == (ROOT / "schemas" / "experiment.schema.json")
    again = exprun("new", str(tmp_path / "both"))
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "exists" in again.stderr
    bad = exprun("new", str(tmp_path / "-x"))
    assert bad.returncode == 2


SHAPES = """\
version: 1
name: shapes
brokers:
  nats:
    type: nats
    stream: {max_msgs: 1000000, max_bytes: 100MB}
defaults:
  message_size: 1KiB
scenarios:
  Shape: SHAPE
"""


@pytest.mark.parametrize(
    ("shape", "path", "message"),
    [
        ("{duration: 30s, rate: 0/s}", "scenarios.Shape.rate", "rate must be positive"),
        (
            '{duration: 10s, search: {rate: 5000/s..1000/s, until: "latency_p99_ms <= 50"}}',
            "scenarios.Shape.search.rate",
            "the lower bound 5000/s must be below the upper bound 1000/s",
        ),
        (
            '{duration: 10s, search: {rate: 1000/s..5000/s, until: "latency_p99_msx <= 50"}}',
            "scenarios.Shape.search.until",
            "unknown metric 'latency_p99_msx'; did you mean 'latency_p99_ms'?",
        ),
        (
            '{duration: 10s, search: {rate: 1000/s..5000/s, until: "leaked_threads <= 0"}}',
            "scenarios.Shape.search.until",
            "a search cannot steer by 'leaked_threads'",
        ),
        (
            '{duration: 10s, rate: 100, search: {rate: 1000/s..5000/s, until: "lost <= 0"}}',
            "scenarios.Shape",
            "a capacity search sets the rate of each trial: drop `rate`",
        ),
        (
            "{duration: 5s, rate: 1000/s, ramp: 5s}",
            "scenarios.Shape.ramp",
            "the ramp (5s) is not shorter than the duration (5s)",
        ),
        (
            "{duration: 600s, rate: 5000/s, backlog: 2000000}",
            "scenarios.Shape.backlog",
            "the stream keeps at most 1,000,000 messages (max_msgs): part of a backlog of "
            "2,000,000 would be discarded",
        ),
        (
            "{duration: 60s, rate: 5000/s, backlog: 200MB}",
            "scenarios.Shape.backlog",
            "the stream keeps at most 100MB (max_bytes)",
        ),
        (
            "{duration: 10s, rate: 5000/s, backlog: 60000}",
            "scenarios.Shape.backlog",
            "a backlog of 60,000 messages is never reached: the scenario publishes 50,000",
        ),
        ("{duration: 10s, backlog: 1000}", "scenarios.Shape.backlog", "a backlog needs a `rate`"),
        (
            "{messages: 100, duration: 10s}",
            "scenarios.Shape",
            "give exactly one of `messages` (how many to publish) or `duration`",
        ),
        ("{rate: 100}", "scenarios.Shape", "give exactly one of `messages`"),
    ],
)
def test_load_shape_mistakes_are_located(
    tmp_path: Path, shape: str, path: str, message: str
) -> None:
    text = SHAPES.replace("SHAPE", shape)
    [issue] = issues_of(tmp_path, text)
    assert issue.startswith(f"{line_of(text, 'Shape:')}:")
    assert f": {path}: " in issue and message in issue, issue


def test_load_shapes_resolve() -> None:
    loaded = load_spec(ROOT / "experiments" / "capacity.yaml")
    work = loaded.cells[0].workload
    assert work.search is not None and work.rate is None and work.duration == 5.0
    assert work.search.rate == (2000.0, 100000.0) and work.search.condition.value == 50
    steady = load_spec(ROOT / "experiments" / "steady_rate.yaml").cells[0].workload
    assert (steady.rate, steady.duration, steady.ramp) == (20000.0, 30.0, 5.0)
    assert steady.planned_messages == 600_000
    drain = load_spec(ROOT / "experiments" / "backlog_drain.yaml").cells[0].workload
    assert drain.backlog_messages == 97_657  # 100MB of 1KiB messages, rounded up


def test_plan_estimates_time_based_and_search_scenarios() -> None:
    capacity = exprun("plan", "experiments/capacity.yaml")
    assert capacity.returncode == 0, capacity.stderr
    # 10 searches of up to 7 steps of 5 s each, plus 2 warm-up trials of 5 s.
    minutes, seconds = re.search(r"estimated run time: (\d+)m(\d+)s", capacity.stdout).groups()  # type: ignore[union-attr]
    assert 10 * 7 * 5 + 2 * 5 <= int(minutes) * 60 + int(seconds) <= 10 * 7 * 7 + 2 * 7 + 20
    steady = exprun("plan", "experiments/steady_rate.yaml")
    minutes, seconds = re.search(r"estimated run time: (\d+)m(\d+)s", steady.stdout).groups()  # type: ignore[union-attr]
    assert 12 * 30 <= int(minutes) * 60 + int(seconds) <= 12 * 32 + 20


TOPOLOGY = """\
version: 1
name: topology
brokers:
  kafka:
    type: kafka
    topic: {partitions: 3}
  nats:
    type: nats
defaults:
  message_size: 1KiB
scenarios:
  S: {messages: 1000}
"""


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        (
            "    type: nats\n",
            "    type: nats\n    consumer_mode: group\n",
            "brokers.nats.consumer_mode",
            "`consumer_mode` is a Kafka setting; a JetStream subscription reads by `consumer.kind`",
        ),
        (
            "    topic: {partitions: 3}\n",
            "    topic: {partitions: 3}\n    consumer: {kind: pull}\n",
            "brokers.kafka.consumer",
            "kind: a NATS consumer setting; a Kafka consumer reads assigned partitions or in a "
            "group: choose `consumer_mode: assign | group`",
        ),
        (
            "    topic: {partitions: 3}\n",
            "    topic: {partitions: 3}\n    commit: sync\n",
            "brokers.kafka",
            "`commit` needs `consumer_mode: group`",
        ),
        (
            "    type: nats\n",
            "    type: nats\n    consumer: {ack: explicit, max_ack_pending: 50, batch: 100}\n",
            "brokers.nats.consumer",
            "batch 100 is larger than max_ack_pending 50",
        ),
        (
            "    type: nats\n",
            "    type: nats\n    consumer: {kind: ordered, ack: explicit}\n",
            "brokers.nats.consumer",
            "an ordered consumer does not ack",
        ),
        (
            "  message_size: 1KiB\n",
            "  message_size: 1KiB\n  keys: 0\n",
            "defaults.keys",
            "keys 0: write none, round_robin, random, or a number of distinct keys",
        ),
        (
            "  message_size: 1KiB\n",
            "  message_size: 1KiB\n  payload: {file: missing.bin}\n",
            "defaults.payload.file",
            "cannot read the payload file missing.bin",
        ),
        (
            "    type: nats\n",
            "    type: nats\n    consumer: {kind: ordered}\n",
            "brokers.nats.consumer.kind",
            "an ordered consumer reads alone, but this cell has 2 consumers",
        ),
    ],
)
def test_topology_mistakes_are_located(
    tmp_path: Path, old: str, new: str, path: str, message: str
) -> None:
    text = TOPOLOGY.replace(old, new, 1)
    if "kind: ordered}" in new:
        text = text.replace("  message_size: 1KiB\n", "  message_size: 1KiB\n  consumers: 2\n")
    issues = issues_of(tmp_path, text)
    assert any(f": {path}: " in i and message in i for i in issues), issues


def test_a_payload_file_smaller_than_a_message_is_refused(tmp_path: Path) -> None:
    (tmp_path / "small.bin").write_bytes(b"x" * 100)
    text = TOPOLOGY.replace(
        "  message_size: 1KiB\n", "  message_size: 1KiB\n  payload: {file: small.bin}\n"
    )
    [issue] = issues_of(tmp_path, text)
    assert "defaults.payload.file: the payload file small.bin (100B) is smaller than" in issue
    (tmp_path / "big.bin").write_bytes(b"y" * 4096)
    path = tmp_path / "ok.yaml"
    path.write_text(text.replace("small.bin", "big.bin"))
    payload = load_spec(path).cells[0].workload.payload
    assert payload == PayloadFile(file=str(tmp_path / "big.bin"))


def test_more_consumers_than_partitions_is_a_plan_warning(tmp_path: Path) -> None:
    spec = tmp_path / "idle.yaml"
    spec.write_text(
        TOPOLOGY.replace(
            "  message_size: 1KiB\n", "  message_size: 1KiB\n  consumers: 5\n"
        ).replace("  nats:\n    type: nats\n", "")
    )
    planned = exprun("plan", str(spec))
    assert planned.returncode == 0, planned.stderr
    warning = "warning: kafka/default/S: 5 consumers per subscription share 3 partition(s)"
    assert f"{warning}: 2 of them stay idle" in planned.stdout
