"""Kafka clients and their failures, from the security settings in one place.

``KafkaSettings.client_config()`` is the configuration of every confluent-kafka
client the bus starts (the embedded registry's ``_schemas`` client included, via
``security_config()``); the aiokafka clients (Faust, ``databus status``) get the same
TLS and SASL settings from :func:`ssl_context` and :func:`aiokafka_options`.

librdkafka reports a refused login or a failed TLS handshake only to an error
callback, and then a bare "all brokers down" or a timeout to the caller;
:func:`check_broker` asks the broker for its metadata with such a callback and
turns what it heard into a :class:`~bus.errors.BrokerError` that says why: an
authentication failure names the user and the mechanism (never the password).
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.errors import BrokerAuthError, BrokerError
from bus.settings import KafkaSettings, Settings

__all__ = [
    "aiokafka_options",
    "broker_error",
    "check_broker",
    "is_broker_failure",
    "producer_config",
    "registry_client",
    "ssl_context",
]

_AUTH_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
    }
)
_TLS_CODES = frozenset({KafkaError._SSL})
_UNREACHABLE_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
    }
)


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of aiokafka clients (SSL / SASL_SSL); None without TLS."""
    if not kafka.security_protocol.endswith("SSL"):
        return None
    cafile = str(kafka.ssl_ca_location) if kafka.ssl_ca_location is not None else None
    context = ssl.create_default_context(cafile=cafile)
    if kafka.ssl_certificate_location is not None and kafka.ssl_key_location is not None:
        context.load_cert_chain(
            str(kafka.ssl_certificate_location),
            str(kafka.ssl_key_location),
            kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
        )
    return context


def aiokafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments of an aiokafka client (address excluded)."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    return options


def _code(error: object) -> int | None:
    if isinstance(error, KafkaException) and error.args:
        error = error.args[0]
    return error.code() if isinstance(error, KafkaError) else None


def _text(error: object) -> str:
    if isinstance(error, KafkaException) and error.args:
        error = error.args[0]
    return error.str() if isinstance(error, KafkaError) else str(error)


def is_broker_failure(error: object) -> bool:
    """True for a librdkafka error that means "the broker cannot be used": unreachable,
    timed out, refused login, failed TLS handshake."""
    return _code(error) in _AUTH_CODES | _TLS_CODES | _UNREACHABLE_CODES


def broker_error(
    kafka: KafkaSettings, error: object, heard: list[KafkaError] | None = None
) -> BrokerError:
    """The :class:`BrokerError` for ``error`` (a KafkaError, KafkaException or text),
    preferring what the error callback ``heard`` first (the real reason)."""
    where = kafka.bootstrap_servers or "?"
    heard = heard or []
    for candidate in [*heard, error]:
        code = _code(candidate)
        if code in _AUTH_CODES:
            return BrokerAuthError(
                f"authentication to the broker at {where} failed for user "
                f"{kafka.sasl_username or '(none)'!r} with mechanism "
                f"{kafka.sasl_mechanism or '(none)'} over {kafka.security_protocol} "
                f"({_text(candidate)}); check DATABUS_KAFKA__SASL_USERNAME, "
                "DATABUS_KAFKA__SASL_PASSWORD and DATABUS_KAFKA__SASL_MECHANISM"
            )
        if code in _TLS_CODES:
            return BrokerAuthError(
                f"TLS handshake with the broker at {where} failed ({_text(candidate)}); "
                "check DATABUS_KAFKA__SSL_CA_LOCATION (the CA the broker's certificate "
                "chains to) and DATABUS_KAFKA__SECURITY_PROTOCOL"
            )
    reason = "; ".join(dict.fromkeys(_text(e) for e in [*heard[:1], error]))
    return BrokerError(
        f"cannot reach the broker at {where} ({reason}); check "
        "DATABUS_KAFKA__BOOTSTRAP_SERVERS and DATABUS_KAFKA__SECURITY_PROTOCOL, and that "
        "the broker runs, then try again"
    )


def check_broker(kafka: KafkaSettings, timeout: float = 10.0) -> int:
    """Ask the broker for its metadata; the number of topics, or a BrokerError saying why not."""
    from confluent_kafka.admin import AdminClient

    heard: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        heard.append(error)

    # log_level 0: the error callback hears everything; no librdkafka lines on stderr
    conf: dict[str, Any] = {**kafka.client_config(), "error_cb": on_error, "log_level": 0}
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            admin.poll(0)  # serve the error callbacks still queued
            refused = any(_code(e) in _AUTH_CODES | _TLS_CODES for e in heard)
            if refused or time.monotonic() >= deadline:
                raise broker_error(kafka, exc, heard) from exc
            continue
        return len(metadata.topics)


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Producer settings every databus writer uses."""
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        # librdkafka's default partitioner differs from Java's and aiokafka's (Faust):
        # murmur2_random puts a key on the same partition whoever writes it.
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        # The largest record sent (DATABUS_KAFKA__MESSAGE_MAX_BYTES, the broker's default)
        "message.max.bytes": settings.kafka.message_max_bytes,
    }
    conf.update(overrides)
    return conf


def registry_client(
    settings: Settings, given: SchemaRegistryClient | None = None
) -> tuple[SchemaRegistryClient, SchemaRegistryClient | None]:
    """The schema-registry client to use, and the one its user must close: ``given``
    (the caller's, closed by the caller) or a new one from the settings (returned
    twice: the user owns it and closes it with itself)."""
    if given is not None:
        return given, None
    client = SchemaRegistryClient(settings.schema_registry.client_config())
    return client, client
