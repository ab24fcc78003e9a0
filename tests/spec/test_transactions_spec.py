"""Kafka transactions in a spec: `per` or `every`, producer properties that contradict them
located, and variants that differ only in transactions sharing one broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_spec import issues_of, line_of

from runner.execution.drivers.kafka import producer_policy
from runner.execution.instances import plan_instances
from runner.execution.plan import make_plan, render_plan
from runner.spec.loader import load_spec

ROOT = Path(__file__).resolve().parents[2]

SPEC = """\
version: 1
name: transactions
brokers:
  kafka:
    type: kafka
    transactions: {per: 1000}
    producer: {linger.ms: 5}
scenarios:
  S: {messages: 1000}
"""


def test_the_worked_example_shares_one_broker_across_its_variants() -> None:
    loaded = load_spec(ROOT / "experiments" / "kafka_transactions.yaml")
    rules = {c.cell.variant: c.broker.transactions for c in loaded.cells}  # type: ignore[union-attr]
    assert rules["none"] is None
    assert rules["per-100"] is not None and rules["per-100"].per == 100
    assert rules["per-10000"] is not None and rules["per-10000"].per == 10000
    plan = make_plan(loaded.spec, loaded.cells)
    # A client setting: one broker process for all three.
    [instance] = plan_instances(plan)
    assert instance.variants == ("none", "per-100", "per-10000")
    assert "| per 100 " in render_plan(plan)


def test_per_and_every_parse(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    [cell] = load_spec(path).cells
    assert cell.broker.transactions is not None  # type: ignore[union-attr]
    assert cell.broker.transactions.per == 1000  # type: ignore[union-attr]
    path.write_text(SPEC.replace("{per: 1000}", "{every: 100ms}"))
    [cell] = load_spec(path).cells
    assert cell.broker.transactions.every == 0.1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        ("{}", "brokers.kafka.transactions", "write one of `per`"),
        ("{per: 10, every: 1s}", "brokers.kafka.transactions", "write one of `per`"),
        ("{per: 0}", "brokers.kafka.transactions.per", "greater than 0"),
        ("{every: 0s}", "brokers.kafka.transactions.every", ""),
        ("{every: soon}", "brokers.kafka.transactions.every", "soon"),
        ("{each: 10}", "brokers.kafka.transactions.each", "unknown key 'each'"),
    ],
)
def test_a_bad_rule_is_located(tmp_path: Path, rule: str, path: str, message: str) -> None:
    text = SPEC.replace("{per: 1000}", rule)
    line = line_of(text, "transactions:")
    issues = issues_of(tmp_path, text)
    assert any(i.startswith(f"{line}:") and f": {path}: " in i and message in i for i in issues), (
        issues
    )


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ("{enable.idempotence: false}", "enable.idempotence: false"),
        ("{acks: 1}", "acks: 1 (a transactional producer needs acks: all)"),
        ("{request.required.acks: 0}", "request.required.acks: 0"),
        ("{transactional.id: mine}", "transactional.id is set by exprun"),
        ("{max.in.flight: 10}", "max.in.flight: 10"),
        ("{retries: 0}", "retries: 0"),
    ],
)
def test_producer_properties_that_contradict_transactions_are_located(
    tmp_path: Path, properties: str, message: str
) -> None:
    text = SPEC.replace("{linger.ms: 5}", properties)
    issues = issues_of(tmp_path, text)
    line = line_of(text, "producer:")
    assert any(
        i.startswith(f"{line}:")
        and ": brokers.kafka.producer: contradicts `transactions`" in i
        and message in i
        for i in issues
    ), issues


def test_properties_that_fit_transactions_pass(tmp_path: Path) -> None:
    text = SPEC.replace("{linger.ms: 5}", "{acks: all, enable.idempotence: true, retries: 5}")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert load_spec(path).cells
    path.write_text(text.replace("acks: all", "acks: -1"))
    assert load_spec(path).cells


def test_a_variant_adding_transactions_to_a_contradicting_producer_is_located(
    tmp_path: Path,
) -> None:
    text = (
        SPEC.replace("    transactions: {per: 1000}\n", "")
        .replace("{linger.ms: 5}", "{acks: 1}")
        .replace(
            "scenarios:",
            "variants:\n  tx: {brokers: {kafka: {transactions: {per: 10}}}}\nscenarios:",
        )
    )
    issues = issues_of(tmp_path, text)
    assert any(": brokers.kafka.producer: contradicts `transactions`: acks: 1" in i for i in issues)


def test_without_transactions_such_properties_are_fine(tmp_path: Path) -> None:
    text = SPEC.replace("    transactions: {per: 1000}\n", "").replace(
        "{linger.ms: 5}", "{acks: 1, enable.idempotence: false}"
    )
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert load_spec(path).cells


def test_a_transactional_producer_is_idempotent_and_times_out_with_its_transaction() -> None:
    policy = producer_policy({}, transactional=True)
    assert policy.idempotent and policy.retried_by == "librdkafka"
    assert policy.settings["acks"] == "all" and policy.settings["enable.idempotence"] == "true"
    assert policy.delivery_timeout_s == 60.0
    longer = producer_policy({"transaction.timeout.ms": 90000}, transactional=True)
    assert longer.delivery_timeout_s == 90.0
