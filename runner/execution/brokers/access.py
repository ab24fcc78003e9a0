"""What every client exprun makes needs to reach a secured broker: TLS files and a login.

An embedded broker's access is made with it (its CA, a generated login); an external one's comes
from the spec. It travels in each trial request, so the trial process, its publisher and its
load generators connect alike; it never reaches a result, a report or a log.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runner.spec.server_settings import config_text
from schemas.spec import KAFKA_FILE_SUFFIX, KafkaBroker, NatsBroker, NatsTlsFiles


class NatsAccess(BaseModel):
    """TLS and one login for nats-py's connect()."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tls: bool = False
    ca: str | None = None  # None: the system's CAs
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    # Secrets never in a repr (a failing test or a traceback prints its objects).
    password: str | None = Field(None, repr=False)
    token: str | None = Field(None, repr=False)
    nkey_seed: str | None = Field(None, repr=False)
    creds: str | None = None

    @property
    def login(self) -> str:
        """Which login it uses, for messages: never the secret itself."""
        if self.creds:
            return f"creds {self.creds}"
        if self.nkey_seed:
            return "nkey"
        if self.token:
            return "token"
        return f"user {self.user}" if self.user else "no login"

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of nats.connect() for this access."""
        options: dict[str, Any] = {}
        if self.tls:
            _quiet_tls_close()
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert and self.key:
                context.load_cert_chain(self.cert, self.key)
            options["tls"] = context
        if self.user:
            options["user"], options["password"] = self.user, self.password
        if self.token:
            options["token"] = self.token
        if self.nkey_seed:
            options["nkeys_seed_str"] = self.nkey_seed
        if self.creds:
            options["user_credentials"] = self.creds
        return options


def _quiet_tls_close() -> None:
    """asyncio warns on every TLS connection nats-py closes (its protocol's eof_received
    returns True): noise in the logs, about nothing that went wrong."""
    logger = logging.getLogger("asyncio")
    if _TLS_CLOSE_NOISE not in logger.filters:
        logger.addFilter(_TLS_CLOSE_NOISE)


class _TlsCloseNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("returning true from eof_received()")


_TLS_CLOSE_NOISE = _TlsCloseNoise()


class ClientAccess(BaseModel):
    """A broker's access for clients: librdkafka properties, or NATS TLS and login."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # security.protocol, ssl.*, sasl.* (a password among them): for every Kafka client.
    kafka: dict[str, str] = Field(default_factory=dict, repr=False)
    nats: NatsAccess = NatsAccess()
    # Contents of the files above, by path: only on their way to another host (see shipped).
    files: dict[str, str] = Field(default_factory=dict, repr=False)

    def _paths(self) -> list[str]:
        nats = self.nats
        paths = [value for key, value in self.kafka.items() if key.endswith(KAFKA_FILE_SUFFIX)]
        return paths + [p for p in (nats.ca, nats.cert, nats.key, nats.creds) if p]

    def shipped(self) -> ClientAccess:
        """With its files' contents, for clients on a host where the paths mean nothing."""
        return self.model_copy(update={"files": {p: Path(p).read_text() for p in self._paths()}})

    def landed(self, folder: Path) -> ClientAccess:
        """Its shipped files written into `folder` (private to this user), paths pointing there."""
        moved: dict[str, str] = {}
        for number, (path, text) in enumerate(self.files.items()):
            target = folder / f"{number}-{Path(path).name}"
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
            moved[path] = str(target)
        kafka = {key: moved.get(value, value) for key, value in self.kafka.items()}
        nats = self.nats.model_copy(
            update={
                name: moved[value]
                for name in ("ca", "cert", "key", "creds")
                if (value := getattr(self.nats, name)) in moved
            }
        )
        return ClientAccess(kafka=kafka, nats=nats)


PLAIN = ClientAccess()


def external_access(config: KafkaBroker | NatsBroker) -> ClientAccess:
    """An external broker's access, as its spec gives it."""
    if isinstance(config, KafkaBroker):
        return ClientAccess(kafka={key: config_text(value) for key, value in config.client.items()})
    security = config.security
    tls = security.tls if isinstance(security.tls, NatsTlsFiles) else NatsTlsFiles()
    return ClientAccess(
        nats=NatsAccess(
            tls=security.tls_on or "tls://" in config.endpoint,
            ca=tls.ca,
            cert=tls.cert,
            key=tls.key,
            user=security.user,
            password=security.password,
            token=security.token,
            nkey_seed=security.nkey_seed,
            creds=security.creds,
        )
    )
