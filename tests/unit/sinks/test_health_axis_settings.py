"""Settings of the health axis: what is required together, what is refused, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.settings import HealthAxisSettings, load_settings
from sinks.health_axis import HealthAxisSink

COMPLETE = {
    "url": "https://axis.example.org/fhir/",
    "client_secret": "s3cret",
    "pseudonym_key": "k" * 32,
}


def test_defaults_mean_no_axis() -> None:
    settings = load_settings()
    assert settings.health_axis.url is None
    with pytest.raises(ConfigError, match="DATABUS_HEALTH_AXIS__URL"):
        HealthAxisSink(settings.health_axis)


def test_complete_settings_and_token_url() -> None:
    axis = load_settings(health_axis=COMPLETE).health_axis
    assert axis.url == "https://axis.example.org/fhir"
    assert axis.resolved_token_url() == "https://axis.example.org/fhir/token"
    assert "s3cret" not in repr(axis)
    explicit = HealthAxisSettings(**COMPLETE, token_url="https://idp.example.org/token")
    assert explicit.resolved_token_url() == "https://idp.example.org/token"


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABUS_HEALTH_AXIS__URL", "http://127.0.0.1:8090")
    monkeypatch.setenv("DATABUS_HEALTH_AXIS__CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("DATABUS_HEALTH_AXIS__PSEUDONYM_KEY", "x" * 20)
    monkeypatch.setenv("DATABUS_HEALTH_AXIS__RATE_PER_S", "2.5")
    axis = load_settings().health_axis
    assert axis.rate_per_s == 2.5 and axis.client_secret is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "http://axis.example.org"}, "only allowed on loopback"),
        ({"url": "ftp://axis"}, "http"),
        ({"client_secret": None}, "DATABUS_HEALTH_AXIS__CLIENT_SECRET must be too"),
        ({"pseudonym_key": "short"}, "at least 16 characters"),
        ({"ca_bundle": "/no/such/ca.pem"}, "not a readable file"),
        ({"bundle_max_entries": 2}, "DATABUS_HEALTH_AXIS__BUNDLE_MAX_ENTRIES"),
        ({"timeout_s": 0}, "DATABUS_HEALTH_AXIS__TIMEOUT_S"),
        ({"rate_per_s": -1}, "DATABUS_HEALTH_AXIS__RATE_PER_S"),
    ],
)
def test_invalid_settings_name_the_variable(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings(health_axis=COMPLETE | overrides)
    assert "s3cret" not in str(raised.value)


def test_ca_bundle_accepts_a_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_settings(health_axis=COMPLETE | {"ca_bundle": str(ca)}).health_axis.ca_bundle == ca
    assert load_settings(health_axis=COMPLETE | {"ca_bundle": ""}).health_axis.ca_bundle is None
