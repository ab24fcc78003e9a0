"""The one-line refusals of a login, from what librdkafka reported (its own words, as seen
against real brokers; no broker here)."""

from __future__ import annotations

from runner.execution.brokers.login import kafka_refusal

ADDRESS = "127.0.0.1:9093"
SSL = {"security.protocol": "SSL", "ssl.ca.location": "/certs/ca.pem"}


def test_tls_client_on_a_plaintext_listener() -> None:
    errors = [
        (
            "_TRANSPORT",
            "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: Disconnected: SSL connection "
            "closed by peer: connecting to a PLAINTEXT broker listener? (after 4ms in state "
            "SSL_HANDSHAKE)",
        ),
        ("_ALL_BROKERS_DOWN", "1/1 brokers are down"),
    ]
    assert kafka_refusal(ADDRESS, SSL, errors, speaks_tls=False) == (
        "TLS: the client's security.protocol is SSL, but the Kafka listener at "
        "127.0.0.1:9093 is plaintext"
    )


def test_tls_only_client_on_a_sasl_ssl_listener() -> None:
    errors = [
        (
            "log",
            "FAIL [rdkafka#producer-3]: Disconnected: SSL connection closed by peer (after "
            "1ms in state UP)",
        ),
        ("_ALL_BROKERS_DOWN", "1/1 brokers are down"),
    ]
    message = kafka_refusal(ADDRESS, SSL, errors, speaks_tls=True)
    assert "expects SASL (SASL_SSL), but the client's security.protocol is SSL" in message


def test_plaintext_client_on_a_secured_listener_says_which() -> None:
    errors = [
        (
            "log",
            "127.0.0.1:9093/bootstrap: Disconnected: connection closed by peer: receive 0 "
            "after POLLIN (after 1ms in state APIVERSION_QUERY)",
        ),
        ("_ALL_BROKERS_DOWN", "1/1 brokers are down"),
    ]
    assert "expects TLS (SSL), but the client's security.protocol is PLAINTEXT" in kafka_refusal(
        ADDRESS, {}, errors, speaks_tls=True
    )
    assert "expects SASL, but the client's security.protocol is PLAINTEXT" in kafka_refusal(
        ADDRESS, {}, errors, speaks_tls=False
    )


def test_an_untrusted_certificate_names_the_ca() -> None:
    errors = [
        (
            "_SSL",
            "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL "
            "routines::certificate verify failed: broker certificate could not be verified",
        ),
    ]
    assert kafka_refusal(ADDRESS, SSL, errors, speaks_tls=True) == (
        "TLS: the certificate of the Kafka broker at 127.0.0.1:9093 is not trusted by /certs/ca.pem"
    )
