"""Kafka security settings: impossible combinations stop start-up naming the variable;
every client gets the same TLS and SASL configuration; broker failures map to exit 3."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import trustme
from confluent_kafka import KafkaError, KafkaException

from bus.errors import BrokerAuthError, BrokerError, ConfigError, SinkError
from bus.kafka_client import aiokafka_options, broker_error, is_broker_failure, ssl_context
from bus.logs import kafka_client_logging
from bus.settings import KafkaSettings, load_settings
from databus.cli_common import EXIT_BAD_SETTING, EXIT_BROKER, exit_code_for

PASSWORD = "s3cret-pass-never-shown"


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a client certificate and its key, as files."""
    where = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    leaf = ca.issue_cert("databus-client")
    files = {"ca": where / "ca.pem", "cert": where / "cert.pem", "key": where / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    return files


SASL = {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "bus", "sasl_password": PASSWORD}


def _refused(kafka: Mapping[str, object], *variables: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(kafka={"bootstrap_servers": "k:9093", **kafka})
    message = str(caught.value)
    for variable in variables:
        assert variable in message
    assert PASSWORD not in message
    return message


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_a_mechanism_is_refused(protocol: str) -> None:
    kafka = {"security_protocol": protocol, **SASL, "sasl_mechanism": None}
    _refused(kafka, "DATABUS_KAFKA__SASL_MECHANISM", protocol)


@pytest.mark.parametrize("missing", ["sasl_username", "sasl_password"])
def test_sasl_without_user_or_password_is_refused(missing: str) -> None:
    kafka = {"security_protocol": "SASL_SSL", **SASL}
    del kafka[missing]
    _refused(kafka, f"DATABUS_KAFKA__{missing.upper()}")


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
@pytest.mark.parametrize("field", ["sasl_mechanism", "sasl_username", "sasl_password"])
def test_sasl_settings_without_a_sasl_protocol_are_refused(protocol: str, field: str) -> None:
    message = _refused(
        {"security_protocol": protocol, field: SASL[field]}, f"DATABUS_KAFKA__{field.upper()}"
    )
    assert "SECURITY_PROTOCOL" in message


@pytest.mark.parametrize(
    "field", ["ssl_ca_location", "ssl_certificate_location", "ssl_key_location"]
)
def test_a_missing_tls_file_is_refused(field: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    _refused({"security_protocol": "SSL", field: str(missing)}, f"DATABUS_KAFKA__{field.upper()}")


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_files_without_tls_are_refused(protocol: str, pems: dict[str, Path]) -> None:
    sasl = SASL if protocol.startswith("SASL") else {}
    _refused(
        {"security_protocol": protocol, "ssl_ca_location": str(pems["ca"]), **sasl},
        "DATABUS_KAFKA__SSL_CA_LOCATION",
        protocol,
    )


def test_a_certificate_without_its_key_and_a_key_without_its_certificate(
    pems: dict[str, Path],
) -> None:
    _refused(
        {"security_protocol": "SSL", "ssl_certificate_location": str(pems["cert"])},
        "DATABUS_KAFKA__SSL_KEY_LOCATION",
    )
    _refused(
        {"security_protocol": "SSL", "ssl_key_location": str(pems["key"])},
        "DATABUS_KAFKA__SSL_CERTIFICATE_LOCATION",
    )
    _refused(
        {"security_protocol": "SSL", "ssl_key_password": "pw"}, "DATABUS_KAFKA__SSL_KEY_PASSWORD"
    )


def test_the_variables_from_the_environment_stop_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "k:9093")
    monkeypatch.setenv("DATABUS_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DATABUS_KAFKA__SASL_USERNAME", "bus")
    monkeypatch.setenv("DATABUS_KAFKA__SASL_PASSWORD", PASSWORD)
    with pytest.raises(ConfigError, match="DATABUS_KAFKA__SASL_MECHANISM must be set"):
        load_settings()
    monkeypatch.setenv("DATABUS_KAFKA__SASL_MECHANISM", "")  # empty counts as unset
    with pytest.raises(ConfigError, match="DATABUS_KAFKA__SASL_MECHANISM must be set"):
        load_settings()


def test_coherent_mtls_and_scram_reach_every_client(pems: dict[str, Path]) -> None:
    kafka = load_settings(
        kafka={
            "bootstrap_servers": "k:9093",
            "security_protocol": "SASL_SSL",
            **SASL,
            "ssl_ca_location": str(pems["ca"]),
            "ssl_certificate_location": str(pems["cert"]),
            "ssl_key_location": str(pems["key"]),
        }
    ).kafka
    conf = kafka.client_config()
    assert conf == {
        "bootstrap.servers": "k:9093",
        **kafka.security_config(),
        **kafka_client_logging(),
    }
    assert conf["ssl.certificate.location"] == str(pems["cert"])
    assert conf["ssl.key.location"] == str(pems["key"])
    assert (conf["sasl.mechanism"], conf["sasl.username"]) == ("SCRAM-SHA-512", "bus")
    context = ssl_context(kafka)
    assert context is not None and context.get_ca_certs()
    aio = aiokafka_options(kafka)
    assert aio["sasl_plain_username"] == "bus" and aio["ssl_context"] is not None
    assert PASSWORD not in repr(kafka)


def test_plaintext_has_no_tls_context() -> None:
    kafka = KafkaSettings(bootstrap_servers="k:9092")
    assert ssl_context(kafka) is None
    assert kafka.security_config() == {"security.protocol": "PLAINTEXT"}


def test_a_refused_login_names_user_and_mechanism_never_the_password() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="k:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="bus",
        sasl_password=PASSWORD,  # type: ignore[arg-type]
    )
    heard = [KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: bad creds")]
    down = KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))
    error = broker_error(kafka, down, heard)
    assert isinstance(error, BrokerAuthError)
    text = str(error)
    assert "'bus'" in text and "SCRAM-SHA-256" in text and "bad creds" in text
    assert PASSWORD not in text
    assert exit_code_for(error) == EXIT_BROKER


def test_tls_and_unreachable_are_broker_failures() -> None:
    kafka = KafkaSettings(bootstrap_servers="k:9093")
    tls = broker_error(kafka, KafkaError(KafkaError._SSL, "certificate verify failed"))
    assert isinstance(tls, BrokerAuthError) and "DATABUS_KAFKA__SSL_CA_LOCATION" in str(tls)
    down = broker_error(kafka, KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    assert type(down) is BrokerError and "DATABUS_KAFKA__BOOTSTRAP_SERVERS" in str(down)
    assert is_broker_failure(KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)))
    assert not is_broker_failure(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS))


def test_one_mapping_from_error_to_exit_code() -> None:
    assert exit_code_for(ConfigError("DATABUS_X: bad")) == EXIT_BAD_SETTING
    assert exit_code_for(BrokerError("down"), default=1) == EXIT_BROKER
    assert exit_code_for(KafkaException(KafkaError(KafkaError._TIMED_OUT))) == EXIT_BROKER
    assert exit_code_for(SinkError("refused"), default=1) == 1
    assert exit_code_for(ValueError("x"), default=2) == 2
