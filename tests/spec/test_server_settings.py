"""Broker-side settings: located problems, and the catalogs checked against the real brokers.

To regenerate the Kafka catalog after a Kafka upgrade:
    EXPRUN_REGENERATE=1 .venv/bin/pytest tests/spec/test_server_settings.py -k kafka_catalog
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from runner.execution.brokers.kafka import (
    KAFKA_VERSION,
    find_java,
    kafka_classpath,
    render_server_properties,
)
from runner.execution.brokers.nats import find_nats_server
from runner.execution.brokers.nats_config import ClusterMember, exprun_config
from runner.spec.server_settings import (
    KAFKA_CATALOG_FILE,
    KAFKA_MANAGED,
    NATS_BLOCK_ONLY,
    NATS_EXPRUN_DEFAULTS,
    NATS_MANAGED,
    kafka_catalog,
    kafka_server_problems,
    nats_catalog,
    nats_server_problems,
)

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = Path(__file__).with_name("KafkaServerConfigs.java")
SHIPPED_KAFKA_CATALOG = ROOT / "runner" / "spec" / KAFKA_CATALOG_FILE
REGENERATE_ENV = "EXPRUN_REGENERATE"


# --- Kafka: problems -------------------------------------------------------------------------


def test_kafka_clean_settings_have_no_problem() -> None:
    server = {
        "num.io.threads": 16,
        "num.network.threads": "8",
        "min.insync.replicas": 2,
        "message.max.bytes": 1048576,
        "num.partitions": 3,
        "group.initial.rebalance.delay.ms": 0,
        "offsets.topic.replication.factor": 1,
        "auto.create.topics.enable": False,
        "log.cleaner.min.cleanable.ratio": 0.5,
        "log.retention.ms": -1,
        "compression.type": "lz4",
        "log.cleanup.policy": "compact,delete",
        "principal.builder.class": (
            "org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder"
        ),
    }
    assert kafka_server_problems(server) == []


def test_kafka_unknown_key_has_a_suggestion() -> None:
    assert kafka_server_problems({"num.io.thread": 16}) == [
        (("num.io.thread",), "unknown key 'num.io.thread'; did you mean 'num.io.threads'?")
    ]
    [(loc, message)] = kafka_server_problems({"linger.ms": 5})
    assert loc == ("linger.ms",)
    assert message.startswith("unknown key 'linger.ms'")


def test_kafka_unknown_key_without_a_close_one() -> None:
    assert kafka_server_problems({"zzz": 1}) == [
        (("zzz",), f"unknown key 'zzz': not a broker config of Kafka {KAFKA_VERSION}")
    ]


@pytest.mark.parametrize("key", [*KAFKA_MANAGED, "listener.name.plaintext.ssl.key.password"])
def test_kafka_managed_key_is_refused(key: str) -> None:
    [(loc, message)] = kafka_server_problems({key: "x"})
    assert loc == (key,)
    assert message.startswith(f"{key} is set by exprun (")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num.io.threads", "abc", "expects an integer (Kafka type INT)"),
        ("num.io.threads", 1.5, "expects an integer (Kafka type INT)"),
        ("num.io.threads", True, "expects an integer (Kafka type INT)"),
        ("num.io.threads", 2**31, "expects an integer from -2147483648 to 2147483647"),
        ("offsets.topic.replication.factor", 40000, "expects an integer from -32768 to 32767"),
        ("log.retention.ms", "forever", "expects an integer (Kafka type LONG)"),
        ("log.cleaner.min.cleanable.ratio", "half", "expects a number (Kafka type DOUBLE)"),
        ("auto.create.topics.enable", 1, "expects true or false (Kafka type BOOLEAN)"),
        ("auto.create.topics.enable", "yes", "expects true or false (Kafka type BOOLEAN)"),
        ("principal.builder.class", 42, "expects a Java class name (Kafka type CLASS)"),
        ("principal.builder.class", True, "expects a Java class name (Kafka type CLASS)"),
        ("principal.builder.class", "null", "expects a Java class name (Kafka type CLASS)"),
    ],
)
def test_kafka_value_of_the_wrong_type(key: str, value: Any, message: str) -> None:
    [(loc, found)] = kafka_server_problems({key: value})
    assert loc == (key,)
    assert found.startswith(message)


def test_kafka_values_that_are_not_scalars_are_left_to_the_spec_model() -> None:
    server: dict[str, Any] = {
        "num.io.threads": None,
        "num.network.threads": {"a": 1},
        "log.cleanup.policy": [],
    }
    assert kafka_server_problems(server) == []


def test_kafka_problems_are_all_reported() -> None:
    problems = kafka_server_problems({"num.io.threads": "x", "listeners": "y", "nope.x": 1})
    assert [loc for loc, _ in problems] == [("num.io.threads",), ("listeners",), ("nope.x",)]


@pytest.mark.parametrize("voters", [(), (9093, 9094, 9095)], ids=["single", "cluster"])
def test_kafka_exprun_settings_are_known_and_the_structural_ones_managed(
    tmp_path: Path, voters: tuple[int, ...]
) -> None:
    rendered = render_server_properties(
        port=9092, controller_port=9093, data_dir=tmp_path, overrides={}, voters=voters
    )
    written = dict(line.split("=", 1) for line in rendered.splitlines())
    assert set(written) <= set(kafka_catalog().configs)
    assert set(KAFKA_MANAGED) <= set(kafka_catalog().configs)
    refused = {loc[0] for loc, _ in kafka_server_problems(written)}
    assert refused == set(written) & set(KAFKA_MANAGED)
    # The defaults a user may override: the rest of what exprun writes.
    assert {"min.insync.replicas", "message.max.bytes", "num.partitions"} <= set(written) - refused


# --- NATS: problems --------------------------------------------------------------------------


def test_nats_clean_settings_have_no_problem() -> None:
    server = {
        "max_payload": "8MB",
        "write_deadline": "5s",
        "Debug": True,
        "max_conn": 100,
        "accounts": ["A", "B"],
        "tls": {"cert_file": "server.pem", "anything": "checked by the server"},
        "ocsp": False,
        "jetstream": {
            "max_memory_store": "1GB",
            "sync": "always",
            "limits": {"max_ack_pending": 1000, "batch": {"max_msgs": 10}},
        },
        "cluster": {"pool_size": 3, "compression": {"mode": "s2_fast", "rtt": ["10ms"]}},
    }
    assert nats_server_problems(server) == []
    assert nats_server_problems({"cluster": {"compression": "s2_auto"}}) == []


def test_nats_unknown_key_has_a_suggestion() -> None:
    assert nats_server_problems({"write_deadlin": "5s"}) == [
        (("write_deadlin",), "unknown key 'write_deadlin'; did you mean 'write_deadline'?")
    ]


def test_nats_unknown_key_in_nested_blocks() -> None:
    server = {
        "jetstream": {"max_memory_stor": "1GB", "limits": {"batch": {"max_msg": 1}}},
        "cluster": {"pool_siz": 3},
    }
    assert nats_server_problems(server) == [
        (
            ("jetstream", "max_memory_stor"),
            "unknown key 'max_memory_stor'; did you mean 'max_memory_store'?",
        ),
        (
            ("jetstream", "limits", "batch", "max_msg"),
            "unknown key 'max_msg'; did you mean 'max_msgs'?",
        ),
        (("cluster", "pool_siz"), "unknown key 'pool_siz'; did you mean 'pool_size'?"),
    ]
    [(loc, message)] = nats_server_problems({"jetstream": {"zzz": 1}})
    assert loc == ("jetstream", "zzz")
    assert message.endswith("option at the jetstream block")


def test_nats_dotted_key_is_told_to_be_a_block() -> None:
    assert nats_server_problems({"jetstream.max_memory_store": "1GB"}) == [
        (("jetstream.max_memory_store",), "write it as a block: jetstream: {max_memory_store: ...}")
    ]


@pytest.mark.parametrize("path", sorted(NATS_MANAGED))
def test_nats_managed_key_is_refused(path: str) -> None:
    *blocks, key = path.split(".")
    server: dict[str, Any] = {key: "x"}
    for block in reversed(blocks):
        server = {block: server}
    [(loc, message)] = nats_server_problems(server)
    assert loc == tuple(path.split("."))
    assert message.startswith(f"{key} is set by exprun (")


def test_nats_managed_key_in_capitals_is_refused() -> None:
    # nats-server reads option names case-insensitively.
    assert nats_server_problems({"Listen": "127.0.0.1:4222"}) == [
        (("Listen",), "Listen is set by exprun (exprun picks the server's ports)")
    ]


@pytest.mark.parametrize(
    ("server", "loc", "message"),
    [
        ({"cluster": 1}, ("cluster",), "expects a block of options, not a single value"),
        ({"tls": "on"}, ("tls",), "expects a block of options, not a single value"),
        ({"gateway": ["a"]}, ("gateway",), "expects a block of options, not a list"),
        ({"jetstream": {"limits": 5}}, ("jetstream", "limits"), "expects a block of options"),
        ({"max_payload": {"a": 1}}, ("max_payload",), "expects a single value, not a block"),
        ({"jetstream": {"domain": {}}}, ("jetstream", "domain"), "expects a single value"),
        ({"jetstream": True}, ("jetstream",), "expects a block of options: exprun turns"),
        ({"jetstream": "enabled"}, ("jetstream",), "expects a block of options: exprun turns"),
    ],
)
def test_nats_block_and_value_shapes(
    server: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    [(found_loc, found)] = nats_server_problems(server)
    assert found_loc == loc
    assert found.startswith(message)


def test_nats_one_option_under_two_names() -> None:
    assert nats_server_problems({"max_connections": 1, "max_conn": 2}) == [
        (("max_conn",), "max_conn and max_connections are the same option: set it once")
    ]
    assert nats_server_problems({"debug": True, "DEBUG": False}) == [
        (("DEBUG",), "DEBUG and debug are the same option: set it once")
    ]


def test_nats_other_name_of_an_exprun_default() -> None:
    [(loc, message)] = nats_server_problems({"jetstream": {"max_mem": "1GB"}})
    assert loc == ("jetstream", "max_mem")
    assert message.startswith("write max_memory_store (nats-server reads max_mem as")
    [(loc, message)] = nats_server_problems({"Max_Payload": "1MB"})
    assert message.startswith("write max_payload")


def _option_paths(config: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in config.items():
        paths.add(prefix + key)
        if isinstance(value, dict):
            paths |= _option_paths(value, f"{prefix}{key}.")
    return paths


def test_nats_catalog_knows_what_exprun_manages_and_writes(tmp_path: Path) -> None:
    blocks = nats_catalog().blocks
    for path in [*NATS_MANAGED, *NATS_EXPRUN_DEFAULTS, *NATS_BLOCK_ONLY]:
        where, _, key = path.rpartition(".")
        assert key in blocks[where].options, path
    for block in blocks.values():
        assert set(block.canonical) <= set(block.options)
    member = ClusterMember("n1", 6222, [6223, 6224])
    config = exprun_config(port=4222, monitor_port=8222, store_dir=tmp_path, member=member)
    # Every option exprun writes is exprun's alone, or a default under the name checked.
    written = _option_paths(config) - set(NATS_BLOCK_ONLY) - {"cluster"}
    assert written <= set(NATS_MANAGED) | NATS_EXPRUN_DEFAULTS


# --- the catalogs against the real brokers ---------------------------------------------------


def _kafka_java(*args: str, stdin: str | None = None) -> str:
    """Run the generator with the broker's own jars; its stdout."""
    classpath = os.pathsep.join(str(jar) for jar in kafka_classpath(KAFKA_VERSION))
    argv = [str(find_java()), "-cp", classpath, str(GENERATOR), *args]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _catalog_text(catalog: dict[str, Any]) -> str:
    ordered = {
        "kafka_version": catalog["kafka_version"],
        "source": catalog["source"],
        "configs": dict(sorted(catalog["configs"].items())),
    }
    return json.dumps(ordered, indent=2) + "\n"


@pytest.mark.integration
def test_kafka_catalog_matches_the_broker(tmp_path: Path) -> None:
    generated = _catalog_text(json.loads(_kafka_java("catalog")))
    (tmp_path / KAFKA_CATALOG_FILE).write_text(generated)
    if os.environ.get(REGENERATE_ENV) == "1":
        SHIPPED_KAFKA_CATALOG.write_text(generated)
    assert SHIPPED_KAFKA_CATALOG.read_text() == generated, (
        f"{SHIPPED_KAFKA_CATALOG.relative_to(ROOT)} differs from Kafka {KAFKA_VERSION}'s own "
        f"(generated: {tmp_path / KAFKA_CATALOG_FILE}); regenerate it with "
        f"`{REGENERATE_ENV}=1 .venv/bin/pytest {Path(__file__).relative_to(ROOT)} "
        "-k kafka_catalog` and review the diff"
    )
    assert json.loads(generated)["kafka_version"] == KAFKA_VERSION
    assert kafka_catalog().kafka_version == KAFKA_VERSION


# (key, value as YAML gives it): accepted and refused values of each ConfigDef type.
KAFKA_SAMPLES: list[tuple[str, Any]] = [
    *[
        ("num.io.threads", v)
        for v in (16, "16", " 16 ", "+16", "-0", "007", "2147483647", "2147483648", "-2147483649")
    ],
    *[("num.io.threads", v) for v in ("abc", "1.5", 1.5, True, "", "0x10", "1_000", "16L")],
    *[("log.retention.ms", v) for v in (-1, "9223372036854775807", "9223372036854775808", 1.0)],
    *[("offsets.topic.replication.factor", v) for v in (1, 32767, 32768, -32769, "x")],
    *[
        ("log.cleaner.min.cleanable.ratio", v)
        for v in (0.5, "0.5", 1, "1e-3", ".5", "5.", "NaN", "-Infinity", "0x1p-1", "1d")
    ],
    *[("log.cleaner.min.cleanable.ratio", v) for v in ("inf", "half", True, "1_0", ".", "e5", "")],
    *[
        ("auto.create.topics.enable", v)
        for v in (True, False, "true", "TRUE", " false ", "yes", 1, 0, "")
    ],
    *[
        ("principal.builder.class", v)
        for v in (
            "org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder",
            42,
            True,
            "1abc",
            "",
            "a..b",
            "null",
        )
    ],
    *[("compression.type", v) for v in ("lz4", 5, True)],
    *[("log.cleanup.policy", v) for v in ("delete", "compact,delete", 1)],
    ("ssl.key.password", "secret"),
]


def _as_property(value: Any) -> str:
    """As exprun writes a YAML value into server.properties."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@pytest.mark.integration
def test_kafka_type_check_agrees_with_the_broker() -> None:
    lines = "".join(f"{key}\t{_as_property(value)}\n" for key, value in KAFKA_SAMPLES)
    verdicts = _kafka_java("check", stdin=lines).splitlines()
    assert len(verdicts) == len(KAFKA_SAMPLES)
    disagreements = []
    for (key, value), verdict in zip(KAFKA_SAMPLES, verdicts, strict=True):
        parsed, broker = verdict.split("\t")
        ours = kafka_server_problems({key: value})
        # Same verdict as ConfigDef's type parsing; and what we refuse, the broker refuses.
        if (ours == []) != (parsed == "ok") or (ours and broker == "ok"):
            disagreements.append((key, value, ours, parsed, broker))
    assert disagreements == []
    # The broker really refuses the example of the docs, for the reason we give.
    index = KAFKA_SAMPLES.index(("num.io.threads", "abc"))
    assert "Not a number of type INT" in verdicts[index].split("\t")[1]


NATS_MISSPELLED = [
    ("", "write_deadlin"),
    ("", "max_paylod"),
    ("jetstream", "max_memory_stor"),
    ("jetstream", "storedirs"),
    ("jetstream.limits", "max_ack_pendin"),
    ("jetstream.limits.batch", "max_msg"),
    ("jetstream.tpm", "pcrs"),
    ("cluster", "pool_siz"),
    ("cluster.compression", "mod"),
]


def _nats_conf(block: str, key: str, value: str) -> str:
    """A config with just `key` in its block: value 'block' writes an empty block."""
    text = f"{key} {{}}" if value == "block" else f"{key}: {value}"
    for part in reversed(block.split(".") if block else []):
        text = f"{part} {{\n{text}\n}}"
    return text + "\n"


@pytest.mark.integration
def test_nats_option_list_matches_the_server(tmp_path: Path) -> None:
    binary = find_nats_server()
    cases: list[tuple[str, str, str, str]] = []  # (block, key, value, expectation)
    for path, block in nats_catalog().blocks.items():
        for key, kind in block.options.items():
            # Known: whatever the server says of the value, it is not "unknown field".
            cases.append((path, key, "1" if kind == "value" else "block", "known"))
            if kind in ("block", "map"):
                cases.append((path, key, "1", "refused"))
            elif kind == "value":
                cases.append((path, key, "block", "refused"))
    cases += [(path, key, "1", "unknown") for path, key in NATS_MISSPELLED]

    def outcome(index: int) -> tuple[int, str]:
        conf = tmp_path / f"{index}.conf"
        conf.write_text(_nats_conf(*cases[index][:3]))
        argv = [str(binary), "-c", str(conf), "-t"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        return done.returncode, done.stdout + done.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(outcome, range(len(cases))))
    wrong = []
    for (path, key, value, expected), (code, output) in zip(cases, outcomes, strict=True):
        unknown = "unknown field" in output
        if (
            (expected == "known" and unknown)
            or (expected == "refused" and (code == 0 or unknown))
            or (expected == "unknown" and not unknown)
        ):
            wrong.append((path, key, value, expected, output.strip()))
    assert wrong == []
    assert (
        nats_catalog().nats_server_version
        in subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    )
