"""The compiled Avro encoder writes fastavro's bytes, and refuses what does not fit.

Equivalence: Hypothesis builds values for every schema under ``schemas/avro`` (and a
synthetic schema with every type, logical type and union shape the compiler takes)
from the schema itself; the compiled encoder must give the very bytes
``fastavro.schemaless_writer`` gives, fastavro must read them back whole, and
encoding what it read must give the same bytes again.
"""

from __future__ import annotations

import functools
import io
import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import AvroSerializer, UnsupportedSchemaError, compile_encoder

ROOT = Path(__file__).resolve().parents[3]
AVSC = sorted((ROOT / "schemas" / "avro").rglob("*.avsc"))
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}

SYNTHETIC: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "namespace": "test.compile",
    "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "by", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
        {"name": "arr", "type": {"type": "array", "items": ["null", "long"]}},
        {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
        {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "lts_ms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "lts_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "t_ms", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "t_us", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "odd_logical", "type": {"type": "string", "logicalType": "no-such-type"}},
        {"name": "u_num", "type": ["null", "int", "long", "double"]},
        {"name": "u_float_first", "type": ["float", "long", "double"]},
        {"name": "u_float_only", "type": ["null", "float"]},
        {"name": "u_str", "type": ["string", "long", "boolean"]},
        {"name": "u_enum", "type": ["null", "Color", "string"]},
        {"name": "u_date", "type": ["null", {"type": "int", "logicalType": "date"}, "string"]},
        {"name": "u_ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "u_bytes", "type": ["null", "Four", "bytes"]},
        {"name": "u_arr", "type": ["null", {"type": "array", "items": "int"}]},
        {"name": "u_map", "type": ["null", "long", {"type": "map", "values": "double"}]},
        {
            "name": "inner",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Inner",
                    "fields": [
                        {"name": "x", "type": "long"},
                        {"name": "tag", "type": ["null", "string"], "default": None},
                        {"name": "n", "type": "int", "default": 7},
                        {"name": "color", "type": "Color", "default": "GREEN"},
                    ],
                },
            ],
            "default": None,
        },
        {"name": "inners", "type": {"type": "array", "items": "Inner"}},
        {"name": "maybe", "type": ["null", "string"]},
        {
            "name": "node",
            "type": {
                "type": "record",
                "name": "Node",
                "fields": [
                    {"name": "value", "type": "int"},
                    {"name": "next", "type": ["null", "Node"], "default": None},
                ],
            },
        },
    ],
}


def fastavro_bytes(parsed: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


# -- strategies built from a schema ------------------------------------------------------

_AWARE = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=7)), timezone(timedelta(hours=-5))]),
)
_NAIVE = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1))
# Integers fastavro's reader turns back into dates and datetimes (years 1 to 9999).
_MS_MIN, _MS_MAX = -62_135_596_800_000, 253_402_300_799_999
_READABLE = {
    "timestamp-millis": (_MS_MIN, _MS_MAX),
    "local-timestamp-millis": (_MS_MIN, _MS_MAX),
    "timestamp-micros": (_MS_MIN * 1000, _MS_MAX * 1000 + 999),
    "local-timestamp-micros": (_MS_MIN * 1000, _MS_MAX * 1000 + 999),
    "date": (-719_162, 2_932_896),
}


class Strategies:
    """Valid values for a parsed schema, in every form fastavro takes for them."""

    def __init__(self, parsed: Any) -> None:
        self.named: dict[str, Any] = dict(parsed.get("__named_schemas", {}))

    def resolve(self, schema: Any) -> Any:
        while isinstance(schema, str) and schema not in PRIMITIVES:
            schema = self.named[schema]
        if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
            return self.resolve(schema["type"])
        return schema

    def of(self, schema: Any, depth: int = 0) -> st.SearchStrategy[Any]:
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return self.union(schema, depth)
        kind = schema if isinstance(schema, str) else schema["type"]
        logical: Any = schema.get("logicalType") if isinstance(schema, dict) else None
        if (kind, logical) == ("long", "timestamp-millis") or (
            kind,
            logical,
        ) == ("long", "timestamp-micros"):
            return st.one_of(_AWARE, _NAIVE, st.integers(*_READABLE[logical]))
        if kind == "long" and logical in ("local-timestamp-millis", "local-timestamp-micros"):
            return st.one_of(_AWARE, _NAIVE, st.integers(*_READABLE[logical]))
        if (kind, logical) == ("int", "date"):
            return st.one_of(
                st.dates(),
                st.dates().map(date.isoformat),
                _AWARE,
                st.integers(*_READABLE["date"]),
            )
        if (kind, logical) == ("int", "time-millis"):
            return st.one_of(st.times(), st.integers(0, 86_399_999))
        if (kind, logical) == ("long", "time-micros"):
            return st.one_of(st.times(), st.integers(0, 86_399_999_999))
        if (kind, logical) == ("string", "uuid"):
            return st.one_of(st.uuids().map(str), st.uuids())
        simple = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.one_of(st.floats(width=32), st.integers(-(2**24), 2**24)),
            "double": st.one_of(st.floats(), st.integers(-(2**60), 2**60)),
            "bytes": st.one_of(st.binary(max_size=40), st.binary(max_size=5).map(bytearray)),
            "string": st.text(max_size=30),
        }
        if kind in simple:
            return simple[kind]
        if kind == "fixed":
            return st.binary(min_size=schema["size"], max_size=schema["size"])
        if kind == "enum":
            return st.sampled_from(schema["symbols"])
        if kind == "array":
            if depth > 3:
                return st.just([])
            items = self.of(schema["items"], depth + 1)
            return st.one_of(st.lists(items, max_size=4), st.lists(items, max_size=3).map(tuple))
        if kind == "map":
            if depth > 3:
                return st.just({})
            return st.dictionaries(
                st.text(max_size=8), self.of(schema["values"], depth + 1), max_size=4
            )
        assert kind == "record", kind
        return self.record(schema, depth)

    def record(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        required: dict[str, st.SearchStrategy[Any]] = {}
        optional: dict[str, st.SearchStrategy[Any]] = {}
        for field in schema["fields"]:
            ftype = field["type"]
            if depth > 3 and isinstance(ftype, list) and "null" in ftype:
                # Deep enough: recursive records end here.
                optional[field["name"]] = st.none()
                continue
            strategy = self.of(ftype, depth + 1)
            nullable = isinstance(ftype, list) and "null" in ftype
            if "default" in field or nullable:
                optional[field["name"]] = strategy  # may be left out: default / null
            else:
                required[field["name"]] = strategy
        return st.fixed_dictionaries(required, optional=optional)

    def union(self, branches: list[Any], depth: int) -> st.SearchStrategy[Any]:
        options = []
        for raw in branches:
            branch = self.resolve(raw)
            if depth > 3 and branch != "null":
                continue
            plain = self.of(raw, depth)
            options.append(plain)
            # fastavro's tuple notation: (full name or type name, value).
            if isinstance(raw, str) and raw not in PRIMITIVES:
                label = raw
            elif isinstance(branch, dict) and branch["type"] in ("record", "enum", "fixed"):
                label = branch["name"]
            else:
                label = branch if isinstance(branch, str) else branch["type"]
            # mypy cannot type a lambda with a default argument
            options.append(plain.map(lambda v, label=label: (label, v)))  # type: ignore[misc]
        return st.one_of(options)


def _check_same_bytes(parsed: Any, encode: Any, datum: Any) -> None:
    try:
        expected = fastavro_bytes(parsed, datum)
    except (ValueError, TypeError):
        # fastavro refuses it. Either ours does too, or it is tuple notation inside a
        # record fastavro is choosing a union branch for (its validator compares a
        # logical type's dict to the name): then what ours writes must read back.
        try:
            expected = encode(datum)
        except (ValueError, TypeError):
            return
    assert encode(datum) == expected
    # What fastavro reads back (UUID objects, UTC datetimes, dates...) encodes like
    # fastavro too (not always to the first bytes: a float read from a `float`
    # branch goes to a later `double`; a string read from a `string` branch goes
    # to an earlier `date` one, which may refuse it, as fastavro does).
    decoded = _read(parsed, expected)
    try:
        again = fastavro_bytes(parsed, decoded)
    except (ValueError, TypeError):
        with pytest.raises((ValueError, TypeError)):
            encode(decoded)
        return
    assert encode(decoded) == again
    _read(parsed, again)


def _read(parsed: Any, body: bytes) -> Any:
    buf = io.BytesIO(body)
    decoded = fastavro.schemaless_reader(buf, parsed, parsed)
    assert buf.tell() == len(body)  # read back whole
    return decoded


@pytest.mark.parametrize("path", AVSC, ids=[str(p.relative_to(ROOT / "schemas")) for p in AVSC])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_schema_encodes_like_fastavro(path: Path, data: st.DataObject) -> None:
    parsed, encode, strategy = _compiled(path)
    datum = data.draw(strategy, label="datum")
    _check_same_bytes(parsed, encode, datum)


@functools.cache
def _compiled(path: Path) -> tuple[Any, Any, st.SearchStrategy[Any]]:
    parsed = fastavro.parse_schema(json.loads(path.read_text()))
    return parsed, compile_encoder(parsed), Strategies(parsed).of(parsed)


def test_every_schema_under_schemas_avro_is_tested() -> None:
    tested = {p.parent.name for p in AVSC}
    assert {"alerts", "control", "publicservice", "health"} <= tested
    assert any(p.name.endswith(".std.v1.avsc") for p in AVSC)
    assert len(AVSC) >= 20


SYNTHETIC_PARSED = fastavro.parse_schema(SYNTHETIC)
SYNTHETIC_ENCODE = compile_encoder(SYNTHETIC_PARSED)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datum=Strategies(SYNTHETIC_PARSED).of(SYNTHETIC_PARSED))
def test_every_type_and_union_shape_encodes_like_fastavro(datum: dict[str, Any]) -> None:
    _check_same_bytes(SYNTHETIC_PARSED, SYNTHETIC_ENCODE, datum)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(-(2**63), 2**63 - 1))
def test_longs_at_every_width(n: int) -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]}
    )
    assert compile_encoder(schema)({"n": n}) == fastavro_bytes(schema, {"n": n})


@pytest.mark.parametrize("bits", range(0, 64))
def test_long_boundaries(bits: int) -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]}
    )
    encode = compile_encoder(schema)
    for n in (1 << bits, (1 << bits) - 1, -(1 << bits), -(1 << bits) + 1):
        if -(2**63) <= n < 2**63:
            assert encode({"n": n}) == fastavro_bytes(schema, {"n": n}), n


def test_top_level_non_record_schemas() -> None:
    schema: Any
    for schema, datum in [
        ("string", "héllo"),
        (["null", "long"], 5),
        ({"type": "array", "items": "int"}, [1, 2, 3]),
        ({"type": "map", "values": "string"}, {"a": "b"}),
        ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, "B"),
    ]:
        parsed = fastavro.parse_schema(schema)
        assert compile_encoder(parsed)(datum) == fastavro_bytes(parsed, datum)


# -- what does not fit is refused, naming the field, never quoting the value -------------

DOSSIER_RAW = ROOT / "schemas" / "avro" / "publicservice" / "dossiers.raw.v1.avsc"
DOSSIER_PARSED = fastavro.parse_schema(json.loads(DOSSIER_RAW.read_text()))
DOSSIER_ENCODE = compile_encoder(DOSSIER_PARSED)
SECRET = "079190012345"  # a personal value no message may quote


def dossier_envelope(**after_changes: Any) -> dict[str, Any]:
    after = {
        "dossier_id": "HS-1",
        "dossier_code": "000.00.12.H19-250701-0001",
        "procedure_code": "1.000894",
        "procedure_name": "Đăng ký khai sinh",
        "receiving_unit_code": "DNA.STP",
        "admin_unit_code": "75001",
        "applicant_citizen_id": SECRET,
        "applicant_name": "Nguyễn Thị Hòa",
        "applicant_birth_date": None,
        "applicant_sex": "FEMALE",
        "status": "RECEIVED",
        "channel": "ONLINE",
        "received_at": "01/07/2025 08:30",
        "due_at": "04/07/2025 17:00",
        "completed_at": None,
    }
    after.update(after_changes)
    return {
        "event_id": str(uuid.uuid4()),
        "op": "c",
        "ts_ms": datetime(2025, 7, 1, tzinfo=UTC),
        "source": {
            "system": "dvc",
            "unit": "DNA.STP",
            "dataset": "publicservice.dossiers",
            "ts_ms": 1_751_328_000_000,
            "version": 1,
        },
        "before": None,
        "after": ("vn.gov.databus.publicservice.raw.Dossier", after),
    }


def test_the_dossier_envelope_encodes_like_fastavro() -> None:
    env = dossier_envelope()
    assert DOSSIER_ENCODE(env) == fastavro_bytes(DOSSIER_PARSED, env)


def _refused(encode: Any, datum: Any, exc_type: type[Exception], path: str) -> str:
    with pytest.raises(exc_type) as info:
        encode(datum)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    assert SECRET not in message
    return message


def test_wrong_type_names_the_field_and_not_the_value() -> None:
    msg = _refused(
        DOSSIER_ENCODE,
        dossier_envelope(applicant_citizen_id=int(SECRET)),
        TypeError,
        "after.applicant_citizen_id",
    )
    assert "expected string, got int" in msg
    assert str(int(SECRET)) not in msg


def test_enum_symbol_not_in_the_list() -> None:
    _refused(DOSSIER_ENCODE, dossier_envelope(status="BOGUS"), ValueError, "after.status")
    _refused(DOSSIER_ENCODE, dossier_envelope(applicant_sex="X"), TypeError, "after.applicant_sex")
    env = dossier_envelope()
    env["op"] = "x"
    _refused(DOSSIER_ENCODE, env, ValueError, "op")


def test_missing_required_field() -> None:
    env = dossier_envelope()
    del env["source"]["version"]
    assert "missing" in _refused(DOSSIER_ENCODE, env, ValueError, "source.version")
    env = dossier_envelope()
    del env["after"][1]["due_at"]
    _refused(DOSSIER_ENCODE, env, ValueError, "after.due_at")


def test_missing_nullable_field_is_null_like_fastavro() -> None:
    env = dossier_envelope()
    del env["after"][1]["completed_at"]
    del env["before"]
    assert DOSSIER_ENCODE(env) == fastavro_bytes(DOSSIER_PARSED, env)


def test_none_for_a_required_field() -> None:
    _refused(DOSSIER_ENCODE, dossier_envelope(due_at=None), TypeError, "after.due_at")


def test_union_value_of_no_branch_and_unknown_branch_name() -> None:
    _refused(DOSSIER_ENCODE, dossier_envelope(completed_at=5), TypeError, "after.completed_at")
    env = dossier_envelope()
    env["after"] = ("vn.gov.Other", env["after"][1])
    _refused(DOSSIER_ENCODE, env, ValueError, "after")
    env["after"] = ("a", "b", "c")
    _refused(DOSSIER_ENCODE, env, ValueError, "after")
    env["after"] = ["not", "a", "record"]
    _refused(DOSSIER_ENCODE, env, TypeError, "after")


def test_event_id_must_be_a_uuid() -> None:
    env = dossier_envelope()
    env["event_id"] = "evt-1"
    _refused(DOSSIER_ENCODE, env, ValueError, "event_id")
    env["event_id"] = "g" * 32
    _refused(DOSSIER_ENCODE, env, ValueError, "event_id")
    # spellings uuid.UUID (fastavro's reader) accepts are accepted
    u = uuid.uuid4()
    for spelling in (u.hex, f"{{{u}}}", f"urn:uuid:{u}", str(u).upper(), u):
        env["event_id"] = spelling
        assert DOSSIER_ENCODE(env) == fastavro_bytes(DOSSIER_PARSED, env)


def test_timestamps_refuse_non_datetimes() -> None:
    env = dossier_envelope()
    env["ts_ms"] = date(2025, 7, 1)
    _refused(DOSSIER_ENCODE, env, TypeError, "ts_ms")
    env["ts_ms"] = "2025-07-01T00:00:00Z"
    _refused(DOSSIER_ENCODE, env, TypeError, "ts_ms")
    env["ts_ms"] = 1.5
    _refused(DOSSIER_ENCODE, env, TypeError, "ts_ms")


def _one(field_type: Any) -> Any:
    return compile_encoder(
        {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    )


@pytest.mark.parametrize(
    ("field_type", "value", "exc_type"),
    [
        ("int", 2**31, ValueError),
        ("int", -(2**31) - 1, ValueError),
        ("long", 2**63, ValueError),
        ("long", -(2**63) - 1, ValueError),
        ("long", 1.5, TypeError),  # fastavro writes 1
        ("long", 2.0, TypeError),
        ("long", True, TypeError),
        ("long", "5", TypeError),
        ("int", None, TypeError),
        ("double", "NaN", TypeError),  # fastavro calls float() on it
        ("double", True, TypeError),
        ("double", None, TypeError),
        ("double", 10**400, ValueError),
        ("float", 1e300, ValueError),  # fastavro writes infinity
        ("boolean", "x", TypeError),  # fastavro writes true
        ("boolean", None, TypeError),
        ("boolean", 1, TypeError),
        ("string", b"bytes", TypeError),
        ("string", "\ud800", ValueError),  # a lone surrogate is not UTF-8
        ("bytes", "text", TypeError),
        ({"type": "fixed", "name": "F", "size": 4}, b"abc", ValueError),
        ({"type": "fixed", "name": "F", "size": 4}, "abcd", TypeError),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, 0, ValueError),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, ["A"], ValueError),
        ({"type": "array", "items": "string"}, "ab", TypeError),  # fastavro writes ["a", "b"]
        ({"type": "array", "items": "string"}, {"a"}, TypeError),
        ({"type": "array", "items": "string"}, ["a", 1], TypeError),
        ({"type": "map", "values": "long"}, {1: 2}, TypeError),
        ({"type": "map", "values": "long"}, [("a", 1)], TypeError),
        ({"type": "int", "logicalType": "date"}, "01/07/2025", ValueError),
        ({"type": "long", "logicalType": "timestamp-millis"}, date(2025, 1, 1), TypeError),
        ({"type": "string", "logicalType": "uuid"}, "not-a-uuid", ValueError),
        (["null", "int"], 2**40, TypeError),
        (["null", "string"], 5, TypeError),
        (
            {"type": "record", "name": "S", "fields": [{"name": "a", "type": "long"}]},
            {},
            ValueError,
        ),
        ({"type": "record", "name": "S", "fields": [{"name": "a", "type": "long"}]}, 5, TypeError),
    ],
)
def test_values_that_do_not_fit_are_refused(field_type: Any, value: Any, exc_type: type) -> None:
    encode = _one(field_type)
    with pytest.raises(exc_type) as info:
        encode({"f": value})
    assert str(info.value).startswith("f"), info.value
    if isinstance(value, str) and len(value) > 2:
        assert value not in str(info.value)


def test_array_and_map_errors_name_the_position() -> None:
    encode = _one({"type": "array", "items": "string"})
    with pytest.raises(TypeError, match=r"^f\[1\]: expected string, got int"):
        encode({"f": ["a", 1]})
    encode = _one({"type": "map", "values": "long"})
    with pytest.raises(TypeError, match=r"^f\[\.\.\.\]: expected long, got str"):
        encode({"f": {"name": "x"}})


def test_nested_record_paths() -> None:
    encode = compile_encoder(SYNTHETIC_PARSED)
    with pytest.raises(ValueError, match=r"^node\.next\.next\.value: out of range for int"):
        encode_node = {"value": 1, "next": {"value": 2, "next": {"value": 2**40}}}
        encode({**_synthetic_minimal(), "node": encode_node})


def _synthetic_minimal() -> dict[str, Any]:
    return {
        "b": True,
        "i": 1,
        "l": 2,
        "f": 1.5,
        "d": 2.5,
        "by": b"x",
        "s": "s",
        "fx": b"abcd",
        "e": "RED",
        "arr": [],
        "m": {},
        "ts_ms": 0,
        "ts_us": 0,
        "lts_ms": 0,
        "lts_us": 0,
        "day": date(2025, 1, 1),
        "t_ms": dtime(1, 2, 3),
        "t_us": 0,
        "id": str(uuid.uuid4()),
        "odd_logical": "x",
        "u_num": None,
        "u_float_first": 1.0,
        "u_float_only": None,
        "u_str": "x",
        "u_enum": None,
        "u_date": None,
        "u_ts": None,
        "u_bytes": None,
        "u_arr": None,
        "u_map": None,
        "inners": [],
        "maybe": None,
        "node": {"value": 1},
    }


def test_synthetic_minimal_matches_fastavro() -> None:
    datum = _synthetic_minimal()
    assert SYNTHETIC_ENCODE(datum) == fastavro_bytes(SYNTHETIC_PARSED, datum)


def test_naive_datetimes_are_local_time_like_fastavro() -> None:
    encode = _one({"type": "long", "logicalType": "timestamp-millis"})
    parsed = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [{"name": "f", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
        }
    )
    for value in (datetime(2025, 7, 1, 8, 30, 0, 123456), datetime(1999, 12, 31, 23, 59, 59)):
        assert encode({"f": value}) == fastavro_bytes(parsed, {"f": value})


# -- what the compiler leaves to fastavro -------------------------------------------------


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2},
        [
            "null",
            {"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]},
            {"type": "record", "name": "B", "fields": [{"name": "y", "type": "int"}]},
        ],
        ["null", {"type": "map", "values": "int"}, {"type": "record", "name": "C", "fields": []}],
        [{"type": "array", "items": "int"}, {"type": "array", "items": "string"}],
        [{"type": "array", "items": "int"}, "bytes"],
    ],
)
def test_unsupported_schemas_are_said_so(field_type: Any) -> None:
    with pytest.raises(UnsupportedSchemaError):
        _one(field_type)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_registry() -> Iterator[SchemaRegistryClient]:
    client = SchemaRegistryClient(
        {"url": f"http://127.0.0.1:{_closed_port()}", "max.retries": 0, "retries.wait.ms": 1}
    )
    yield client
    client.close()


def test_serializer_falls_back_to_fastavro_for_an_unsupported_schema(
    dead_registry: SchemaRegistryClient,
) -> None:
    schema = {
        "type": "record",
        "name": "Money",
        "fields": [
            {
                "name": "amount",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
            }
        ],
    }
    from decimal import Decimal

    ser = AvroSerializer(dead_registry, "money-value", json.dumps(schema))
    datum = {"amount": Decimal("12.34")}
    assert ser.encode_body(datum) == fastavro_bytes(fastavro.parse_schema(schema), datum)


def test_serializer_uses_the_compiled_encoder(dead_registry: SchemaRegistryClient) -> None:
    ser = AvroSerializer(dead_registry, "d-value", DOSSIER_RAW.read_text())
    env = dossier_envelope()
    assert ser.encode_body(env) == fastavro_bytes(DOSSIER_PARSED, env)
    with pytest.raises(ValueError, match=r"after\.status"):
        ser.encode_body(dossier_envelope(status="BOGUS"))
