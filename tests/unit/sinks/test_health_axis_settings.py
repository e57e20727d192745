"""Settings of the health axis: what is required together, what is refused, and why."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bus.errors import ConfigError
from bus.settings import HealthAxisSettings, HealthIdentifierSystems, load_settings
from sinks.health_axis import HealthAxisSink

KINDS = sorted(HealthIdentifierSystems.model_fields)
MINISTRY = {kind: f"https://ministry.example.org/sid/{kind}" for kind in KINDS}
COMPLETE: dict[str, Any] = {
    "url": "https://axis.example.org/fhir/",
    "client_secret": "s3cret",
    "pseudonym_key": "k" * 32,
    "systems": MINISTRY,
}
LOOPBACK = COMPLETE | {"url": "http://127.0.0.1:8090", "systems": {}}


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


def test_production_refuses_local_identifier_systems_naming_each_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(health_axis=COMPLETE | {"systems": {"facility": MINISTRY["facility"]}})
    message = str(raised.value)
    named = set(re.findall(r"DATABUS_HEALTH_AXIS__SYSTEMS__[A-Z_]+", message))
    assert named == {f"DATABUS_HEALTH_AXIS__SYSTEMS__{k.upper()}" for k in KINDS if k != "facility"}
    assert "s3cret" not in message


def test_an_official_looking_value_must_still_be_set_explicitly() -> None:
    # no default is official: every kind starts as a clearly-marked local placeholder
    defaults = HealthIdentifierSystems().as_dict()
    assert sorted(defaults) == KINDS
    assert all(v.startswith("urn:databus:local:") for v in defaults.values())
    with pytest.raises(ConfigError, match="absolute URI"):
        load_settings(health_axis=COMPLETE | {"systems": MINISTRY | {"encounter": "encounter"}})


def test_the_embedded_receiver_may_use_the_local_systems() -> None:
    axis = load_settings(health_axis=LOOPBACK).health_axis
    assert not axis.is_production()
    assert sorted(axis.systems.local()) == KINDS
    HealthAxisSink(axis).close()
    # said explicitly, a loopback URL (a tunnel, a sidecar proxy) is production too
    with pytest.raises(ConfigError, match="DATABUS_HEALTH_AXIS__SYSTEMS__ENCOUNTER"):
        load_settings(health_axis=LOOPBACK | {"production": True})
    strict = load_settings(health_axis=LOOPBACK | {"production": True, "systems": MINISTRY})
    assert strict.health_axis.is_production()
    # and a non-loopback URL may be declared a test system
    assert not load_settings(
        health_axis=COMPLETE | {"production": False, "systems": {}}
    ).health_axis.is_production()


def test_systems_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABUS_HEALTH_AXIS__URL", "https://axis.example.org/fhir")
    monkeypatch.setenv("DATABUS_HEALTH_AXIS__CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("DATABUS_HEALTH_AXIS__PSEUDONYM_KEY", "x" * 20)
    with pytest.raises(ConfigError, match="DATABUS_HEALTH_AXIS__SYSTEMS__DISEASE_CASE"):
        load_settings()
    for kind, uri in MINISTRY.items():
        monkeypatch.setenv(f"DATABUS_HEALTH_AXIS__SYSTEMS__{kind.upper()}", uri)
    assert load_settings().health_axis.systems.as_dict() == MINISTRY
