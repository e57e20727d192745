"""Kafka ACLs rendered from the access policy: least privilege per party."""

from __future__ import annotations

from databus.acl import AclRule, acl_rules, render_kafka_acls, render_strimzi
from schemas.access_policy import load_policy, parse_policy, unit_principal
from schemas.catalog import DATASETS

POLICY = load_policy()
RULES = acl_rules(POLICY)


def test_agencies_read_only_their_shared_topics_and_groups() -> None:
    for agency in POLICY.agencies.values():
        mine = [r for r in RULES if r.principal == agency.principal]
        topics = {r.name for r in mine if r.resource == "topic"}
        assert topics == {f"{ds}.shared.v" for ds in agency.datasets}
        assert {r.operation for r in mine} <= {"Read", "Describe"}
        assert all(r.pattern == "prefixed" for r in mine)
        assert (
            AclRule(agency.principal, "group", f"agency.{agency.id}.", "prefixed", "Read") in mine
        )


def test_no_agency_can_reach_a_raw_std_or_restricted_topic() -> None:
    agencies = {a.principal for a in POLICY.agencies.values()}
    restricted = {ds.id for ds in DATASETS.values() if ds.classification == "restricted"}
    for r in RULES:
        if r.principal in agencies and r.resource == "topic":
            assert r.name.endswith(".shared.v")
            assert r.name.removesuffix(".shared.v") not in restricted


def test_source_units_write_only_their_raw_topics() -> None:
    for ds in DATASETS.values():
        unit = unit_principal(ds.owner_unit)
        assert AclRule(unit, "topic", ds.raw_topic, "literal", "Write") in RULES
    units = {unit_principal(ds.owner_unit) for ds in DATASETS.values()}
    for r in RULES:
        if r.principal in units and r.resource == "topic":
            assert r.name.endswith(".raw.v1") and r.operation in ("Write", "Describe")
            owner = DATASETS[r.name.removesuffix(".raw.v1")].owner_unit
            assert unit_principal(owner) == r.principal


def test_the_bus_principal_runs_everything() -> None:
    assert AclRule("databus", "topic", "*", "literal", "All") in RULES
    assert AclRule("databus", "group", "*", "literal", "All") in RULES


def test_an_agency_without_datasets_gets_nothing() -> None:
    policy = parse_policy({"agencies": {"idle": {"max_classification": "public"}}})
    assert not [r for r in acl_rules(policy) if r.principal == "agency-idle"]


def test_kafka_acls_script_has_one_command_per_rule() -> None:
    script = render_kafka_acls(RULES, bootstrap="$BOOTSTRAP")
    commands = [line for line in script.splitlines() if line.startswith("kafka-acls.sh")]
    assert len(commands) == len(RULES)
    assert all('--bootstrap-server "$BOOTSTRAP"' in c and "--add" in c for c in commands)
    assert (
        "--allow-principal User:agency-bo-y-te --operation Read --topic "
        "health.facilities.shared.v --resource-pattern-type prefixed" in script
    )


def test_strimzi_users_one_per_principal() -> None:
    yaml_text = render_strimzi(RULES, cluster="databus-prod")
    principals = {r.principal for r in RULES}
    assert yaml_text.count("kind: KafkaUser") == len(principals)
    assert yaml_text.count("strimzi.io/cluster: databus-prod") == len(principals)
    assert "type: scram-sha-512" in yaml_text
    assert 'name: "agency.bo-y-te."' in yaml_text
