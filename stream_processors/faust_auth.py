"""The processor's Faust (aiokafka) clients get the same Kafka security settings as the
confluent-kafka ones: TLS with the configured CA, SASL PLAIN or SCRAM."""

from __future__ import annotations

import ssl

import faust
from faust.types.auth import CredentialsT

from bus.kafka_client import ssl_context
from bus.settings import KafkaSettings

__all__ = ["faust_credentials"]


def _tls(kafka: KafkaSettings) -> ssl.SSLContext:
    context = ssl_context(kafka)  # the CA and client certificate of every other client
    assert context is not None, "called for SSL and SASL_SSL only"
    return context


def faust_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """``broker_credentials`` for ``faust.App``; None for PLAINTEXT."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(_tls(kafka))
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        mechanism=kafka.sasl_mechanism,
        ssl_context=_tls(kafka) if protocol == "SASL_SSL" else None,
    )
