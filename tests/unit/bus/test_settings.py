"""Settings from DATABUS_* variables: nesting, errors that name the variable, frozen, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticValidationError

from bus.errors import ConfigError
from bus.logs import kafka_client_logging
from bus.settings import KafkaSettings, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # CI may export the test stack's addresses; no .env file must leak in either.
    for name in list(os.environ):
        if name.upper().startswith("DATABUS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_mean_embedded_servers() -> None:
    s = load_settings()
    assert s.kafka.bootstrap_servers is None
    assert s.schema_registry.url is None and s.redis.url is None
    assert s.kafka.session_timeout_ms == 6000 and s.kafka.fetch_wait_max_ms == 10
    assert s.alerts.overdue_rate_clear < s.alerts.overdue_rate_threshold
    with pytest.raises(ConfigError, match="DATABUS_KAFKA__BOOTSTRAP_SERVERS"):
        s.kafka.client_config()
    with pytest.raises(ConfigError, match="DATABUS_SCHEMA_REGISTRY__URL"):
        s.schema_registry.client_config()


def test_prefixed_nested_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    monkeypatch.setenv("DATABUS_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("DATABUS_SCHEMA_REGISTRY__URL", "http://registry:8081/")
    monkeypatch.setenv("DATABUS_REDIS__URL", "redis://ioc:6379/2")
    monkeypatch.setenv("DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD", "0.4")
    monkeypatch.setenv("DATABUS_ALERTS__MIN_DOSSIERS", "25")
    monkeypatch.setenv("DATABUS_METRICS__PORT", "9464")
    monkeypatch.setenv("DATABUS_PROCESSOR_GROUP", "proc-x")
    monkeypatch.setenv("DATABUS_DATA_DIR", "/var/lib/databus")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9093"
    assert s.kafka.partitions == 12
    assert s.schema_registry.url == "http://registry:8081"  # trailing slash dropped
    assert s.redis.url == "redis://ioc:6379/2"
    assert s.alerts.overdue_rate_threshold == 0.4 and s.alerts.min_dossiers == 25
    assert s.alerts.window_days == 30  # untouched siblings keep their defaults
    assert s.metrics.port == 9464
    assert s.processor_group == "proc-x"
    assert s.data_dir == Path("/var/lib/databus")
    assert s.kafka.client_config() == {
        "bootstrap.servers": "k1:9092,k2:9093",
        "security.protocol": "PLAINTEXT",
        **kafka_client_logging(),  # librdkafka's lines and errors, summarised
    }
    assert s.schema_registry.client_config() == {"url": "http://registry:8081"}


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA__BOOTSTRAP_SERVERS", "elsewhere:9092")
    monkeypatch.setenv("PROCESSOR_GROUP", "nope")
    s = load_settings()
    assert s.kafka.bootstrap_servers is None and s.processor_group == "databus-processor"


def test_keyword_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    s = load_settings(kafka={"bootstrap_servers": "arg:9092"})
    assert s.kafka.bootstrap_servers == "arg:9092"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "localhost"),
        ("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2"),
        ("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "k1:port"),
        ("DATABUS_KAFKA__PARTITIONS", "0"),
        ("DATABUS_KAFKA__SESSION_TIMEOUT_MS", "soon"),
        ("DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD", "2"),
        ("DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD", "0"),
        ("DATABUS_ALERTS__MIN_DOSSIERS", "-1"),
        ("DATABUS_METRICS__PORT", "70000"),
        ("DATABUS_SCHEMA_REGISTRY__URL", "registry:8081"),
        ("DATABUS_REDIS__URL", "http://ioc:6379"),
        ("DATABUS_KAFKA__NOPE", "1"),
        ("DATABUS_KAFKA", "{not json"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert var in str(info.value)
    assert info.value.retriable is False


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "localhost")
    monkeypatch.setenv("DATABUS_ALERTS__WINDOW_DAYS", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "DATABUS_KAFKA__BOOTSTRAP_SERVERS" in message
    assert "DATABUS_ALERTS__WINDOW_DAYS" in message


def test_clear_rate_above_raise_rate_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hysteresis only works when an alert clears below the rate that raised it.
    monkeypatch.setenv("DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD", "0.3")
    monkeypatch.setenv("DATABUS_ALERTS__OVERDUE_RATE_CLEAR", "0.5")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "DATABUS_ALERTS__OVERDUE_RATE_CLEAR" in str(info.value)
    monkeypatch.setenv("DATABUS_ALERTS__OVERDUE_RATE_CLEAR", "0.3")
    assert load_settings().alerts.overdue_rate_clear == 0.3


def test_settings_are_frozen() -> None:
    s = load_settings(kafka={"bootstrap_servers": "k:9092"})
    with pytest.raises(PydanticValidationError):
        s.processor_group = "other"
    with pytest.raises(PydanticValidationError):
        s.kafka.bootstrap_servers = "evil:9092"
    with pytest.raises(PydanticValidationError):
        s.kafka = KafkaSettings(bootstrap_servers="evil:9092")
    assert s.kafka.bootstrap_servers == "k:9092"
    assert isinstance(s, Settings)


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    password = "s3cr3t-Mật-khẩu"
    monkeypatch.setenv("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "k:9093")
    monkeypatch.setenv("DATABUS_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DATABUS_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DATABUS_KAFKA__SASL_USERNAME", "databus")
    monkeypatch.setenv("DATABUS_KAFKA__SASL_PASSWORD", password)
    monkeypatch.setenv("DATABUS_SCHEMA_REGISTRY__URL", "https://sr:8081")
    monkeypatch.setenv("DATABUS_SCHEMA_REGISTRY__BASIC_AUTH", f"sr-user:{password}")
    s = load_settings()
    for text in (repr(s), str(s), repr(s.kafka), repr(s.schema_registry), s.model_dump_json()):
        assert password not in text
    # ...but the clients get the real value
    assert s.kafka.client_config()["sasl.password"] == password
    assert s.kafka.client_config()["sasl.mechanism"] == "SCRAM-SHA-512"
    assert s.schema_registry.client_config()["basic.auth.user.info"] == f"sr-user:{password}"
