"""The experiment spec, version 1: what a performance engineer commits and reviews."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas.goals import Condition, parse_condition, parse_goal
from schemas.metrics import METRICS, SEARCHABLE_METRICS
from schemas.problems import Loc
from schemas.units import (
    Backlog,
    ByteSize,
    Duration,
    PositiveDuration,
    Rate,
    RateRange,
    Share,
    format_duration,
    parse_duration,
)

DEFAULT_VARIANT = "default"
# Large enough that with a few ms of processing_time the pool is rarely the bottleneck; with
# processing_time 0 the pool is bypassed altogether.
DEFAULT_WORKERS = 256
GOAL_PATTERN = r"^\s*(>=|<=|==|>|<)\s*[+-]?\d+(\.\d+)?\s*%?\s*$"


def _checked_goal(text: str) -> str:
    parse_goal(text)
    return text


EMBEDDED = "embedded"
# Every message starts with its sequence number and send time (8 bytes each): its smallest size.
MESSAGE_HEADER_BYTES = 16


def _holds_the_header(size: int) -> int:
    if size < MESSAGE_HEADER_BYTES:
        raise ValueError(
            f"{size} B is too small: every message carries a {MESSAGE_HEADER_BYTES}-byte header "
            "(sequence number + send time)"
        )
    return size


MessageSize = Annotated[ByteSize, AfterValidator(_holds_the_header)]

GoalText = Annotated[
    str,
    AfterValidator(_checked_goal),
    WithJsonSchema({"type": "string", "pattern": GOAL_PATTERN}),
]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
# librdkafka property values as YAML gives them; librdkafka itself checks them at load time.
KafkaProperties = dict[str, str | int | float | bool]
# How p-values are adjusted for the many comparisons of one report.
Correction = Literal["none", "holm", "bh"]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSettings(StrictModel):
    partitions: PositiveInt = Field(1, description="partitions of the per-trial topic")
    replication_factor: PositiveInt = Field(1, description="replication factor of the topic")


class StreamSettings(StrictModel):
    storage: Literal["memory", "file"] = Field("memory", description="JetStream storage type")
    max_msgs: PositiveInt | Literal["unlimited"] = Field(
        "unlimited", description="stream limit on messages (MaxMsgs)"
    )
    max_bytes: ByteSize | Literal["unlimited"] = Field(
        "unlimited", description="stream limit on bytes (MaxBytes), e.g. 100MB"
    )
    discard: Literal["old", "new"] = Field(
        "old", description="what the stream does at a limit: drop old messages or refuse new"
    )
    replicas: PositiveInt = Field(1, description="stream replicas")
    history: int = Field(1, ge=1, le=64, description="pattern kv: values the bucket keeps per key")
    duplicate_window: PositiveDuration | None = Field(
        None,
        description="how long the stream remembers message ids, to know a retry of a message "
        "it stored; at least publish.delivery_timeout (its default)",
    )


class PublishSettings(StrictModel):
    """How a JetStream producer publishes: its in-flight window and what it does on a failure."""

    max_pending: PositiveInt = Field(
        4096,
        description="messages published and not yet settled (acked, or given up), retries included",
    )
    delivery_timeout: Duration = Field(
        30.0,
        description="a publish that fails (no responders, no answer, a dropped connection) is "
        "retried with the same message id until acked or this long after its first try; 0s: "
        "one try, and no message ids",
    )
    retry_wait: Duration = Field(
        0.25, description="wait before retrying a publish the cluster refused (no responders)"
    )
    ack_timeout: PositiveDuration = Field(
        5.0,
        description="a publish with no answer this long is tried again (one try: its outcome "
        "is unknown)",
    )

    @property
    def retrying(self) -> bool:
        return self.delivery_timeout > 0


class PayloadFile(StrictModel):
    file: str = Field(description="a file whose bytes make the message bodies")


class PayloadCompressibility(StrictModel):
    compressibility: float = Field(
        ge=0, le=1, description="share of each body that compresses away (the rest is random)"
    )


Payload = Literal["zeros", "random"] | PayloadFile | PayloadCompressibility
KEY_KINDS = ("none", "round_robin", "random")


def _keys(value: object) -> object:
    if isinstance(value, str) and value in KEY_KINDS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(
        f"keys {value!r}: write none, round_robin, random, or a number of distinct keys (1 or more)"
    )


Keys = Annotated[
    Literal["none", "round_robin", "random"] | int,
    BeforeValidator(_keys),
    WithJsonSchema(
        {
            "anyOf": [{"enum": list(KEY_KINDS)}, {"type": "integer", "minimum": 1}],
            "description": "none, round_robin, random, or a number of distinct keys",
        }
    ),
]


class NatsConsumer(StrictModel):
    """How a JetStream subscription reads: the consumer kind and its ack policy."""

    kind: Literal["ordered", "push", "pull"] | None = Field(
        None,
        description="ordered (one consumer, no acks: the fastest reliable read), push (durable, "
        "a deliver group shared by the subscription's consumers) or pull (fetch in batches); "
        "default: ordered for one consumer, a shared pull consumer for several",
    )
    ack: Literal["none", "explicit", "all"] = Field(
        "none",
        description="none, explicit (each message acked once its handler finished) or all "
        "(the latest handled message acked for everything before it)",
    )
    max_ack_pending: PositiveInt | None = Field(
        None, description="deliveries the server lets wait for their ack (server default 1000)"
    )
    batch: PositiveInt = Field(512, description="messages per pull request")
    ack_wait: PositiveDuration | None = Field(
        None, description="an unacked delivery is redelivered after this (server default 30s)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> NatsConsumer:
        if self.kind == "ordered" and self.ack != "none":
            raise ValueError("an ordered consumer does not ack: use kind push or pull to ack")
        if self.max_ack_pending is not None and self.batch > self.max_ack_pending:
            raise ValueError(
                f"batch {self.batch} is larger than max_ack_pending {self.max_ack_pending}: a "
                "pull would ask for more than the server lets wait for acks"
            )
        return self

    @property
    def acks(self) -> bool:
        return self.ack != "none"


NATS_CONSUMER_KEYS = frozenset(NatsConsumer.model_fields)
# An embedded cluster of more than this many nodes is not a one-machine experiment.
MAX_NODES = 9
HEAP_PATTERN = r"^[1-9][0-9]*[kKmMgG]?$"
# server.properties entries as YAML gives them; the spec loader checks them against Kafka's.
KafkaServerSettings = dict[str, str | int | float | bool]
# nats-server options, with blocks (jetstream: {...}) as nested mappings.
NatsServerSettings = dict[str, Any]


class JvmSettings(StrictModel):
    """The JVM of each embedded Kafka node."""

    heap: str | None = Field(
        None,
        pattern=HEAP_PATTERN,
        description="initial and maximum heap of each node (-Xms/-Xmx), e.g. 1G or 512m; "
        "default 512m initial, 1g maximum",
    )
    options: list[str] = Field(
        default_factory=list, description="further JVM flags, e.g. -XX:+UseZGC"
    )

    @field_validator("options")
    @classmethod
    def _flags(cls, options: list[str]) -> list[str]:
        for option in options:
            if not option.startswith("-"):
                raise ValueError(f"{option!r} is not a JVM flag (they start with '-')")
            if option.startswith(("-Xmx", "-Xms")):
                raise ValueError(f"{option}: set the heap with `heap`")
        return options


def _telemetry_switch(value: Any) -> Any:
    """`telemetry: off` (YAML reads it as false) and `on` are switches; a mapping says where."""
    if value is False or value == "off":
        return {"enabled": False}
    if value is True or value == "on":
        return {}
    return value


def _url_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


TelemetryUrls = Annotated[list[str], BeforeValidator(_url_list)]


class TelemetrySettings(StrictModel):
    """Where the broker's own figures are read during each trial (sampled every second)."""

    enabled: bool = Field(True, description="false (or `telemetry: off`): sample nothing")
    url: TelemetryUrls = Field(
        default_factory=list,
        description="an external NATS's monitoring URL, one per node, e.g. http://host:8222",
    )
    prometheus: TelemetryUrls = Field(
        default_factory=list,
        description="an external Kafka's Prometheus (JMX exporter) URL, one per node, e.g. "
        "http://host:7071/metrics",
    )

    @field_validator("url", "prometheus")
    @classmethod
    def _http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.fullmatch(r"https?://[^\s/:]+(:\d{1,5})?(/\S*)?", url):
                raise ValueError(f"{url!r} is not an http:// URL")
        return [url.rstrip("/") for url in urls]


Telemetry = Annotated[TelemetrySettings, BeforeValidator(_telemetry_switch)]


# librdkafka properties that make a connection secure: exprun sets them for an embedded broker.
KAFKA_SECURITY_PREFIXES = ("security.protocol", "ssl.", "sasl.")
KAFKA_FILE_SUFFIX = ".location"  # librdkafka properties naming a file a client reads


class KafkaTransactions(StrictModel):
    """When each producer commits its transaction: after `per` messages, or `every` interval."""

    per: PositiveInt | None = Field(
        None, description="commit after this many messages of the producer"
    )
    every: PositiveDuration | None = Field(
        None, description="commit once this long has passed since the transaction began"
    )

    @model_validator(mode="after")
    def _one_rule(self) -> KafkaTransactions:
        if (self.per is None) == (self.every is None):
            raise ValueError(
                "write one of `per` (messages per transaction, e.g. per: 1000) or `every` (a "
                "duration, e.g. every: 100ms)"
            )
        return self


def _transaction_conflicts(properties: KafkaProperties) -> list[str]:
    """The librdkafka producer properties a transactional producer cannot have."""

    def value(*names: str) -> tuple[str, str] | None:
        for name in names:
            if name in properties:
                written = properties[name]
                text = str(written).lower() if isinstance(written, bool) else str(written)
                return name, text.strip().lower()
        return None

    found = []
    if "transactional.id" in properties:
        found.append("transactional.id is set by exprun, one per producer and trial")
    idempotence = value("enable.idempotence")
    if idempotence is not None and idempotence[1] == "false":
        found.append("enable.idempotence: false (a transactional producer is idempotent)")
    acks = value("acks", "request.required.acks")
    if acks is not None and acks[1] not in ("all", "-1"):
        found.append(f"{acks[0]}: {acks[1]} (a transactional producer needs acks: all)")
    in_flight = value("max.in.flight.requests.per.connection", "max.in.flight")
    if in_flight is not None and in_flight[1].isdigit() and int(in_flight[1]) > 5:
        found.append(f"{in_flight[0]}: {in_flight[1]} (idempotence allows at most 5)")
    retries = value("retries", "message.send.max.retries")
    if retries is not None and retries[1] == "0":
        found.append(f"{retries[0]}: 0 (idempotence retries until the delivery timeout)")
    return found


class KafkaSecurity(StrictModel):
    """How an embedded Kafka is secured: exprun makes its CA, certificates and SCRAM user."""

    tls: bool = Field(False, description="SSL listeners (SASL_SSL with sasl), inter-node too")
    sasl: Literal["none", "plain", "scram-sha-256", "scram-sha-512"] = Field(
        "none", description="SASL mechanism of the client listener; a user made by exprun"
    )

    @property
    def protocol(self) -> str:
        """The client listener's security.protocol."""
        if self.sasl == "none":
            return "SSL" if self.tls else "PLAINTEXT"
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"


class NatsTlsFiles(StrictModel):
    """An external NATS's TLS: the CA its certificate is checked against, a client pair."""

    ca: str | None = Field(None, description="CA file (PEM); default: the system's CAs")
    cert: str | None = Field(None, description="client certificate (PEM), with key")
    key: str | None = Field(None, description="client key (PEM), with cert")

    @model_validator(mode="after")
    def _pair(self) -> NatsTlsFiles:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls: `cert` and `key` go together (a client certificate and its key)")
        return self


def _tls_switch(value: object) -> object:
    return NatsTlsFiles() if value is True else value


class NatsSecurity(StrictModel):
    """How exprun's clients reach a secured NATS; an embedded one is made so with tls / auth."""

    tls: Annotated[bool | NatsTlsFiles, BeforeValidator(_tls_switch)] = Field(
        False,
        description="embedded: true for TLS with exprun's CA; external: true (system CAs) or "
        "{ca, cert, key}",
    )
    auth: Literal["none", "user", "token", "nkey"] = Field(
        "none", description="embedded: the login exprun makes (user + password, token, nkey)"
    )
    creds: str | None = Field(None, description="external: a .creds file (JWT and nkey seed)")
    nkey_seed: str | None = Field(None, description="external: a user nkey seed, from ${ENV}")
    user: str | None = Field(None, description="external: user name, with password")
    password: str | None = Field(None, description="external: the user's password, from ${ENV}")
    token: str | None = Field(None, description="external: an authorization token, from ${ENV}")

    # Values that are secrets: from `${ENV}` only, never written in the spec.
    SECRETS: ClassVar[tuple[str, ...]] = ("nkey_seed", "password", "token")

    @property
    def tls_on(self) -> bool:
        return self.tls is not False

    @property
    def logins(self) -> list[str]:
        """The external logins given (at most one is allowed)."""
        given = [name for name in ("creds", "nkey_seed", "token") if getattr(self, name)]
        return given + (["user"] if self.user is not None or self.password is not None else [])

    @model_validator(mode="after")
    def _one_login(self) -> NatsSecurity:
        if len(self.logins) > 1:
            raise ValueError(
                f"{' and '.join(self.logins)}: give one login (creds, nkey_seed, user + "
                "password, or token)"
            )
        if (self.user is None) != (self.password is None):
            raise ValueError("`user` and `password` go together")
        return self


class _BrokerBase(StrictModel):
    endpoint: str = Field(
        EMBEDDED,
        description="'embedded' to let exprun start the broker, or the address of an external one",
    )
    workers: PositiveInt = Field(
        DEFAULT_WORKERS,
        description="consumer-side handler pool size (with processing_time 0 messages are "
        "handled inline, so the pool never limits a plain throughput test)",
    )

    nodes: PositiveInt = Field(
        1,
        le=MAX_NODES,
        description="embedded: nodes of the cluster exprun starts on this machine (1: a single "
        "broker)",
    )
    telemetry: Telemetry = Field(
        default_factory=TelemetrySettings,
        description="the broker's own figures, every second of each trial: on for embedded "
        "brokers, `off` to skip; an external broker says where (url / prometheus)",
    )

    @property
    def embedded(self) -> bool:
        return self.endpoint == EMBEDDED

    def _owned_settings(self, replicas: int, replicas_key: str) -> None:
        """Checks shared by both brokers: settings of a broker exprun starts itself."""
        if not self.embedded:
            owned = [key for key in ("nodes", "server", "jvm") if key in self.model_fields_set]
            if owned:
                raise ValueError(
                    f"{', '.join(owned)}: exprun configures only the brokers it starts "
                    "(endpoint: embedded); an external broker is configured by whoever runs it"
                )
        elif self.telemetry.url or self.telemetry.prometheus:
            raise ValueError(
                "telemetry: exprun reads an embedded broker's figures itself; `url` and "
                "`prometheus` say where an external broker's are"
            )
        elif replicas > self.nodes:
            raise ValueError(
                f"{replicas_key} {replicas} needs at least {replicas} nodes, but this embedded "
                f"broker has {self.nodes}: set `nodes: {replicas}`"
            )


class KafkaBroker(_BrokerBase):
    type: Literal["kafka"]
    endpoint: str = Field(
        EMBEDDED, description="'embedded' or bootstrap servers 'host:9092,host2:9092'"
    )
    topic: TopicSettings = TopicSettings()
    # Before the properties, so that their validator sees it.
    transactions: KafkaTransactions | None = Field(
        None,
        description="each producer writes in transactions, committed every `per` messages or "
        "`every` interval; consumers then read committed messages only",
    )
    producer: KafkaProperties = Field(
        default_factory=dict, description="librdkafka producer properties, passed through"
    )
    consumer: KafkaProperties = Field(
        default_factory=dict, description="librdkafka consumer properties, passed through"
    )
    consumer_mode: Literal["assign", "group"] = Field(
        "assign",
        description="assign (partitions assigned directly: no group, no rebalance, no commits) "
        "or group (a consumer group per subscription, with its join and commits)",
    )
    commit: Literal["auto", "sync", "async"] | None = Field(
        None,
        description="with consumer_mode group: auto (librdkafka's auto commit), sync or async "
        "(after each handled batch, or every commit_every messages); default auto",
    )
    commit_every: PositiveInt | None = Field(
        None, description="with commit sync or async: commit every this many messages"
    )
    server: KafkaServerSettings = Field(
        default_factory=dict,
        description="server.properties entries of every embedded node, e.g. num.io.threads: 16",
    )
    jvm: JvmSettings = JvmSettings()
    security: KafkaSecurity = Field(
        default_factory=KafkaSecurity,
        description="embedded: TLS and SASL made by exprun; an external broker's go in `client`",
    )
    client: KafkaProperties = Field(
        default_factory=dict,
        description="librdkafka properties of every client (producers, consumers, admin), "
        "e.g. security.protocol, sasl.*, ssl.*",
    )

    KEY_HINTS: ClassVar[dict[str, str]] = {
        "stream": "`stream` is a NATS setting; a Kafka topic is set with `topic`",
        "publish": "`publish` is a NATS setting; Kafka producers take librdkafka `producer` "
        "properties",
    }

    @model_validator(mode="after")
    def _commits(self) -> KafkaBroker:
        if self.commit is not None and self.consumer_mode != "group":
            raise ValueError(
                "`commit` needs `consumer_mode: group` (assigned partitions commit nothing)"
            )
        if self.commit_every is not None and self.commit not in ("sync", "async"):
            raise ValueError("`commit_every` needs `commit: sync` or `commit: async`")
        if self.consumer_mode == "group" and "enable.auto.commit" in self.consumer:
            raise ValueError("enable.auto.commit is set by exprun from `commit` in group mode")
        return self

    @model_validator(mode="after")
    def _secured(self) -> KafkaBroker:
        if not self.embedded and "security" in self.model_fields_set:
            raise ValueError(
                "security: exprun secures only the brokers it starts; an external Kafka's "
                "security.protocol, sasl.* and ssl.* properties go in `client`"
            )
        # Unsecured, such properties pass through as they always have.
        if self.embedded and self.security.protocol != "PLAINTEXT":
            for side in ("client", "producer", "consumer"):
                owned = [k for k in getattr(self, side) if k.startswith(KAFKA_SECURITY_PREFIXES)]
                if owned:
                    raise ValueError(
                        f"{side}: {', '.join(sorted(owned))} is set by exprun for an embedded "
                        "broker it secures (from `security`)"
                    )
        return self

    @model_validator(mode="after")
    def _cluster(self) -> KafkaBroker:
        self._owned_settings(self.topic.replication_factor, "topic.replication_factor")
        if self.telemetry.url:
            raise ValueError(
                "telemetry.url is a NATS monitoring port; a Kafka's figures come from "
                "`telemetry.prometheus` (a JMX exporter's /metrics)"
            )
        return self

    @property
    def commit_mode(self) -> Literal["auto", "sync", "async"] | None:
        """How a group commits (auto unless declared); None for assigned partitions."""
        return (self.commit or "auto") if self.consumer_mode == "group" else None

    @field_validator("endpoint")
    @classmethod
    def _kafka_endpoint(cls, value: str) -> str:
        if value != EMBEDDED:
            for server in value.split(","):
                if not re.fullmatch(r"[^\s:/,]+:\d{1,5}", server.strip()):
                    raise ValueError(
                        f"{server.strip()!r} is not host:port; write 'embedded' or 'host:9092,...'"
                    )
        return value

    @field_validator("producer", "consumer", "client")
    @classmethod
    def _no_managed_properties(cls, value: KafkaProperties) -> KafkaProperties:
        managed = {"bootstrap.servers", "group.id"} & set(value)
        if managed:
            raise ValueError(
                f"{', '.join(sorted(managed))} is set by exprun (from endpoint / per trial)"
            )
        nats = sorted(NATS_CONSUMER_KEYS & set(value))
        if nats:
            raise ValueError(
                f"{', '.join(nats)}: a NATS consumer setting; a Kafka consumer reads assigned "
                "partitions or in a group: choose `consumer_mode: assign | group`"
            )
        return value

    @field_validator("producer", "client")
    @classmethod
    def _fits_transactions(cls, value: KafkaProperties, info: ValidationInfo) -> KafkaProperties:
        if info.data.get("transactions") is not None:
            conflicts = _transaction_conflicts(value)
            if conflicts:
                raise ValueError(f"contradicts `transactions`: {'; '.join(conflicts)}")
        return value


_JETSTREAM_ONLY = {
    "stream": "stream (storage, limits, replicas)",
    "publish": "publish acks, so nothing to wait for or retry",
    "consumer": "consumers: subscribers read the subject as it is published",
}


class NatsBroker(_BrokerBase):
    type: Literal["nats"]
    endpoint: str = Field(EMBEDDED, description="'embedded' or 'nats://host:4222[,nats://...]'")
    jetstream: bool = Field(
        True,
        description="false: core NATS subjects, at most once (no stream, no acks; what a "
        "subscriber cannot take is dropped and counted lost)",
    )
    stream: StreamSettings = StreamSettings()
    publish: PublishSettings = PublishSettings()
    consumer: NatsConsumer = NatsConsumer()
    server: NatsServerSettings = Field(
        default_factory=dict,
        description="nats-server options of every embedded node, blocks as mappings, e.g. "
        "write_deadline: 5s, jetstream: {max_memory_store: 1GB}",
    )
    security: NatsSecurity = Field(
        default_factory=NatsSecurity,
        description="TLS and login: made by exprun for an embedded server (tls, auth), given "
        "for an external one (creds, nkey_seed, user + password, token, tls files)",
    )

    KEY_HINTS: ClassVar[dict[str, str]] = {
        "jvm": "`jvm` is a Kafka setting: nats-server is not a JVM",
        "consumer_mode": "`consumer_mode` is a Kafka setting; a JetStream subscription reads "
        "by `consumer.kind` (ordered | push | pull)",
        "commit": "`commit` is a Kafka setting; JetStream acks by `consumer.ack` "
        "(none | explicit | all)",
        "commit_every": "`commit_every` is a Kafka setting; JetStream acks by `consumer.ack`",
        "topic": "`topic` is a Kafka setting; a JetStream stream is set with `stream`",
        "producer": "`producer` takes librdkafka properties (Kafka); JetStream publishing is "
        "set with `publish`",
    }

    @field_validator("endpoint")
    @classmethod
    def _nats_endpoint(cls, value: str) -> str:
        if value != EMBEDDED:
            for server in value.split(","):
                if not re.fullmatch(r"(nats|tls)://[^\s:/,]+:\d{1,5}", server.strip()):
                    raise ValueError(
                        f"{server.strip()!r} is not a NATS URL; write 'embedded' or "
                        "'nats://host:4222'"
                    )
        return value

    @field_validator("stream", "publish", "consumer")
    @classmethod
    def _jetstream_only(cls, value: StrictModel, info: ValidationInfo) -> StrictModel:
        if info.data.get("jetstream") is False:
            raise ValueError(
                f"core NATS (`jetstream: false`) has no {_JETSTREAM_ONLY[info.field_name or '']}: "
                f"drop `{info.field_name}`, or let the broker use JetStream"
            )
        return value

    @model_validator(mode="after")
    def _secured(self) -> NatsBroker:
        security = self.security
        if self.embedded:
            if security.logins:
                raise ValueError(
                    f"security: {', '.join(security.logins)}: exprun makes the login of an "
                    "embedded server; choose it with `auth: user | token | nkey`"
                )
            if isinstance(security.tls, NatsTlsFiles) and security.tls.model_fields_set:
                raise ValueError(
                    "security.tls: exprun makes the CA and certificates of an embedded server: "
                    "write `tls: true`"
                )
        elif security.auth != "none":
            raise ValueError(
                f"security.auth {security.auth}: `auth` chooses the login exprun makes for an "
                "embedded server; an external one takes creds, nkey_seed, user + password or token"
            )
        return self

    @model_validator(mode="after")
    def _cluster(self) -> NatsBroker:
        self._owned_settings(self.stream.replicas, "stream.replicas")
        if self.telemetry.prometheus:
            raise ValueError(
                "telemetry.prometheus is for Kafka's JMX exporter; a NATS's figures come from "
                "its monitoring port: `telemetry.url`"
            )
        return self

    @model_validator(mode="after")
    def _retries_stay_idempotent(self) -> NatsBroker:
        window = self.stream.duplicate_window
        if window is not None and window < self.publish.delivery_timeout:
            raise ValueError(
                f"stream.duplicate_window {format_duration(window)} is shorter than "
                f"publish.delivery_timeout {format_duration(self.publish.delivery_timeout)}: a "
                "retry after the window could store a message twice; make the window at least "
                "as long"
            )
        return self

    @property
    def duplicate_window(self) -> float | None:
        """Seconds the stream remembers message ids (long enough for every retry); None: the
        server's default (nothing to remember: one try sends no ids)."""
        if self.stream.duplicate_window is not None or not self.publish.retrying:
            return self.stream.duplicate_window
        return self.publish.delivery_timeout


Broker = Annotated[KafkaBroker | NatsBroker, Field(discriminator="type")]


Pattern = Literal["stream", "request_reply", "kv"]
DEFAULT_REQUEST_TIMEOUT_S = 5.0


class KvSettings(StrictModel):
    """A JetStream key-value workload: operations spread over `keys`, `reads` of them gets."""

    keys: PositiveInt = Field(1000, description="distinct keys, split among the producers")
    reads: Share = Field(0.5, description="the share of operations that are gets, e.g. 80%")
    preload: bool = Field(
        False,
        description="put every key once before the measured phase, so that gets find values "
        "from the first (as `nats bench kv get` reads what `kv put` stored)",
    )


class Workload(StrictModel):
    """What every trial does unless a scenario or variant says otherwise."""

    message_size: MessageSize = Field(1024, description="payload bytes per message (>= 16 B)")
    processing_time: Duration = Field(0.0, description="simulated handler work per message")
    settle_time: Duration = Field(
        2.0, description="wait after the measured phase before counting leaked threads/tasks"
    )
    drain_timeout: Duration = Field(
        30.0, description="how long consumers may take to receive every acked message"
    )
    rate: Rate = Field(
        None,
        description="publish rate over all producers, open loop from intended send times "
        "(5000 or 5000/s), or 'unlimited' (as fast as acks allow)",
    )
    ramp: Duration = Field(
        0.0,
        description="first part of each trial's measured phase left out of its figures (its "
        "messages still count for loss and duplicates)",
    )
    producers: PositiveInt = Field(1, description="concurrent producers, per topic")
    consumers: PositiveInt = Field(1, description="concurrent consumers, per subscription")
    topics: PositiveInt = Field(
        1, description="topics (Kafka) / streams and their subjects (NATS) per trial"
    )
    subscriptions: PositiveInt = Field(
        1,
        description="per topic, each receiving every message: a consumer group (Kafka) / a "
        "JetStream consumer (NATS) each",
    )
    keys: Keys = Field(
        "none",
        description="message keys: none, round_robin (over the partitions), random, or a "
        "number of distinct keys; they decide the partition (Kafka), a header (NATS)",
    )
    payload: Payload = Field(
        "zeros",
        description="message bodies: zeros (compress to nothing), random (not at all), "
        "{compressibility: 0.5}, or {file: PATH} (slices of a file, relative to the spec)",
    )
    pattern: Pattern = Field(
        "stream",
        description="stream: producers append, subscriptions read; request_reply: producers "
        "send requests, consumers answer them; kv: producers put and get keys (NATS JetStream)",
    )
    timeout: PositiveDuration | None = Field(
        None, description="request_reply: a request unanswered this long times out (default 5s)"
    )
    kv: KvSettings | None = Field(
        None, description="kv: the keys and the share of gets, e.g. {keys: 10000, reads: 80%}"
    )


class WorkloadOverride(StrictModel):
    message_size: MessageSize | None = None
    processing_time: Duration | None = None
    settle_time: Duration | None = None
    drain_timeout: Duration | None = None
    rate: Rate = None
    ramp: Duration | None = None
    producers: PositiveInt | None = None
    consumers: PositiveInt | None = None
    topics: PositiveInt | None = None
    subscriptions: PositiveInt | None = None
    keys: Keys | None = None
    payload: Payload | None = None
    pattern: Pattern | None = None
    timeout: PositiveDuration | None = None
    kv: KvSettings | None = None


class SearchSettings(StrictModel):
    """A capacity search: the highest offered rate at which a condition still holds."""

    rate: RateRange = Field(description="offered rates searched, e.g. 1000/s..200000/s")
    until: str = Field(
        description="what must hold at a rate, e.g. 'latency_p99_ms <= 50' (any searchable "
        "metric with <= or >=); success_rate >= 100 is always implied"
    )
    steps: int = Field(8, ge=2, le=64, description="trials per search at most, bounds included")

    @field_validator("until")
    @classmethod
    def _searchable(cls, text: str) -> str:
        condition = parse_condition(text)
        if condition.metric not in METRICS:
            raise ValueError(_unknown("metric", condition.metric, METRICS))
        if condition.metric not in SEARCHABLE_METRICS:
            raise ValueError(
                f"a search cannot steer by {condition.metric!r}: it does not move with the "
                f"offered rate within one trial; use one of {', '.join(SEARCHABLE_METRICS)}"
            )
        return text

    @property
    def condition(self) -> Condition:
        return parse_condition(self.until)


FaultAction = Literal["kill_leader", "kill_node", "pause_leader", "pause_node", "restart"]
FAULT_POINT_PATTERN = r"^\s*(\d+(\.\d+)?\s*%|\d+(\.\d+)?\s*(ms|s|m))\s*$"


def _fault_point(value: object) -> str:
    text = str(value).strip() if isinstance(value, str) else None
    if text is not None and text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if 0 <= share < 100:
            return text
        raise ValueError(f"at {value!r}: a share of the trial is 0% to under 100%")
    try:
        parse_duration(value)
    except ValueError:
        raise ValueError(
            f"at {value!r}: write a share of the messages (40%) or a time into the measured "
            "phase (10s)"
        ) from None
    return str(value)


FaultPoint = Annotated[
    str,
    BeforeValidator(_fault_point),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": FAULT_POINT_PATTERN,
            "description": "a share of the trial's messages (40%) or a time into its measured "
            "phase (10s)",
        }
    ),
]


class Fault(StrictModel):
    """Something done to an embedded broker's nodes at a point of each measured trial."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    at: FaultPoint
    action: FaultAction = Field(
        description="kill_leader / kill_node (SIGKILL), pause_leader / pause_node (SIGSTOP, "
        "then SIGCONT after `for`), restart (every killed node back, with its data)"
    )
    pause: PositiveDuration | None = Field(
        None, alias="for", description="pause_leader / pause_node: how long the node is stopped"
    )
    node: PositiveInt | None = Field(None, description="kill_node / pause_node: which node (1..)")

    @model_validator(mode="after")
    def _arguments(self) -> Fault:
        pauses = self.action.startswith("pause_")
        if pauses and self.pause is None:
            raise ValueError(f"{self.action} needs `for`: how long the node stays paused")
        if not pauses and self.pause is not None:
            raise ValueError(f"`for` is the length of a pause; {self.action} does not pause")
        on_node = self.action.endswith("_node")
        if on_node and self.node is None:
            raise ValueError(f"{self.action} needs `node`: which node (1, 2, ...)")
        if not on_node and self.node is not None:
            raise ValueError(f"`node` names the node of kill_node / pause_node, not {self.action}")
        return self

    @property
    def share(self) -> float | None:
        """The point as a share of the trial (0..1), or None for a time."""
        return float(self.at.strip()[:-1]) / 100 if self.at.strip().endswith("%") else None

    @property
    def seconds(self) -> float | None:
        """The point as seconds into the measured phase, or None for a share."""
        return None if self.share is not None else parse_duration(self.at)

    def describe(self) -> str:
        target = f" {self.node}" if self.node is not None else ""
        pause = f" for {format_duration(self.pause)}" if self.pause is not None else ""
        return f"{self.action}{target}{pause} at {self.at.strip()}"


class Scenario(WorkloadOverride):
    messages: PositiveInt | None = Field(None, description="messages published per trial")
    duration: PositiveDuration | None = Field(
        None, description="publish for this long instead of a number of messages"
    )
    backlog: Backlog | None = Field(
        None,
        description="hold the consumers back until this much is stored (100MB, or a number "
        "of messages), then let them catch up while producers go on at `rate`",
    )
    search: SearchSettings | None = Field(
        None, description="find the capacity: the highest rate at which `until` holds"
    )
    faults: list[Fault] = Field(
        default_factory=list,
        description="done to the embedded broker's nodes in each measured trial (not in "
        "warm-ups), by the run, at their points",
    )

    @model_validator(mode="after")
    def _shape(self) -> Scenario:
        if (self.messages is None) == (self.duration is None):
            raise ValueError(
                "give exactly one of `messages` (how many to publish) or `duration` "
                "(publish for that long)"
            )
        if self.search is not None:
            if self.rate is not None:
                raise ValueError("a capacity search sets the rate of each trial: drop `rate`")
            if self.duration is None:
                raise ValueError("a capacity search runs trials of a `duration`, not `messages`")
            if self.backlog is not None:
                raise ValueError("a capacity search and a backlog do not combine")
            if self.faults:
                raise ValueError("a capacity search and faults do not combine")
        return self


class Variant(StrictModel):
    description: str = ""
    brokers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per broker name: settings deep-merged over that broker's",
    )
    defaults: WorkloadOverride = Field(
        default_factory=WorkloadOverride, description="overrides of the workload defaults"
    )


class Target(StrictModel):
    name: str | None = None
    metric: str = Field(description="metric name, e.g. throughput, latency_p99_ms, leaked_threads")
    broker: str | None = Field(None, description="only this broker (default: every broker)")
    scenario: str | None = Field(None, description="only this scenario (default: every one)")
    variant: str | None = Field(
        None, description="the variant scored (default: every variant but the baseline)"
    )
    change: GoalText | None = Field(
        None, description="goal on the change of the median vs the baseline, e.g. '>= +400%'"
    )
    value: GoalText | None = Field(
        None, description="goal on the median itself, in the metric's unit, e.g. '<= 1'"
    )

    @field_validator("change")
    @classmethod
    def _relative(cls, text: str) -> str:
        if not parse_goal(text).is_relative:
            raise ValueError(f"a change goal is in percent: write e.g. '{text.strip()}%'")
        return text

    @field_validator("value")
    @classmethod
    def _absolute(cls, text: str, info: ValidationInfo) -> str:
        # On a metric measured in % (success_rate), a trailing % is the metric's own unit.
        known = METRICS.get(str(info.data.get("metric")))
        if parse_goal(text).is_relative and known is not None and known.unit != "%":
            raise ValueError(
                "a value goal is in the metric's own unit: drop the '%' (use 'change' for "
                "a change vs the baseline)"
            )
        return text

    @model_validator(mode="after")
    def _one_goal(self) -> Target:
        if (self.change is None) == (self.value is None):
            raise ValueError("give exactly one of 'change' (vs baseline) or 'value'")
        return self

    @property
    def title(self) -> str:
        goal = f"change {self.change}" if self.change else f"{self.value}"
        return self.name or f"{self.metric} {goal}"


class StatisticsSettings(StrictModel):
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of comparisons")
    correction: Correction = Field(
        "none",
        description="adjust p-values for the many comparisons of one report: none (each "
        "comparison alone, as benchstat), holm (no false 'significant' in the whole family "
        "with chance 1-alpha) or bh (Benjamini-Hochberg: false ones at most an alpha share)",
    )
    noise_threshold: float = Field(
        2.0, ge=0, description="changes smaller than this many % are reported as '~'"
    )
    cv_threshold: float = Field(
        10.0, gt=0, description="coefficient of variation (%) above which a cell is flagged"
    )


# A Dask scheduler's address, as `dask scheduler` prints it.
SCHEDULER_ADDRESS = r"^(tcp|tls)://[^\s/:]+:\d{1,5}$"


class ExecutionSettings(StrictModel):
    processes: PositiveInt | Literal["auto"] = Field(
        1,
        description="load-generator processes each trial's producers and consumers are spread "
        "over, per host (auto: one per core but one); 1 runs them in the trial's own process",
    )
    engine: Literal["local", "dask"] = Field(
        "local",
        description="local: the load generators run on this machine; dask: on `hosts` Dask "
        "workers offering the resource loadgen=1 (pip install 'exprun[dask]')",
    )
    scheduler: str | None = Field(
        None,
        pattern=SCHEDULER_ADDRESS,
        description="the Dask scheduler, e.g. tcp://10.0.0.5:8786 (engine: dask); --scheduler "
        "or EXPRUN_DASK_SCHEDULER override it",
    )
    hosts: PositiveInt = Field(
        1, description="load-generator hosts of each trial (engine: dask; one Dask worker each)"
    )

    @model_validator(mode="after")
    def _dask_settings_need_dask(self) -> ExecutionSettings:
        if self.engine == "local":
            if self.scheduler is not None:
                raise ValueError("scheduler is for engine: dask (this spec's engine is local)")
            if self.hosts > 1:
                raise ValueError(
                    f"hosts: {self.hosts} needs engine: dask (engine: local runs on this machine)"
                )
        return self

    @property
    def distributed(self) -> bool:
        return self.engine == "dask"

    def process_count(self, cores: int) -> int:
        """The number of processes on a machine with `cores` cores."""
        return max(1, cores - 1) if self.processes == "auto" else self.processes


class Experiment(StrictModel):
    version: Literal[1] = Field(description="spec format version")
    name: Name
    description: str = ""
    brokers: dict[Name, Broker] = Field(min_length=1)
    defaults: Workload = Workload()
    scenarios: dict[Name, Scenario] = Field(min_length=1, description="ordered smallest first")
    variants: dict[Name, Variant] = Field(default_factory=dict)
    baseline: str | None = Field(None, description="the variant others are compared with")
    repetitions: PositiveInt = Field(5, description="measured trials per cell")
    warmup: int = Field(1, ge=0, description="unmeasured trials per cell before the measured")
    order: Literal["interleaved", "sequential", "random"] = Field(
        "interleaved", description="trial order; interleaved spreads machine drift over cells"
    )
    seed: int | None = Field(None, description="seed of the 'random' order")
    targets: list[Target] = Field(default_factory=list)
    statistics: StatisticsSettings = StatisticsSettings()
    execution: ExecutionSettings = ExecutionSettings()
    reports: list[str] = Field(
        default_factory=lambda: ["markdown", "csv", "json"], description="reporters to run"
    )

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Experiment:
        # The spec loader asks for the problems itself so that it can locate each one.
        if not (info.context or {}).get("defer_reference_checks"):
            problems = reference_problems(self.model_dump())
            if problems:
                raise ValueError(
                    "; ".join(f"{'.'.join(map(str, loc))}: {m}" for loc, m in problems)
                )
        return self

    @property
    def variant_names(self) -> list[str]:
        return list(self.variants) or [DEFAULT_VARIANT]


def _unknown(what: str, name: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
    return f"unknown {what} {name!r}{hint}"


def reference_problems(data: Any) -> list[tuple[Loc, str]]:
    """Names that point nowhere (variant brokers, baseline, target filters), in spec data.

    Works on the data as written, valid or not, so that a spec's reference problems are
    reported together with its field errors; a check whose own part is malformed is skipped
    (its field error says what is wrong there).
    """
    if not isinstance(data, Mapping):
        return []
    problems: list[tuple[Loc, str]] = []
    brokers = _names(data.get("brokers"))
    variants_data = data.get("variants", {})
    variants = _names(variants_data) if variants_data is not None else []
    variant_names = (variants or [DEFAULT_VARIANT]) if variants is not None else None
    if brokers is not None and isinstance(variants_data, Mapping):
        for name, variant in variants_data.items():
            overrides = variant.get("brokers") if isinstance(variant, Mapping) else None
            for broker in overrides if isinstance(overrides, Mapping) else ():
                if broker not in brokers:
                    loc = ("variants", name, "brokers", broker)
                    problems.append((loc, _unknown("broker", broker, brokers)))
    baseline = data.get("baseline")
    if variants is not None and len(variants) >= 2 and baseline is None:
        problems.append((("baseline",), "required when there are 2 or more variants"))
    if isinstance(baseline, str) and variant_names is not None and baseline not in variant_names:
        problems.append((("baseline",), _unknown("variant", baseline, variant_names)))
    targets = data.get("targets")
    for index, target in enumerate(targets if isinstance(targets, list) else ()):
        if isinstance(target, Mapping):
            problems += _target_problems(index, target, data, brokers, variants, variant_names)
    return problems


def _target_problems(
    index: int,
    target: Mapping[str, Any],
    data: Mapping[str, Any],
    brokers: list[str] | None,
    variants: list[str] | None,
    variant_names: list[str] | None,
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for field, known in (
        ("broker", brokers),
        ("scenario", _names(data.get("scenarios"))),
        ("variant", variant_names),
    ):
        value = target.get(field)
        if isinstance(value, str) and known is not None and value not in known:
            problems.append((("targets", index, field), _unknown(field, value, known)))
    metric = target.get("metric")
    if isinstance(metric, str) and metric not in METRICS:
        problems.append((("targets", index, "metric"), _unknown("metric", metric, METRICS)))
    if target.get("change") is not None:
        if variants is not None and len(variants) < 2:
            problems.append((("targets", index, "change"), "needs 2 or more variants"))
        baseline = data.get("baseline")
        if baseline is not None and target.get("variant") == baseline:
            problems.append((("targets", index, "variant"), "the baseline cannot change vs itself"))
    return problems


def _names(mapping: Any) -> list[str] | None:
    """The keys of a mapping of named things; None when it is not one (a field error)."""
    return [str(key) for key in mapping] if isinstance(mapping, Mapping) else None
