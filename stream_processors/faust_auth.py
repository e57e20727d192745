"""The processor's Faust (aiokafka) clients get the same Kafka security settings as the
confluent-kafka ones: TLS with the configured CA, SASL PLAIN or SCRAM."""

from __future__ import annotations

import ssl

import faust
from faust.types.auth import CredentialsT

from bus.settings import KafkaSettings

__all__ = ["faust_credentials"]


def _tls(kafka: KafkaSettings) -> ssl.SSLContext:
    cafile = str(kafka.ssl_ca_location) if kafka.ssl_ca_location is not None else None
    return ssl.create_default_context(cafile=cafile)


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
        mechanism=kafka.sasl_mechanism or "PLAIN",
        ssl_context=_tls(kafka) if protocol == "SASL_SSL" else None,
    )
