"""Broker-side settings, clusters and faults in the spec: each mistake located, each name kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_spec import issues_of, line_of

from runner.execution.instances import NotEnoughMemory, check_memory, plan_instances
from runner.execution.plan import make_plan, render_plan
from runner.spec.loader import load_spec
from schemas.spec import Fault

ROOT = Path(__file__).resolve().parents[2]

# The issue's own example, as written.
CLUSTERS = """\
version: 1
name: clusters
brokers:
  kafka:
    type: kafka
    endpoint: embedded
    nodes: 3
    server: {num.io.threads: 16, min.insync.replicas: 2}
    jvm: {heap: 1G}
    topic: {partitions: 6, replication_factor: 3}
  nats:
    type: nats
    endpoint: embedded
    nodes: 3
    server: {max_payload: 8MB, write_deadline: 5s, jetstream: {max_memory_store: 1GB}}
    stream: {replicas: 3, storage: file}
scenarios:
  Failover:
    messages: 200000
    rate: 10000/s
    faults:
      - {at: 40%, action: kill_leader}
      - {at: 70%, action: restart}
      - {at: 10s, action: pause_leader, for: 2s}
      - {at: 15s, action: kill_node, node: 2}
repetitions: 1
"""


def test_the_issue_example_validates_as_written(tmp_path: Path) -> None:
    path = tmp_path / "clusters.yaml"
    path.write_text(CLUSTERS)
    loaded = load_spec(path)
    kafka = next(c for c in loaded.cells if c.cell.broker == "kafka")
    assert kafka.broker.nodes == 3 and kafka.broker.server["num.io.threads"] == 16
    assert kafka.broker.type == "kafka" and kafka.broker.jvm.heap == "1G"
    faults = kafka.workload.faults
    assert [f.action for f in faults] == ["kill_leader", "restart", "pause_leader", "kill_node"]
    assert faults[0].share == 0.4 and faults[2].seconds == 10.0 and faults[2].pause == 2.0
    assert faults[3].node == 2
    nats = next(c for c in loaded.cells if c.cell.broker == "nats")
    assert nats.broker.server["jetstream"] == {"max_memory_store": "1GB"}


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            "    nodes: 3\n    server: {num.io",
            "    nodes: 1\n    server: {num.io",
            "brokers.kafka",
            "topic.replication_factor 3 needs at least 3 nodes, but this embedded broker has 1",
        ),
        (
            "    nodes: 3\n    server: {max_payload",
            "    nodes: 2\n    server: {max_payload",
            "brokers.nats",
            "stream.replicas 3 needs at least 3 nodes",
        ),
        ("jvm: {heap: 1G}", "jvm: {heap: lots}", "brokers.kafka.jvm.heap", "should match pattern"),
        (
            "jvm: {heap: 1G}",
            "jvm: {heap: 1G, options: [-Xmx2g]}",
            "brokers.kafka.jvm.options",
            "set the heap with `heap`",
        ),
        ("nodes: 3\n    server: {num", "nodes: 12\n    server: {num", "brokers.kafka.nodes", "9"),
        (
            "{at: 40%, action: kill_leader}",
            "{at: 140%, action: kill_leader}",
            "scenarios.Failover.faults.0.at",
            "a share of the trial is 0% to under 100%",
        ),
        (
            "{at: 40%, action: kill_leader}",
            "{at: soon, action: kill_leader}",
            "scenarios.Failover.faults.0.at",
            "write a share of the messages (40%) or a time",
        ),
        (
            "{at: 40%, action: kill_leader}",
            "{at: 40%, action: kill_leaders}",
            "scenarios.Failover.faults.0.action",
            "'kill_leader'",
        ),
        (
            "{at: 10s, action: pause_leader, for: 2s}",
            "{at: 10s, action: pause_leader}",
            "scenarios.Failover.faults.2",
            "pause_leader needs `for`",
        ),
        (
            "{at: 15s, action: kill_node, node: 2}",
            "{at: 15s, action: kill_node}",
            "scenarios.Failover.faults.3",
            "kill_node needs `node`",
        ),
        (
            "{at: 40%, action: kill_leader}",
            "{at: 40%, action: kill_leader, node: 1}",
            "scenarios.Failover.faults.0",
            "`node` names the node of kill_node / pause_node",
        ),
        (
            "{at: 15s, action: kill_node, node: 2}",
            "{at: 15s, action: kill_node, node: 4}",
            "scenarios.Failover.faults.3.node",
            "node 4 does not exist: this cell's broker has 3 node(s)",
        ),
    ],
)
def test_setting_mistakes_are_located(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    assert old in CLUSTERS
    text = CLUSTERS.replace(old, new, 1)
    issues = issues_of(tmp_path, text)
    assert any(f": {key}: " in i and message in i for i in issues), issues


def test_external_brokers_are_not_configured_or_faulted(tmp_path: Path) -> None:
    text = CLUSTERS.replace(
        "    endpoint: embedded\n    nodes: 3\n    server: {num.io.threads: 16, min.insync"
        ".replicas: 2}\n    jvm: {heap: 1G}\n",
        "    endpoint: kafka1:9092\n    server: {num.io.threads: 16}\n",
    )
    issues = issues_of(tmp_path, text)
    assert any(
        "brokers.kafka: server: exprun configures only the brokers it starts" in i for i in issues
    ), issues
    external = CLUSTERS.replace(
        "    endpoint: embedded\n    nodes: 3\n    server: {num.io.threads: 16, min.insync"
        ".replicas: 2}\n    jvm: {heap: 1G}\n    topic: {partitions: 6, replication_factor: 3}\n",
        "    endpoint: kafka1:9092\n",
    )
    issues = issues_of(tmp_path, external)
    line = line_of(external, "{at: 40%")  # the list the key holds
    assert any(
        i.startswith(f"{line}:") and "faults are done to the nodes of a broker exprun starts" in i
        for i in issues
    ), issues


def test_a_fault_after_the_phase_and_a_search_with_faults_are_refused(tmp_path: Path) -> None:
    text = CLUSTERS.replace("    messages: 200000\n    rate: 10000/s\n", "    duration: 12s\n")
    text = text.replace("{at: 15s, action: kill_node, node: 2}", "{at: 20s, action: restart}")
    issues = issues_of(tmp_path, text)
    assert any(
        "faults.3.at: at 20s: the measured phase lasts 12s, the fault would never happen" in i
        for i in issues
    ), issues


def test_fault_point_and_description() -> None:
    pause = Fault.model_validate({"at": "10s", "action": "pause_node", "for": "1500ms", "node": 3})
    assert (pause.seconds, pause.share, pause.pause) == (10.0, None, 1.5)
    assert pause.describe() == "pause_node 3 for 1.5s at 10s"
    assert pause.model_dump(mode="json")["for"] == "1.5s"  # written back as the spec names it


def test_each_distinct_broker_setting_is_its_own_instance() -> None:
    loaded = load_spec(ROOT / "experiments" / "kafka_io_threads.yaml")
    plan = make_plan(loaded.spec, loaded.cells)
    instances = plan_instances(plan)
    assert [i.label for i in instances] == ["kafka[io-2]", "kafka[io-8]"]
    assert [i.config.server for i in instances] == [{"num.io.threads": 2}, {"num.io.threads": 8}]
    assert all(i.memory_mb > 768 for i in instances)
    # Client-side differences share one instance.
    acks = load_spec(ROOT / "experiments" / "replication_acks.yaml")
    [cluster] = plan_instances(make_plan(acks.spec, acks.cells))
    assert cluster.label == "kafka" and cluster.variants == ("acks-all", "acks-1")
    assert "3 nodes" in cluster.describe()
    table = render_plan(plan)
    assert "server.num.io.threads" in table


def test_instances_that_do_not_fit_are_refused() -> None:
    loaded = load_spec(ROOT / "experiments" / "replication_acks.yaml")
    instances = plan_instances(make_plan(loaded.spec, loaded.cells))
    check_memory(instances, available_mb=100_000)
    with pytest.raises(NotEnoughMemory) as refused:
        check_memory(instances, available_mb=1000)
    assert "kafka: ~" in str(refused.value) and "1,000 MB available" in str(refused.value)


RETRIES = """\
version: 1
name: retries
brokers:
  nats:
    type: nats
    publish: {max_pending: 4096, delivery_timeout: 30s, retry_wait: 250ms}
scenarios:
  Small: {messages: 1000}
variants:
  retry: {}
  one-try: {brokers: {nats: {publish: {delivery_timeout: 0s}}}}
baseline: retry
repetitions: 1
"""


def test_the_publish_retry_example_validates_and_sets_the_duplicate_window(
    tmp_path: Path,
) -> None:
    path = tmp_path / "retries.yaml"
    path.write_text(RETRIES)
    cells = {c.cell.variant: c.broker for c in load_spec(path).cells}
    retry, one_try = cells["retry"], cells["one-try"]
    assert retry.type == "nats" and one_try.type == "nats"
    assert retry.publish.delivery_timeout == 30.0 and retry.publish.retry_wait == 0.25
    assert retry.publish.ack_timeout == 5.0 and retry.duplicate_window == 30.0
    # One try sends no message ids: the stream keeps the server's window.
    assert not one_try.publish.retrying and one_try.duplicate_window is None


def test_a_duplicate_window_shorter_than_the_retries_is_refused(tmp_path: Path) -> None:
    text = RETRIES.replace("    publish:", "    stream: {duplicate_window: 10s}\n    publish:")
    issues = issues_of(tmp_path, text)
    assert any(
        "stream.duplicate_window 10s is shorter than publish.delivery_timeout 30s" in issue
        for issue in issues
    ), issues
    longer = tmp_path / "longer.yaml"
    longer.write_text(text.replace("duplicate_window: 10s", "duplicate_window: 2m"))
    assert {c.broker.duplicate_window for c in load_spec(longer).cells} == {120.0}
