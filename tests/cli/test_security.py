"""Secured brokers end to end: embedded ones exprun secures itself, external ones reached with
the spec's TLS files and credentials, and the one-line refusals when those are wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exprun_process import environment, exprun, no_leftovers, read_jsonl, run_spec

from runner.execution.brokers import RunningBroker, start_kafka, start_nats
from runner.execution.brokers.certs import make_certificates
from schemas.spec import KafkaSecurity, NatsSecurity

pytestmark = pytest.mark.integration


def assert_exact(trial: dict[str, Any]) -> None:
    assert trial["status"] == "ok", trial["error"]
    m = trial["metrics"]
    assert m["sent"] > 0 and m["acked"] == m["sent"] == m["received"], m
    assert (m["lost"], m["duplicated"], m["publish_errors"]) == (0, 0, {}), m


EMBEDDED_NATS = """\
version: 1
name: nats-secured
brokers:
  nats:
    type: nats
    security: {tls: true, auth: nkey}
    workers: 8
defaults: {message_size: 512B, settle_time: 100ms}
scenarios:
  Small: {messages: 2000}
variants:
  plain: {brokers: {nats: {security: {tls: false, auth: none}}}}
  nkey: {}
  user: {brokers: {nats: {security: {auth: user}}}}
  token: {brokers: {nats: {security: {tls: false, auth: token}}}}
baseline: plain
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.timeout(120)
def test_embedded_nats_secured_every_way_serves_exact_trials(tmp_path: Path) -> None:
    trials = run_spec(tmp_path, EMBEDDED_NATS, timeout=100)
    assert {t["variant"] for t in trials} == {"plain", "nkey", "user", "token"}
    for trial in trials:
        assert_exact(trial)


CLUSTER_NATS = """\
version: 1
name: nats-secured-cluster
brokers:
  nats:
    type: nats
    nodes: 3
    security: {tls: true, auth: user}
    stream: {storage: file, replicas: 3}
    consumer: {kind: pull, ack: explicit, ack_wait: 2s, max_ack_pending: 5000, batch: 200}
    workers: 32
defaults: {message_size: 512B, settle_time: 100ms, drain_timeout: 20s}
scenarios:
  Kill:
    messages: 6000
    rate: 1000/s
    faults:
      - {at: 40%, action: kill_leader}
      - {at: 80%, action: restart}
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.timeout(180)
def test_kill_leader_on_a_secured_nats_cluster_is_exact(tmp_path: Path) -> None:
    [trial] = run_spec(tmp_path, CLUSTER_NATS, timeout=160)
    assert_exact(trial)
    kill, restart = trial["faults"]
    assert kill["error"] is None and kill["node"] in (1, 2, 3), kill
    assert restart["error"] is None, restart
    assert trial["metrics"]["publish_retries"] > 0, trial["metrics"]


@pytest.fixture(scope="module")
def token_nats() -> Iterator[RunningBroker]:
    """A NATS with TLS and a token, standing in for a secured external server."""
    broker = start_nats(security=NatsSecurity(tls=True, auth="token"))
    yield broker
    broker.stop()


def external_spec(broker: RunningBroker, security: str) -> str:
    port = broker.address.rsplit(":", 1)[1]
    return f"""\
version: 1
name: nats-external-secured
description: a token from ${{EXPRUN_TEST_TOKEN}}
brokers:
  nats:
    type: nats
    endpoint: tls://127.0.0.1:{port}
    security: {security}
    workers: 8
defaults: {{message_size: 256B, settle_time: 100ms}}
scenarios:
  Small: {{messages: 500}}
repetitions: 1
warmup: 0
reports: [markdown, csv, json, html]
"""


@pytest.mark.timeout(120)
def test_secrets_and_key_files_appear_in_no_output(
    tmp_path: Path, token_nats: RunningBroker
) -> None:
    access = token_nats.access.nats
    assert access.ca is not None and access.token is not None
    # A client pair the server does not ask for, so that a key file's contents are in play.
    tls_dir = Path(access.ca).parent
    key_text = (tls_dir / "client-key.pem").read_text()
    security = (
        f"{{token: '${{EXPRUN_TEST_TOKEN}}', tls: {{ca: {access.ca}, "
        f"cert: {tls_dir / 'client.pem'}, key: {tls_dir / 'client-key.pem'}}}}}"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(external_spec(token_nats, security))
    run = tmp_path / "run"
    env = environment(tmp_path, EXPRUN_TEST_TOKEN=access.token)
    done = exprun("run", str(spec), "--out", str(run), tmp=tmp_path, env=env, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    [trial] = read_jsonl(run / "trials.jsonl")
    assert_exact(trial)
    key_body = "".join(key_text.strip().splitlines()[1:-1])
    planted = [access.token, key_body, key_body[:40]]
    for output in (done.stdout, done.stderr):
        assert not any(secret in output for secret in planted)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"trials.jsonl", "report.md", "report.html", "results.json"} <= {p.name for p in files}
    for path in files:
        text = path.read_text(errors="replace")
        assert not any(secret in text for secret in planted), path


@pytest.mark.timeout(60)
def test_a_wrong_token_is_one_line_and_exit_3(tmp_path: Path, token_nats: RunningBroker) -> None:
    access = token_nats.access.nats
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        external_spec(token_nats, f"{{token: '${{EXPRUN_TEST_TOKEN}}', tls: {{ca: {access.ca}}}}}")
    )
    env = environment(tmp_path, EXPRUN_TEST_TOKEN="not-the-token-1234")
    done = exprun("run", str(spec), "--out", str(tmp_path / "run"), tmp=tmp_path, env=env)
    assert done.returncode == 3, done.stderr
    # The run's heading, then the one line of the refusal.
    [error] = [line for line in done.stderr.splitlines() if line.startswith("exprun:")]
    assert "Traceback" not in done.stderr and done.stderr.rstrip().endswith(error), done.stderr
    assert "broker 'nats' (nats): authentication failed at nats://127.0.0.1:" in error
    assert "(token)" in error
    assert "not-the-token-1234" not in done.stderr + done.stdout
    no_leftovers(tmp_path)


@pytest.mark.timeout(60)
def test_tls_on_one_side_only_says_which_side_expected_what(
    tmp_path: Path, token_nats: RunningBroker
) -> None:
    env = environment(tmp_path, EXPRUN_TEST_TOKEN=token_nats.access.nats.token or "")
    plain_endpoint = external_spec(token_nats, "{token: '${EXPRUN_TEST_TOKEN}'}").replace(
        "tls://", "nats://"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(plain_endpoint)
    done = exprun("run", str(spec), "--out", str(tmp_path / "run"), tmp=tmp_path, env=env)
    assert done.returncode == 3, done.stderr
    assert "requires TLS, but the client's security has no `tls`" in done.stderr
    # And a CA the server's certificate was not made by: named in the message.
    other_ca = make_certificates(tmp_path / "other", 1).ca
    spec.write_text(
        external_spec(token_nats, f"{{token: '${{EXPRUN_TEST_TOKEN}}', tls: {{ca: {other_ca}}}}}")
    )
    done = exprun("run", str(spec), "--out", str(tmp_path / "run2"), tmp=tmp_path, env=env)
    assert done.returncode == 3, done.stderr
    assert f"is not trusted by {other_ca}" in done.stderr and "Traceback" not in done.stderr
    no_leftovers(tmp_path)


EMBEDDED_KAFKA = """\
version: 1
name: kafka-secured
brokers:
  kafka:
    type: kafka
    security: {tls: true, sasl: scram-sha-512}
    jvm: {heap: 512m}
    workers: 8
defaults: {message_size: 512B, settle_time: 100ms}
scenarios:
  Small: {messages: 3000}
variants:
  plain: {brokers: {kafka: {security: {tls: false, sasl: none}}}}
  ssl: {brokers: {kafka: {security: {sasl: none}}}}
  sasl-ssl: {}
baseline: plain
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_embedded_kafka_secured_serves_exact_trials(tmp_path: Path) -> None:
    trials = run_spec(tmp_path, EMBEDDED_KAFKA, timeout=280)
    assert {t["variant"] for t in trials} == {"plain", "ssl", "sasl-ssl"}
    for trial in trials:
        assert_exact(trial)


CLUSTER_KAFKA = """\
version: 1
name: kafka-secured-cluster
brokers:
  kafka:
    type: kafka
    nodes: 3
    security: {tls: true, sasl: scram-sha-512}
    server: {min.insync.replicas: 2}
    jvm: {heap: 512m}
    topic: {partitions: 3, replication_factor: 3}
    producer: {acks: all, enable.idempotence: true}
    workers: 32
defaults: {message_size: 512B, settle_time: 100ms, drain_timeout: 20s}
scenarios:
  Failover:
    messages: 6000
    rate: 1500/s
    faults:
      - {at: 40%, action: kill_leader}
      - {at: 70%, action: restart}
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.own_kafka
@pytest.mark.timeout(400)
def test_kill_leader_on_a_secured_kafka_cluster_is_exact(tmp_path: Path) -> None:
    [trial] = run_spec(tmp_path, CLUSTER_KAFKA, timeout=380)
    assert_exact(trial)
    kill, restart = trial["faults"]
    assert kill["error"] is None and kill["node"] in (1, 2, 3), kill
    assert restart["error"] is None, restart
    assert any(node["exited"] for node in trial["broker_nodes"]), trial["broker_nodes"]


def external_kafka_spec(broker: RunningBroker, client: str) -> str:
    return f"""\
version: 1
name: kafka-external-secured
brokers:
  kafka:
    type: kafka
    endpoint: {broker.address}
    client: {client}
    workers: 8
defaults: {{message_size: 256B, settle_time: 100ms}}
scenarios:
  Small: {{messages: 500}}
repetitions: 1
warmup: 0
reports: [markdown, json]
"""


@pytest.mark.own_kafka
@pytest.mark.timeout(300)
def test_external_kafka_wrong_password_and_plaintext_client_are_one_line_exit_3(
    tmp_path: Path,
) -> None:
    with start_kafka(security=KafkaSecurity(tls=True, sasl="scram-sha-512")) as broker:
        properties = broker.access.kafka
        good = (
            "{security.protocol: SASL_SSL, sasl.mechanism: SCRAM-SHA-512, sasl.username: exprun, "
            f"sasl.password: '${{EXPRUN_TEST_PASSWORD}}', ssl.ca.location: "
            f"{properties['ssl.ca.location']}}}"
        )
        spec = tmp_path / "spec.yaml"
        spec.write_text(external_kafka_spec(broker, good))
        right = environment(tmp_path, EXPRUN_TEST_PASSWORD=properties["sasl.password"])
        done = exprun("run", str(spec), "--out", str(tmp_path / "ok"), tmp=tmp_path, env=right)
        assert done.returncode == 0, done.stderr[-2000:]
        [trial] = read_jsonl(tmp_path / "ok" / "trials.jsonl")
        assert_exact(trial)

        wrong = environment(tmp_path, EXPRUN_TEST_PASSWORD="not-the-password-42")
        done = exprun("run", str(spec), "--out", str(tmp_path / "bad"), tmp=tmp_path, env=wrong)
        assert done.returncode == 3, done.stderr
        [error] = [line for line in done.stderr.splitlines() if line.startswith("exprun:")]
        assert "Traceback" not in done.stderr and done.stderr.rstrip().endswith(error)
        assert "authentication failed at" in error and "user exprun, SCRAM-SHA-512" in error
        assert "not-the-password-42" not in done.stderr + done.stdout

        spec.write_text(external_kafka_spec(broker, "{}"))
        done = exprun("run", str(spec), "--out", str(tmp_path / "plain"), tmp=tmp_path)
        assert done.returncode == 3, done.stderr
        assert "expects TLS (SSL), but the client's security.protocol is PLAINTEXT" in done.stderr
    no_leftovers(tmp_path)
