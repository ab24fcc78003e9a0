"""`exprun new`: a commented starter spec that validates and runs in about a minute."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from runner.errors import BadInputError
from schemas.spec import NAME_PATTERN

BROKER_TYPES = ("kafka", "nats")
SCHEMA_FILE = "experiment.schema.json"

_HEADER = """\
# yaml-language-server: $schema={schema}
# A starter experiment written by `exprun new`: run it with `exprun {path}`;
# `exprun plan {path}` shows the trials it expands to. Every key is checked (an unknown
# one is an error with a "did you mean"); `exprun schema` has the whole format.
version: 1
name: {name}
description: >
  Does a bigger publish batch / window raise throughput without hurting latency?
  (Replace with the question your experiment answers.)
"""

_BROKERS = {
    "kafka": """\
  kafka:
    type: kafka
    endpoint: embedded            # exprun starts Apache Kafka itself; or "host:9092,host2:9092"
    topic: {partitions: 1, replication_factor: 1}
    producer: {acks: all}         # librdkafka properties, checked by librdkafka at load time
    # workers: 256                # handler pool per trial (the default): see processing_time
""",
    "nats": """\
  nats:
    type: nats
    endpoint: embedded            # exprun starts nats-server (JetStream on); or "nats://host:4222"
    stream: {storage: memory}     # also max_msgs, max_bytes, discard, replicas
    # workers: 256                # handler pool per trial (the default): see processing_time
""",
}

_WORKLOAD = """\
defaults:                         # every trial, unless a scenario or variant says otherwise
  message_size: 1KiB
  processing_time: 0ms            # simulated handler work per message, spread over `workers`
  settle_time: 500ms              # wait before counting leaked threads
scenarios:                        # smallest first: trends are read in this order
  Small: {messages: 2000}
  Large: {messages: 20000}
variants:                         # what you compare; settings here override the ones above
"""

_VARIANTS = {
    "before": {
        "description": "small batches / few publishes in flight",
        "kafka": "kafka: {producer: {linger.ms: 0}}",
        "nats": "nats: {publish: {max_pending: 64}}",
    },
    "after": {
        "description": "batching for 5 ms / 4,096 publishes in flight",
        "kafka": "kafka: {producer: {linger.ms: 5}}",
        "nats": "nats: {publish: {max_pending: 4096}}",
    },
}

_FOOTER = """\
baseline: before                  # the variant the others are compared with
repetitions: 5                    # per cell: the fewest at which a Mann-Whitney U test decides
warmup: 1                         # unmeasured trials per cell first
targets:                          # scored in the report; `--check-targets` makes them gate exit
  - {name: more throughput, metric: throughput, variant: after, change: ">= +10%"}
  - {name: nothing lost, metric: success_rate, value: ">= 100%"}
reports: [markdown, csv, json, html]
"""


def starter_path(name: str) -> Path:
    """NAME -> NAME.yaml (a given .yaml / .yml suffix is kept)."""
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else path.with_name(path.name + ".yaml")


def render_starter(path: Path, brokers: Sequence[str]) -> str:
    """The starter spec for `path`, with the chosen broker types."""
    chosen = [b for b in BROKER_TYPES if b in brokers]
    schema = _schema_reference(path)
    parts = [_HEADER.format(schema=schema, path=path, name=path.stem), "brokers:\n"]
    parts += [_BROKERS[b] for b in chosen]
    parts.append(_WORKLOAD)
    for variant, settings in _VARIANTS.items():
        overrides = ", ".join(settings[b] for b in chosen)
        parts.append(
            f"  {variant}:\n    description: {settings['description']}\n"
            f"    brokers: {{{overrides}}}\n"
        )
    parts.append(_FOOTER)
    return "".join(parts)


def write_starter(name: str, brokers: Sequence[str]) -> Path:
    """Write NAME.yaml; refuses an invalid name or an existing file (BadInputError)."""
    path = starter_path(name)
    if not NAME_PATTERN.fullmatch(path.stem):
        raise BadInputError(
            f"{path.stem!r} is not a spec name: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    text = render_starter(path, brokers)
    try:
        with path.open("x") as handle:
            handle.write(text)
    except FileExistsError:
        raise BadInputError(f"{path} exists; exprun new never overwrites a file") from None
    except OSError as error:
        raise BadInputError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def _schema_reference(path: Path) -> str:
    """The installed JSON Schema, relative to the spec's folder (so a checkout can move)."""
    schema = Path(str(resources.files("schemas").joinpath(SCHEMA_FILE)))
    try:
        return os.path.relpath(schema, path.resolve().parent)
    except ValueError:  # another drive (Windows): no relative path exists
        return schema.as_uri()
