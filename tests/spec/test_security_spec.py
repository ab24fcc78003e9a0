"""Security settings of a spec: what each kind of broker takes, secrets only from the
environment, files found beside the spec, and one broker instance per security setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.execution.brokers.access import external_access
from runner.execution.instances import plan_instances
from runner.execution.plan import make_plan
from runner.spec.loader import load_spec

ROOT = Path(__file__).resolve().parents[2]

EXTERNAL = """\
version: 1
name: staging
brokers:
  nats:
    type: nats
    endpoint: tls://nats.staging:4222,tls://nats2.staging:4222
    security:
      creds: ${NATS_CREDS_FILE}
      tls: {ca: certs/ca.pem, cert: certs/client.pem, key: certs/client-key.pem}
  kafka:
    type: kafka
    endpoint: kafka.staging:9093
    client:
      security.protocol: SASL_SSL
      sasl.mechanism: SCRAM-SHA-512
      sasl.username: bench
      sasl.password: ${KAFKA_PASSWORD}
      ssl.ca.location: certs/ca.pem
scenarios:
  Small: {messages: 1000}
"""


def issues(path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return [str(issue).removeprefix(f"{path}:") for issue in caught.value.issues]


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.pem", "client.pem", "client-key.pem", "bench.creds"):
        (certs / name).write_text(f"-----BEGIN {name}-----\n")
    monkeypatch.setenv("NATS_CREDS_FILE", "certs/bench.creds")
    monkeypatch.setenv("KAFKA_PASSWORD", "pa55-from-env")
    path = tmp_path / "spec.yaml"
    path.write_text(EXTERNAL)
    return path


def test_the_issues_external_example_loads_with_its_files_beside_the_spec(staging: Path) -> None:
    loaded = load_spec(staging)
    assert "pa55-from-env" in loaded.secrets
    by_broker = {cell.cell.broker: cell.broker for cell in loaded.cells}
    nats = external_access(by_broker["nats"]).nats
    certs = staging.parent / "certs"
    assert (
        nats.tls and nats.ca == str(certs / "ca.pem") and nats.key == str(certs / "client-key.pem")
    )
    assert nats.creds == str(certs / "bench.creds")
    kafka = external_access(by_broker["kafka"]).kafka
    assert kafka["ssl.ca.location"] == str(certs / "ca.pem")
    assert kafka["sasl.password"] == "pa55-from-env"


def test_a_missing_key_file_is_located(staging: Path) -> None:
    (staging.parent / "certs" / "client-key.pem").unlink()
    [issue] = issues(staging)
    assert issue.startswith("9:60:") and "brokers.nats.security.tls.key" in issue
    assert "cannot read certs/client-key.pem: No such file or directory" in issue


def test_a_secret_written_in_the_spec_is_refused(staging: Path) -> None:
    staging.write_text(EXTERNAL.replace("${KAFKA_PASSWORD}", "hunter2"))
    [issue] = issues(staging)
    assert issue.startswith("17:22:") and "brokers.kafka.client.sasl.password" in issue
    assert "give it as ${ENV_VAR}" in issue and "hunter2" not in issue


def test_what_only_an_embedded_broker_takes(staging: Path) -> None:
    staging.write_text(
        EXTERNAL.replace("      creds: ${NATS_CREDS_FILE}\n", "      auth: user\n").replace(
            "    type: kafka\n", "    type: kafka\n    security: {tls: true}\n"
        )
    )
    found = issues(staging)
    assert any("`auth` chooses the login exprun makes for an embedded" in i for i in found)
    assert any("an external Kafka's security.protocol, sasl.* and ssl.*" in i for i in found)


EMBEDDED = """\
version: 1
name: secured
brokers:
  kafka:
    type: kafka
    security: {tls: true, sasl: scram-sha-512}
    client: {sasl.username: me}
  nats:
    type: nats
    security: {tls: true, auth: nkey, token: abc}
scenarios:
  Small: {messages: 1000}
"""


def test_an_embedded_broker_makes_its_own_login(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(EMBEDDED)
    found = issues(path)
    assert any(
        "sasl.username is set by exprun for an embedded broker it secures" in i for i in found
    )
    assert any("token: exprun makes the login of an embedded server" in i for i in found)


def test_each_security_setting_is_its_own_instance() -> None:
    loaded = load_spec(ROOT / "experiments" / "tls_cost.yaml")
    instances = plan_instances(make_plan(loaded.spec, loaded.cells))
    assert [i.label for i in instances] == [
        "kafka[plain]",
        "nats[plain]",
        "kafka[tls]",
        "nats[tls]",
        "kafka[secured]",
        "nats[secured]",
    ]
    assert [i.describe() for i in instances if i.broker == "nats"] == [
        "1 node",
        "1 node, TLS",
        "1 node, TLS, login nkey",
    ]
