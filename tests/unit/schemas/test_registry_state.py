"""The registry's pure state: ids, versions, levels and compatibility decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bus.errors import IncompatibleSchemaError
from schemas.registry_state import (
    DEFAULT_LEVEL,
    CompatibilityLevel,
    RegistryRequestError,
    RegistryState,
    parse_version,
)

AVSC_DIR = Path(__file__).resolve().parents[3] / "schemas" / "avro" / "publicservice"


def record(*fields: dict[str, Any], name: str = "Reading") -> str:
    return json.dumps({"type": "record", "name": name, "fields": list(fields)})


def enum(*symbols: str) -> str:
    return json.dumps({"type": "enum", "name": "Level", "symbols": list(symbols)})


X_INT = {"name": "x", "type": "int"}
Y_STRING = {"name": "y", "type": "string"}
Y_DEFAULT = {"name": "y", "type": "string", "default": "none"}


def register(state: RegistryState, subject: str, schema: str) -> int:
    plan = state.plan_register(subject, schema)
    if plan.change is not None:
        state.apply(plan.change)
    return plan.schema_id


def with_level(level: CompatibilityLevel) -> RegistryState:
    state = RegistryState()
    state.apply(state.plan_set_level(level))
    return state


def refusal(state: RegistryState, subject: str, schema: str) -> str:
    with pytest.raises(IncompatibleSchemaError) as caught:
        state.plan_register(subject, schema)
    return str(caught.value)


def error_code(exc: pytest.ExceptionInfo[RegistryRequestError]) -> int:
    return exc.value.error_code


def test_default_level_is_backward_transitive() -> None:
    assert RegistryState().global_level is DEFAULT_LEVEL is CompatibilityLevel.BACKWARD_TRANSITIVE


def test_added_field_without_default_is_refused_under_backward_naming_the_field() -> None:
    state = with_level(CompatibilityLevel.BACKWARD)
    register(state, "s-value", record(X_INT))

    message = refusal(state, "s-value", record(X_INT, Y_STRING))

    assert "field 'y' at /fields/1" in message
    assert "reader_field_missing_default_value" in message
    assert "version 1" in message
    assert state.versions("s-value") == [1]


def test_added_field_with_default_is_compatible() -> None:
    state = RegistryState()
    first = register(state, "s-value", record(X_INT))
    second = register(state, "s-value", record(X_INT, Y_DEFAULT))

    assert (first, second) == (1, 2)
    assert state.versions("s-value") == [1, 2]


def test_removed_field_is_refused_under_forward() -> None:
    state = with_level(CompatibilityLevel.FORWARD)
    register(state, "s-value", record(X_INT, Y_STRING))

    message = refusal(state, "s-value", record(X_INT))

    assert "'y'" in message
    assert "reader_field_missing_default_value" in message
    assert "version 1 cannot read data written with the new schema" in message


def test_removed_field_is_fine_under_backward() -> None:
    state = with_level(CompatibilityLevel.BACKWARD)
    register(state, "s-value", record(X_INT, Y_STRING))

    assert register(state, "s-value", record(X_INT)) == 2


def test_type_change_int_to_string_is_refused_naming_the_field() -> None:
    state = RegistryState()
    register(state, "s-value", record(X_INT))

    message = refusal(state, "s-value", record({"name": "x", "type": "string"}))

    assert "field 'x' at /fields/0/type" in message
    assert "type_mismatch" in message
    assert "string not compatible with writer type: int" in message


def test_enum_symbol_removal_is_refused_under_backward() -> None:
    state = RegistryState()
    register(state, "level-value", enum("LOW", "HIGH"))

    message = refusal(state, "level-value", enum("LOW"))

    assert "missing_enum_symbols" in message
    assert "HIGH" in message


def test_full_refuses_what_either_direction_refuses() -> None:
    state = with_level(CompatibilityLevel.FULL)
    register(state, "s-value", record(X_INT))

    assert "reader_field_missing_default_value" in refusal(
        state, "s-value", record(X_INT, Y_STRING)
    )
    assert register(state, "s-value", record(X_INT, Y_DEFAULT)) == 2


def test_none_accepts_anything() -> None:
    state = with_level(CompatibilityLevel.NONE)
    register(state, "s-value", record(X_INT))

    assert register(state, "s-value", record({"name": "x", "type": "string"})) == 2


def three_versions(level: CompatibilityLevel) -> RegistryState:
    state = with_level(level)
    register(state, "s-value", record(X_INT))
    register(state, "s-value", record(X_INT, Y_DEFAULT))
    return state


def test_transitive_checks_every_version_and_non_transitive_only_the_latest() -> None:
    # v3 drops y's default: fine against v2 (which has y), not against v1 (which does not).
    third = record(X_INT, Y_STRING)

    latest_only = three_versions(CompatibilityLevel.BACKWARD)
    assert register(latest_only, "s-value", third) == 3

    transitive = three_versions(CompatibilityLevel.BACKWARD_TRANSITIVE)
    message = refusal(transitive, "s-value", third)
    assert "version 1" in message
    assert "version 2" not in message
    assert "field 'y'" in message


def test_same_schema_keeps_its_id_and_version() -> None:
    state = RegistryState()
    schema = record(X_INT)
    register(state, "s-value", schema)

    again = state.plan_register("s-value", json.dumps(json.loads(schema), indent=4))

    assert (again.schema_id, again.version, again.change) == (1, 1, None)


def test_same_schema_under_another_subject_shares_the_global_id() -> None:
    state = RegistryState()
    first = register(state, "a-value", record(X_INT))
    other = register(state, "b-value", record(X_INT, Y_DEFAULT))
    shared = register(state, "c-value", record(X_INT))

    assert (first, other, shared) == (1, 2, 1)
    assert state.get_version("c-value", "latest").version == 1
    assert [(v.subject, v.version) for v in state.versions_by_id(1)] == [
        ("a-value", 1),
        ("c-value", 1),
    ]


def test_version_lookup_by_number_latest_and_minus_one() -> None:
    state = three_versions(CompatibilityLevel.BACKWARD)

    assert state.get_version("s-value", 1).schema == record(X_INT).replace(" ", "")
    assert state.get_version("s-value", "latest").version == 2
    assert state.get_version("s-value", "-1").version == 2
    assert state.get_version("s-value", "2").to_json() == {
        "subject": "s-value",
        "version": 2,
        "id": 2,
        "schema": state.schema_by_id(2),
    }


@pytest.mark.parametrize(
    ("subject", "version", "code"),
    [("missing", "latest", 40401), ("s-value", 9, 40402), ("s-value", "abc", 42202)],
)
def test_lookup_errors_carry_confluent_codes(subject: str, version: str | int, code: int) -> None:
    state = three_versions(CompatibilityLevel.BACKWARD)
    with pytest.raises(RegistryRequestError) as caught:
        state.get_version(subject, version)
    assert error_code(caught) == code


def test_lookup_schema_under_subject() -> None:
    state = three_versions(CompatibilityLevel.BACKWARD)

    assert state.lookup("s-value", record(X_INT, Y_DEFAULT)).version == 2
    with pytest.raises(RegistryRequestError) as caught:
        state.lookup("s-value", record(X_INT, name="Other"))
    assert error_code(caught) == 40403
    with pytest.raises(RegistryRequestError) as missing_id:
        state.schema_by_id(99)
    assert error_code(missing_id) == 40403


@pytest.mark.parametrize(
    ("schema", "schema_type"),
    [
        ("{not json", "AVRO"),
        (json.dumps({"type": "recrd", "name": "R", "fields": []}), "AVRO"),
        (record({"name": "x", "type": "int", "default": "a"}), "AVRO"),
        ("", "AVRO"),
        (record(X_INT), "PROTOBUF"),
    ],
)
def test_invalid_schemas_are_rejected(schema: str, schema_type: str) -> None:
    state = RegistryState()
    with pytest.raises(RegistryRequestError) as caught:
        state.plan_register("s-value", schema, schema_type)
    assert error_code(caught) == 42201
    assert caught.value.http_status == 422
    if schema_type == "PROTOBUF":
        assert "AVRO only" in str(caught.value)


def test_invalid_level_is_rejected() -> None:
    with pytest.raises(RegistryRequestError) as caught:
        RegistryState().plan_set_level("SIDEWAYS")
    assert error_code(caught) == 42203
    assert "BACKWARD_TRANSITIVE" in str(caught.value)


def test_subject_level_overrides_the_global_one_until_deleted() -> None:
    state = RegistryState()
    state.apply(state.plan_set_level("full", "s-value"))

    assert state.effective_level("s-value") is CompatibilityLevel.FULL
    assert state.effective_level("other") is DEFAULT_LEVEL
    previous, change = state.plan_delete_level("s-value")
    state.apply(change)
    assert previous is CompatibilityLevel.FULL
    assert state.subject_level("s-value") is None
    with pytest.raises(RegistryRequestError) as caught:
        state.plan_delete_level("s-value")
    assert error_code(caught) == 40408


def test_compatibility_check_against_one_version_or_all() -> None:
    state = three_versions(CompatibilityLevel.BACKWARD_TRANSITIVE)
    third = record(X_INT, Y_STRING)

    assert state.check_compatibility("s-value", third, "latest").is_compatible
    against_all = state.check_compatibility("s-value", third)
    assert not against_all.is_compatible
    assert len(against_all.messages) == 1
    assert state.check_compatibility("new-subject", third).is_compatible


def test_soft_delete_hides_versions_and_numbering_goes_on() -> None:
    state = three_versions(CompatibilityLevel.BACKWARD)
    deleted, change = state.plan_delete_subject("s-value")
    state.apply(change)

    assert deleted == [1, 2]
    assert state.subjects() == []
    assert state.subjects(deleted=True) == ["s-value"]
    assert state.versions("s-value", deleted=True) == [1, 2]
    # With nothing live there is nothing to be compatible with.
    assert register(state, "s-value", record({"name": "z", "type": "long"})) == 3
    assert state.get_version("s-value", "latest").version == 3


def test_permanent_delete_needs_a_soft_delete_first() -> None:
    state = three_versions(CompatibilityLevel.BACKWARD)
    with pytest.raises(RegistryRequestError) as caught:
        state.plan_delete_subject("s-value", permanent=True)
    assert error_code(caught) == 40405

    state.apply(state.plan_delete_subject("s-value")[1])
    with pytest.raises(RegistryRequestError) as twice:
        state.plan_delete_subject("s-value")
    assert error_code(twice) == 40404
    gone, change = state.plan_delete_subject("s-value", permanent=True)
    state.apply(change)
    assert gone == [1, 2]
    assert state.subjects(deleted=True) == []
    # Ids stay resolvable so data written with them can still be read.
    assert state.schema_by_id(1)


def test_deleting_one_version() -> None:
    state = three_versions(CompatibilityLevel.BACKWARD)
    number, change = state.plan_delete_version("s-value", "latest")
    state.apply(change)

    assert number == 2
    assert state.versions("s-value") == [1]
    assert state.versions("s-value", deleted_only=True) == [2]
    state.apply(state.plan_delete_version("s-value", 2, permanent=True)[1])
    assert state.versions("s-value", deleted=True) == [1]


def test_replaying_the_records_rebuilds_the_same_state() -> None:
    live = RegistryState()
    records = []

    def commit(change: Any) -> None:
        live.apply(change)
        records.append((change.key_bytes(), change.value_bytes()))

    commit(live.plan_set_level("FULL_TRANSITIVE"))
    for subject, schema in [
        ("a-value", record(X_INT)),
        ("a-value", record(X_INT, Y_DEFAULT)),
        ("b-value", record(X_INT)),
    ]:
        change = live.plan_register(subject, schema).change
        assert change is not None
        commit(change)
    commit(live.plan_delete_subject("b-value")[1])

    replayed = RegistryState()
    for key, value in records:
        replayed.apply_record(key, value)

    assert replayed.global_level is CompatibilityLevel.FULL_TRANSITIVE
    assert replayed.subjects() == ["a-value"]
    assert replayed.get_version("a-value", "latest") == live.get_version("a-value", "latest")
    assert replayed.plan_register("c-value", record(X_INT, Y_DEFAULT)).schema_id == 2
    assert replayed.plan_register("c-value", record(Y_STRING)).schema_id == 3


def test_real_dossier_schema_registers_and_a_breaking_change_names_the_field() -> None:
    raw = (AVSC_DIR / "dossiers.raw.v1.avsc").read_text(encoding="utf-8")
    state = RegistryState()
    assert register(state, "publicservice.dossiers.raw.v1-value", raw) == 1

    document = json.loads(raw)
    document["fields"].append({"name": "priority", "type": "int"})
    message = refusal(state, "publicservice.dossiers.raw.v1-value", json.dumps(document))

    assert f"field 'priority' at /fields/{len(document['fields']) - 1}" in message


@pytest.mark.parametrize(("text", "expected"), [("latest", "latest"), ("-1", "latest"), (3, 3)])
def test_parse_version(text: str | int, expected: object) -> None:
    assert parse_version(text) == expected
