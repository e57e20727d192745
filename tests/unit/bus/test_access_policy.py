"""The access policy: parsed, checked against the catalog, tokens compared safely."""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bus.errors import ConfigError
from bus.settings import load_settings
from schemas.access_policy import (
    PolicyFile,
    agency_group,
    load_policy,
    new_token,
    parse_policy,
    token_hash,
    unit_principal,
)
from schemas.catalog import DATASETS

_LATER = "2099-01-01T00:00:00Z"


def _doc(**agency: Any) -> dict[str, Any]:
    return {
        "shared": {"feedback.reports": {"join_keys": ["reporter_phone"]}, "education.schools": {}},
        "agencies": {
            "so-a": {
                "max_classification": "internal",
                "datasets": ["feedback.reports"],
                **agency,
            }
        },
    }


def test_the_packaged_policy_loads_and_never_shares_restricted_data() -> None:
    policy = load_policy()
    assert policy.agencies and policy.shared
    for ds in policy.shared_datasets():
        assert ds.classification in ("public", "internal")
    for agency in policy.agencies.values():
        for ds_id in agency.datasets:
            assert ds_id in policy.shared


def test_may_read_only_what_is_granted() -> None:
    policy = parse_policy(_doc())
    assert policy.may_read("so-a", "feedback.reports")
    assert not policy.may_read("so-a", "education.schools")
    assert not policy.may_read("so-a", "health.encounters")
    assert not policy.may_read("nobody", "feedback.reports")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"shared": {"health.encounters": {}}}, "restricted: never shared"),
        ({"shared": {"no.such": {}}}, "not in the catalog"),
        ({"shared": {"feedback.reports": {"join_keys": ["report_id"]}}}, "not a personal field"),
        ({"shared": {"feedback.reports": {"hash": []}}}, "unknown key 'hash'"),
        ({"surprise": 1}, "unknown key 'surprise'"),
    ],
)
def test_a_bad_share_rule_stops(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(document)


@pytest.mark.parametrize(
    ("agency", "message"),
    [
        ({"max_classification": "restricted"}, "must be one of public, internal"),
        ({"max_classification": "public"}, "above the agency's max_classification"),
        ({"datasets": ["land.parcels"]}, "is not shared"),
        ({"token_sha256": "abc", "token_expires": "2030-01-01T00:00:00Z"}, "64 lowercase hex"),
        ({"token_sha256": "a" * 64}, "token_expires: required with token_sha256"),
        ({"token_sha256": "a" * 64, "token_expires": "soon"}, "not an ISO 8601"),
        ({"token_sha256": "a" * 64, "token_expires": "2030-01-01T00:00"}, "with its offset"),
        ({"principal": "Bad Name"}, "principal"),
    ],
)
def test_a_bad_agency_stops(agency: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(_doc(**agency))


def test_a_bad_agency_id_stops() -> None:
    doc = _doc()
    doc["agencies"]["Sở A"] = doc["agencies"].pop("so-a")
    with pytest.raises(ConfigError, match="agency id"):
        parse_policy(doc)


def test_tokens_are_kept_hashed_and_matched() -> None:
    token = new_token()
    policy = parse_policy(_doc(token_sha256=token_hash(token), token_expires=_LATER))
    found = policy.agency_for_token(token)
    assert found is not None and found.id == "so-a"
    assert policy.agency_for_token(token + "x") is None
    assert policy.agency_for_token("") is None
    assert token not in repr(policy)


def test_two_agencies_cannot_share_a_token() -> None:
    doc = _doc(token_sha256=token_hash("t" * 40), token_expires=_LATER)
    doc["agencies"]["so-b"] = dict(doc["agencies"]["so-a"])
    doc["agencies"]["so-b"]["principal"] = "agency-so-b"
    with pytest.raises(ConfigError, match="share one API token"):
        parse_policy(doc)


def test_a_token_expires_at_its_time() -> None:
    expires = datetime(2030, 1, 1, 7, tzinfo=UTC)
    agency = parse_policy(_doc(token_sha256="a" * 64, token_expires=expires)).agencies["so-a"]
    assert agency.token_expires == expires
    assert not agency.token_expired(expires - timedelta(seconds=1))
    assert agency.token_expired(expires)
    # a bare date is its midnight UTC; a string is ISO 8601 with an offset
    by_date = parse_policy(_doc(token_sha256="a" * 64, token_expires=date(2030, 1, 2)))
    assert by_date.agencies["so-a"].token_expires == datetime(2030, 1, 2, tzinfo=UTC)
    by_text = parse_policy(_doc(token_sha256="a" * 64, token_expires="2030-01-01T09:00:00+07:00"))
    assert by_text.agencies["so-a"].token_expires == datetime(2030, 1, 1, 2, tzinfo=UTC)


def _write_policy(path: Path, token: str | None) -> None:
    line = f'token_sha256 = "{token_hash(token)}"\ntoken_expires = {_LATER}\n' if token else ""
    text = (
        '[shared."feedback.reports"]\n'
        "[agencies.so-a]\n"
        'max_classification = "internal"\n'
        'datasets = ["feedback.reports"]\n' + line
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _until(condition: Any, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_policy_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    _write_policy(path, "first-token-0123456789")
    source = PolicyFile(path, check_s=0.05)
    assert source.current().agency_for_token("first-token-0123456789") is not None
    assert source.generation == 0

    _write_policy(path, None)  # the token revoked
    _until(lambda: source.current().agency_for_token("first-token-0123456789") is None)
    assert source.generation == 1 and source.error is None

    # a broken file leaves the last good policy in force, and says why
    broken = path.with_suffix(".broken")
    broken.write_text("[agencies.so-a\n", encoding="utf-8")
    os.replace(broken, path)
    _until(lambda: source.current() is not None and source.generation == 2)
    assert source.error is not None and "not valid TOML" in source.error
    assert "so-a" in source.current().agencies

    _write_policy(path, "second-token-0123456789")
    _until(lambda: source.current().agency_for_token("second-token-0123456789") is not None)
    assert source.error is None


def test_names_of_groups_and_principals() -> None:
    assert agency_group("so-a", "feedback.reports") == "agency.so-a.feedback.reports"
    assert agency_group("so-a", "feedback.reports", api=True).startswith("agency.so-a.")
    assert unit_principal(DATASETS["health.facilities"].owner_unit) == "unit-dna-syt"


def test_every_kafka_client_gets_tls_and_scram_settings(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("a PEM bundle")  # a missing CA file stops start-up
    settings = load_settings(
        kafka={
            "bootstrap_servers": "kafka-1:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "agency-so-a",
            "sasl_password": "s3cret-pass",
            "ssl_ca_location": str(ca),
        }
    )
    conf = settings.kafka.client_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "agency-so-a"
    assert conf["sasl.password"] == "s3cret-pass"
    assert conf["ssl.ca.location"] == str(ca)
    assert "s3cret-pass" not in repr(settings)


def test_access_settings_refuse_a_short_pseudonym_key() -> None:
    with pytest.raises(ConfigError, match="PSEUDONYM_KEY"):
        load_settings(access={"pseudonym_key": "short"})
