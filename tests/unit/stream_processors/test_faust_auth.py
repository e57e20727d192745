"""The processor's Faust clients follow the Kafka security settings."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest
import trustme
from faust.types.auth import AuthProtocol, SASLMechanism

from bus.errors import ConfigError
from bus.settings import KafkaSettings, load_settings
from stream_processors.faust_auth import faust_credentials


def test_plaintext_needs_no_credentials() -> None:
    assert faust_credentials(KafkaSettings()) is None


def test_scram_over_tls_carries_user_mechanism_and_the_configured_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bus",
        sasl_password="s3cret-pass",  # type: ignore[arg-type]
        ssl_ca_location=ca_file,
    )
    creds = faust_credentials(kafka)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("bus", "s3cret-pass")
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512
    assert creds.protocol is AuthProtocol.SASL_SSL
    assert creds.ssl_context is not None
    assert creds.ssl_context.get_ca_certs()  # the configured CA is loaded
    assert "s3cret" not in repr(creds)


def test_tls_only() -> None:
    creds = faust_credentials(KafkaSettings(security_protocol="SSL"))
    assert isinstance(creds, faust.SSLCredentials)


def test_an_unknown_protocol_or_mechanism_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="DATABUS_KAFKA__SECURITY_PROTOCOL"):
        load_settings(kafka={"security_protocol": "SASL_SSLX"})
    with pytest.raises(ConfigError, match="DATABUS_KAFKA__SASL_MECHANISM"):
        load_settings(kafka={"sasl_mechanism": "SCRAM-SHA-1"})
