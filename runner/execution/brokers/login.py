"""One real login to an external broker before any trial, with the run's own credentials.

A wrong password, a certificate the client does not trust, or TLS on one side only becomes one
line naming the address and what went wrong, instead of every trial failing on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

from runner.execution.brokers.access import ClientAccess, NatsAccess
from runner.execution.brokers.errors import BrokerStartError

LOGIN_TIMEOUT_S = 5.0


def check_login(
    kind: str, address: str, access: ClientAccess, timeout: float = LOGIN_TIMEOUT_S
) -> None:
    """Log in once as every client will; BrokerStartError with the one-line reason if refused."""
    why = (
        _kafka_login(address, access, timeout)
        if kind == "kafka"
        else _nats_login(address, access.nats, timeout)
    )
    if why is not None:
        raise BrokerStartError(why)


def _nats_login(address: str, access: NatsAccess, timeout: float) -> str | None:
    import nats

    mismatch = _tls_mismatch(address, access)
    if mismatch is not None:
        return mismatch

    async def attempt() -> None:
        async def quiet(_: Exception) -> None:
            return None  # the exception connect() raises says it; nats-py would print it too

        client = await nats.connect(
            servers=address.split(","),
            connect_timeout=timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
            **access.connect_options(),
        )
        await client.close()

    try:
        asyncio.run(attempt())
    except Exception as error:
        return nats_refusal(address, access, error)
    return None


def _tls_mismatch(address: str, access: NatsAccess) -> str | None:
    """TLS on one side only: nats-py would go on in plaintext with a TLS client, silently."""
    for server in address.split(","):
        parts = urlsplit(server.strip())
        if parts.hostname is None or parts.port is None:
            continue
        info = nats_info(parts.hostname, parts.port)
        if info is None:
            continue
        offered = bool(info.get("tls_required") or info.get("tls_available"))
        if access.tls and not offered:
            return (
                f"TLS: the client expects TLS (security.tls), but the NATS server at {server} "
                "is plaintext"
            )
        if info.get("tls_required") and not access.tls:
            return (
                f"TLS: the NATS server at {server} requires TLS, but the client's security has "
                "no `tls` (write security.tls, or a tls:// endpoint)"
            )
    return None


def nats_info(host: str, port: int) -> dict[str, Any] | None:
    """The INFO a NATS server sends on connect, before any TLS (None if not NATS-like)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            line = sock.makefile("rb").readline(64 * 1024)
    except OSError:
        return None
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def nats_refusal(address: str, access: NatsAccess, error: BaseException) -> str:
    """Why nats-py could not log in, in a line; never a secret."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, ssl.SSLCertVerificationError):
        trusted = access.ca or "the system's CAs"
        return (
            f"TLS: the certificate of the NATS server at {address} is not trusted by {trusted} "
            f"({error.verify_message})"
        )
    if "authorization violation" in text.lower() or "authentication" in text.lower():
        return f"authentication failed at {address} ({access.login}): the server refused the login"
    return f"cannot log in to NATS at {address} ({access.login}): {text}"


def _kafka_login(address: str, access: ClientAccess, timeout: float) -> str | None:
    from confluent_kafka.admin import AdminClient

    errors: list[tuple[str, str]] = []

    def collect(error: Any) -> None:
        errors.append((error.name(), error.str()))

    class Logs(logging.Handler):
        # A listener that closes the connection on the first request is only in the logs.
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(("log", record.getMessage()))

    logger = logging.getLogger("exprun.librdkafka.login")
    logger.propagate, logger.handlers = False, [Logs()]
    logger.setLevel(logging.INFO)  # the disconnect that says most is logged at INFO
    config: dict[str, Any] = {
        "bootstrap.servers": address,
        "error_cb": collect,
        "logger": logger,
        **access.kafka,
    }
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout)
    except Exception as error:  # KafkaException: no broker answered; error_cb says why
        admin.poll(1.0)  # error_cb is served by poll(): the reasons come before the symptom
        errors.append(("", str(error)))
        return kafka_refusal(address, access.kafka, errors, _speaks_tls(address))
    return None


def _speaks_tls(address: str) -> bool:
    """Whether the first server of a bootstrap list completes a TLS handshake (unverified)."""
    host, _, port = address.split(",")[0].strip().rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=2.0) as sock,
            context.wrap_socket(sock, server_hostname=host.strip("[]")),
        ):
            return True
    except (OSError, ValueError):
        return False


def kafka_refusal(
    address: str, properties: dict[str, str], errors: list[tuple[str, str]], speaks_tls: bool
) -> str:
    """Why librdkafka could not log in (error_cb and log lines, first to last), in a line."""
    protocol = properties.get("security.protocol", "plaintext").upper()
    texts = [text for _, text in errors]
    joined = " | ".join(texts).lower()
    first = next((t for n, t in errors if n not in ("log", "")), texts[0] if texts else "")
    if any(name == "_AUTHENTICATION" for name, _ in errors) or "authentication" in joined:
        user = properties.get("sasl.username", "?")
        mechanism = properties.get("sasl.mechanism", "GSSAPI")
        detail = next((t for n, t in errors if n == "_AUTHENTICATION"), first)
        return f"authentication failed at {address} (user {user}, {mechanism}): {detail}"
    if "certificate verify failed" in joined:
        trusted = properties.get("ssl.ca.location", "the system's CAs")
        return f"TLS: the certificate of the Kafka broker at {address} is not trusted by {trusted}"
    if "plaintext broker listener" in joined:
        return (
            f"TLS: the client's security.protocol is {protocol}, but the Kafka listener at "
            f"{address} is plaintext"
        )
    if "ssl" not in protocol and "apiversion_query" in joined:
        expected = "TLS (SSL)" if speaks_tls else "SASL"
        return (
            f"the Kafka listener at {address} expects {expected}, but the client's "
            f"security.protocol is {protocol} (set it in `client`)"
        )
    if protocol == "SSL" and "ssl connection closed by peer" in joined:
        return (
            f"the Kafka listener at {address} closed the connection after TLS: it expects SASL "
            "(SASL_SSL), but the client's security.protocol is SSL (set it in `client`)"
        )
    return f"cannot log in to Kafka at {address} (security.protocol {protocol}): {first}"
