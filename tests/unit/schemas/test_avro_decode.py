"""The compiled Avro decoder reads what fastavro reads, and names every problem.

Equivalence: Hypothesis builds values for every schema under ``schemas/avro`` (and a
synthetic schema with every type, logical type and union shape), fastavro writes
them, and the compiled decoder must return what ``fastavro.schemaless_reader``
returns — same types, same dict order — with and without schema resolution (the
history files read as the current schema, and the other way round). Strictness:
every prefix of a body is ``truncated_payload``, bytes after it ``trailing_bytes``,
and each kind of garbage its reason code, never another exception.
"""

from __future__ import annotations

import functools
import io
import json
import math
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro.read import SchemaResolutionError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

# The value strategies of the encoder's tests (same folder, pytest puts it on sys.path).
from test_avro_compile import SYNTHETIC, Strategies

from bus.errors import CodecError
from schemas.codec import AvroDeserializer, UnsupportedSchemaError, compile_decoder, frame

ROOT = Path(__file__).resolve().parents[3]
AVRO = ROOT / "schemas" / "avro"
AVSC = sorted(p for p in AVRO.rglob("*.avsc") if "history" not in p.parts)
HISTORY = sorted(AVRO.rglob("history/*.avsc"))
DOSSIER_RAW = AVRO / "publicservice" / "dossiers.raw.v1.avsc"
NAME_PLACEHOLDER = "ZZZZZZZZ"


def parse(schema: Any) -> Any:
    return fastavro.parse_schema(schema)


def load(path: Path) -> Any:
    return parse(json.loads(path.read_text(encoding="utf-8")))


def write(parsed: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def fastavro_read(body: bytes, writer: Any, reader: Any = None) -> Any:
    buf = io.BytesIO(body)
    value = fastavro.schemaless_reader(buf, writer, reader)
    assert buf.tell() == len(body)
    return value


def assert_same(ours: Any, theirs: Any, path: str = "") -> None:
    """Equal, of the same types, dicts in the same key order (NaN equals NaN)."""
    assert type(ours) is type(theirs), (path, type(ours), type(theirs))
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), path
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for n, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{n}]")
    elif isinstance(theirs, float) and math.isnan(theirs):
        assert math.isnan(ours), path
    else:
        assert ours == theirs, path
        if isinstance(theirs, datetime):
            assert ours.tzinfo == theirs.tzinfo, path


def reason(decode: Any, body: bytes) -> str:
    try:
        decode(body)
    except CodecError as exc:
        return exc.reason
    return "decoded"


@functools.cache
def compiled(path: Path) -> tuple[Any, Any, st.SearchStrategy[Any]]:
    parsed = load(path)
    return parsed, compile_decoder(parsed), Strategies(parsed).of(parsed)


def draw_body(data: st.DataObject, parsed: Any, strategy: st.SearchStrategy[Any]) -> bytes:
    datum = data.draw(strategy, label="datum")
    try:
        return write(parsed, datum)
    except (ValueError, TypeError):
        assume(False)  # a value fastavro refuses to write (see test_avro_compile)
        raise


# -- equivalence with fastavro -----------------------------------------------------------


def test_every_schema_under_schemas_avro_is_tested() -> None:
    tested = {p.parent.name for p in AVSC}
    assert {"alerts", "control", "publicservice", "quality", "health"} <= tested
    assert len(AVSC) >= 30 and HISTORY


@pytest.mark.parametrize("path", AVSC, ids=[str(p.relative_to(AVRO)) for p in AVSC])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_schema_decodes_like_fastavro(path: Path, data: st.DataObject) -> None:
    parsed, decode, strategy = compiled(path)
    body = draw_body(data, parsed, strategy)
    assert_same(decode(body), fastavro_read(body, parsed))
    # Every strict prefix is a truncation (Avro bodies are prefix-free), never a crash.
    cut = data.draw(st.integers(0, len(body) - 1), label="cut") if body else 0
    if body:
        assert reason(decode, body[:cut]) == "truncated_payload"
    assert reason(decode, body + b"\x00") == "trailing_bytes"


SYNTHETIC_PARSED = parse(SYNTHETIC)
SYNTHETIC_DECODE = compile_decoder(SYNTHETIC_PARSED)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_type_and_union_shape_decodes_like_fastavro(data: st.DataObject) -> None:
    body = draw_body(data, SYNTHETIC_PARSED, Strategies(SYNTHETIC_PARSED).of(SYNTHETIC_PARSED))
    assert_same(SYNTHETIC_DECODE(body), fastavro_read(body, SYNTHETIC_PARSED))
    cut = data.draw(st.integers(0, len(body) - 1), label="cut")
    assert reason(SYNTHETIC_DECODE, body[:cut]) == "truncated_payload"


@settings(max_examples=200, deadline=None)
@given(n=st.integers(-(2**63), 2**63 - 1))
def test_longs_at_every_width(n: int) -> None:
    schema = parse({"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]})
    body = write(schema, {"n": n})
    assert compile_decoder(schema)(body) == {"n": n}


def test_top_level_non_record_schemas() -> None:
    for schema, datum in [
        ("string", "héllo"),
        (["null", "long"], 5),
        ({"type": "array", "items": "int"}, [1, 2, 3]),
        ({"type": "map", "values": "string"}, {"a": "b"}),
        ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, "B"),
    ]:
        parsed = parse(schema)
        body = write(parsed, datum)
        assert_same(compile_decoder(parsed)(body), fastavro_read(body, parsed))


def test_blocks_with_negative_counts_and_byte_sizes() -> None:
    # Other writers may split arrays and maps into blocks, with a negative count
    # followed by the block's size in bytes.
    parsed = parse({"type": "array", "items": "long"})
    # a block of -2 items (2 bytes): 1, 2; a block of 1 item: 3; the end
    body = b"\x03\x04" + b"\x02\x04" + b"\x02" + b"\x06" + b"\x00"
    assert compile_decoder(parsed)(body) == fastavro_read(body, parsed) == [1, 2, 3]


def test_bytearray_memoryview_and_offset() -> None:
    parsed, decode, _ = compiled(DOSSIER_RAW)
    body = write(parsed, dossier_event())
    expected = decode(body)
    assert decode(bytearray(body)) == expected
    assert decode(memoryview(body)) == expected
    assert decode(b"12345" + body, 5) == expected


@pytest.mark.parametrize(
    "text",
    [
        "12345678-1234-5678-1234-567812345678",
        "12345678123456781234567812345678",
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "ABCDEF00-1234-5678-1234-567812345678",
        "0x345678-1234-5678-1234-567812345678",
    ],
)
def test_uuid_spellings_read_as_uuid_does(text: str) -> None:
    schema = parse({"type": "string", "logicalType": "uuid"})
    value = compile_decoder(schema)(write(parse("string"), text))
    assert value == uuid.UUID(text) and type(value) is uuid.UUID
    assert value.is_safe == uuid.UUID(text).is_safe and hash(value) == hash(uuid.UUID(text))


@pytest.mark.parametrize("text", ["not-a-uuid", "g" * 32, "1234", "{" + "1" * 30 + "}"])
def test_strings_that_are_not_uuids_are_invalid_avro(text: str) -> None:
    schema = parse({"type": "string", "logicalType": "uuid"})
    assert reason(compile_decoder(schema), write(parse("string"), text)) == "invalid_avro"


# -- schema resolution -------------------------------------------------------------------


def _current_of(history: Path) -> Path:
    stem = history.name.split(".v")[0]
    return next(history.parent.parent.glob(f"{stem}.v1.avsc"))


@pytest.mark.parametrize("path", HISTORY, ids=[p.name for p in HISTORY])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_history_schemas_resolve_like_fastavro(path: Path, data: st.DataObject) -> None:
    old, new = load(path), load(_current_of(path))
    assert old != new
    for writer, reader in ((old, new), (new, old)):  # fields added, then fields dropped
        body = draw_body(data, writer, Strategies(writer).of(writer))
        decode = compile_decoder(writer, reader)
        assert_same(decode(body), fastavro_read(body, writer, reader))
        assert reason(decode, body[:-1]) == "truncated_payload"


def test_alert_revision_one_read_as_revision_two_gets_the_defaults() -> None:
    old = load(AVRO / "alerts" / "history" / "alerts.v1.1.avsc")
    new = load(AVRO / "alerts" / "alerts.v1.avsc")
    now = datetime(2025, 8, 1, tzinfo=UTC)
    alert = {
        "alert_id": "a1",
        "rule": "dossier_overdue_rate",
        "state": "RAISED",
        "severity": "WARNING",
        "dataset": "publicservice.dossiers",
        "unit_code": "DNA.SYT",
        "value": 0.4,
        "threshold": 0.3,
        "window_days": 30,
        "window_start": now,
        "window_end": now,
        "evidence": {"completed_late": 4},
        "message": "m",
        "ts_ms": now,
    }
    body = write(old, alert)
    decoded = compile_decoder(old, new)(body)
    assert_same(decoded, fastavro_read(body, old, new))
    assert decoded["subject_kind"] == "unit" and decoded["raised_at"] is None


RESOLVE_WRITER: dict[str, Any] = {
    "type": "record",
    "name": "w.Thing",
    "fields": [
        {"name": "i2l", "type": "int"},
        {"name": "i2d", "type": "int"},
        {"name": "l2f", "type": "long"},
        {"name": "f2d", "type": "float"},
        {"name": "s2b", "type": "string"},
        {"name": "b2s", "type": "bytes"},
        {"name": "i2u", "type": "int"},
        {"name": "u2u", "type": ["null", "int", "string"]},
        {"name": "u2plain", "type": ["null", "long"]},
        {"name": "ts2long", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["R", "G", "B"]}},
        {"name": "old_name", "type": "string"},
        {"name": "dropped", "type": {"type": "array", "items": "string"}},
        {"name": "dropped_rec", "type": ["null", {"type": "record", "name": "Gone",
                                                   "fields": [{"name": "x", "type": "long"}]}]},
        {"name": "nested", "type": {"type": "record", "name": "Inner",
                                    "fields": [{"name": "a", "type": "int"}]}},
        {"name": "items", "type": {"type": "map", "values": "Inner"}},
    ],
}  # fmt: skip
RESOLVE_READER: dict[str, Any] = {
    "type": "record",
    "name": "r.Thing",
    "fields": [
        {"name": "i2l", "type": "long"},
        {"name": "i2d", "type": "double"},
        {"name": "l2f", "type": "float"},
        {"name": "f2d", "type": "double"},
        {"name": "s2b", "type": "bytes"},
        {"name": "b2s", "type": "string"},
        {"name": "i2u", "type": ["null", "string", "double", "long"]},
        {"name": "u2u", "type": ["null", "string", "long"]},
        {"name": "u2plain", "type": "double"},
        {"name": "ts2long", "type": "long"},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["G", "R", "X"],
                                   "default": "X"}},
        {"name": "new_name", "type": "string", "aliases": ["old_name"]},
        {"name": "nested", "type": {"type": "record", "name": "Inner",
                                    "fields": [{"name": "a", "type": "long"},
                                               {"name": "b", "type": "string", "default": "-"}]}},
        {"name": "items", "type": {"type": "map", "values": "Inner"}},
        {"name": "added", "type": {"type": "array", "items": "int"}, "default": [1, 2]},
        {"name": "added_rec", "type": "Inner", "default": {"a": 7}},
        {"name": "added_null", "type": ["null", "string"], "default": None},
    ],
}  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_promotions_aliases_enums_and_defaults_resolve_like_fastavro(data: st.DataObject) -> None:
    writer, reader = parse(RESOLVE_WRITER), parse(RESOLVE_READER)
    datum = data.draw(Strategies(writer).of(writer))
    datum["b2s"] = data.draw(st.text(max_size=10)).encode()  # bytes the reader reads as text
    # The writer's null branch has no match in a plain `double` (the next test).
    datum["u2plain"] = data.draw(st.integers(-(2**53), 2**53))
    body = write(writer, datum)
    decode = compile_decoder(writer, reader)
    assert_same(decode(body), fastavro_read(body, writer, reader))


def test_mutable_defaults_are_not_shared_between_records() -> None:
    writer, reader = parse(RESOLVE_WRITER), parse(RESOLVE_READER)
    datum = {
        **dict.fromkeys(("i2l", "i2d", "l2f", "f2d", "i2u", "u2plain", "ts2long"), 1),
        "s2b": "s",
        "b2s": b"x",
        "color": "B",
        "old_name": "n",
        "dropped": [],
        "nested": {"a": 1},
        "items": {},
    }
    decode = compile_decoder(writer, reader)
    first = decode(write(writer, datum))
    assert first["color"] == "X"  # a symbol the reader lacks: the reader's default
    first["added"].append(3)
    first["added_rec"]["a"] = 0
    second = decode(write(writer, datum))
    assert second["added"] == [1, 2] and second["added_rec"] == {"a": 7}


def test_a_writer_branch_the_reader_lacks_is_invalid_avro_like_fastavro() -> None:
    field = {"name": "u", "type": ["null", "string", "long"]}
    writer = parse({"type": "record", "name": "R", "fields": [field]})
    reader = parse({"type": "record", "name": "R", "fields": [{**field, "type": ["null", "long"]}]})
    decode = compile_decoder(writer, reader)
    assert decode(write(writer, {"u": 5})) == {"u": 5}
    assert reason(decode, write(writer, {"u": "text"})) == "invalid_avro"
    with pytest.raises(SchemaResolutionError):
        fastavro_read(write(writer, {"u": "text"}), writer, reader)


def _one(field_type: Any, **extra: Any) -> Any:
    return parse(
        {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type, **extra}]}
    )


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        (_one({"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}), None),
        (_one({"type": "array", "items": "null"}), None),
        (_one("long"), parse({"type": "record", "name": "R", "fields": [
            {"name": "f", "type": "long"}, {"name": "g", "type": "long"}]})),
        (_one("string"), _one("long")),
    ],
)  # fmt: skip
def test_unsupported_schemas_are_said_so(writer: Any, reader: Any) -> None:
    with pytest.raises(UnsupportedSchemaError):
        compile_decoder(writer, reader)


# -- every problem has its reason code ----------------------------------------------------


def dossier_event(name: str = "Nguyễn Thị Thủy") -> dict[str, Any]:
    ts = datetime(2025, 8, 1, 1, 30, 15, 123000, tzinfo=UTC)
    return {
        "event_id": str(uuid.UUID(int=7)),
        "op": "u",
        "ts_ms": ts,
        "source": {
            "system": "dvc-portal",
            "unit": "DNA.VPUB",
            "dataset": "publicservice.dossiers",
            "ts_ms": ts,
            "version": 3,
        },
        "before": None,
        "after": {
            "dossier_id": "HS-SYT-000123",
            "dossier_code": "000.00.23.H19-250801-0123",
            "procedure_code": "1.000894",
            "procedure_name": "Đăng ký khai sinh",
            "receiving_unit_code": "DNA.SYT",
            "admin_unit_code": "20194",
            "applicant_citizen_id": "048190000042",
            "applicant_name": name,
            "applicant_birth_date": None,
            "applicant_sex": "FEMALE",
            "status": "COMPLETED",
            "channel": "IN_PERSON",
            "received_at": "01/08/2025 08:30",
            "due_at": "2025-08-06T17:00:00",
            "completed_at": "1754380800000",
        },
    }


@pytest.fixture(scope="module")
def dossier() -> tuple[Any, bytes]:
    parsed, decode, _ = compiled(DOSSIER_RAW)
    return decode, write(parsed, dossier_event())


def test_every_truncation_of_a_dossier_event_is_truncated_payload(
    dossier: tuple[Any, bytes],
) -> None:
    decode, body = dossier
    reasons = {cut: reason(decode, body[:cut]) for cut in range(len(body))}
    assert {cut: r for cut, r in reasons.items() if r != "truncated_payload"} == {}


@pytest.mark.parametrize("extra", [b"\x00", b"\x02xyz", b"garbage after the record"])
def test_trailing_bytes_are_counted(dossier: tuple[Any, bytes], extra: bytes) -> None:
    decode, body = dossier
    with pytest.raises(CodecError) as info:
        decode(body + extra)
    assert info.value.reason == "trailing_bytes"
    assert str(len(extra)) in str(info.value)


@pytest.mark.parametrize(("value", "what"), [(0x20, "enum 16 of 4"), (0x01, "enum -1")])
def test_enum_index_out_of_range_is_invalid_avro(
    dossier: tuple[Any, bytes], value: int, what: str
) -> None:
    decode, body = dossier
    corrupt = bytearray(body)
    assert corrupt[0] == 72 and corrupt[37] == 2  # 36-char event_id, then `op` "u"
    corrupt[37] = value
    assert reason(decode, bytes(corrupt)) == "invalid_avro", what


@pytest.mark.parametrize("value", [0x04, 0x7E, 0x01, 0x03])
def test_union_index_out_of_range_is_invalid_avro(value: int) -> None:
    parsed, decode, _ = compiled(DOSSIER_RAW)
    event = dossier_event()
    event["before"] = None
    event["after"] = None
    body = write(parsed, event)
    assert body[-2:] == b"\x00\x00"  # `before`, `after`: both the null branch
    assert reason(decode, body[:-2] + bytes([value]) + b"\x00") == "invalid_avro"
    assert reason(decode, body[:-1] + bytes([value])) == "invalid_avro"


@pytest.mark.parametrize("bad", [b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", b"ab\xc3\x28cdef"])
def test_invalid_utf8_in_a_string(bad: bytes) -> None:
    parsed, decode, _ = compiled(DOSSIER_RAW)
    body = write(parsed, dossier_event(name=NAME_PLACEHOLDER))
    assert body.count(NAME_PLACEHOLDER.encode()) == 1 and len(bad) == len(NAME_PLACEHOLDER)
    assert reason(decode, body.replace(NAME_PLACEHOLDER.encode(), bad)) == "invalid_utf8"


LONG = compile_decoder(_one("long"))
INT = compile_decoder(_one("int"))


@pytest.mark.parametrize(
    ("decode", "body", "expected"),
    [
        (LONG, b"\xff" * 10 + b"\x01", "invalid_avro"),  # 11 bytes
        (LONG, b"\x80" * 10 + b"\x00", "invalid_avro"),  # 11 bytes, even of a small value
        (LONG, b"\xff" * 9 + b"\x02", "invalid_avro"),  # 10 bytes, past 64 bits
        (LONG, b"\xff" * 9 + b"\x01", "decoded"),  # -2**63
        (LONG, b"\xfe" + b"\xff" * 8 + b"\x01", "decoded"),  # 2**63 - 1
        (LONG, b"\xff" * 9, "truncated_payload"),
        (LONG, b"", "truncated_payload"),
        (INT, b"\x80\x80\x80\x80\x10", "invalid_avro"),  # 2**31
        (INT, b"\xfe\xff\xff\xff\x0f", "decoded"),  # 2**31 - 1
        (INT, b"\xff\xff\xff\xff\x0f", "decoded"),  # -2**31
        (INT, b"\xff\xff\xff\xff\x1f", "invalid_avro"),  # -2**32
        (INT, b"\xff\xff\xff\xff\xff\x01", "invalid_avro"),  # 6 bytes
    ],
)
def test_varints(decode: Any, body: bytes, expected: str) -> None:
    assert reason(decode, body) == expected


def test_long_extremes_decode_to_their_values() -> None:
    assert LONG(b"\xff" * 9 + b"\x01") == {"f": -(2**63)}
    assert LONG(b"\xfe" + b"\xff" * 8 + b"\x01") == {"f": 2**63 - 1}
    assert INT(b"\xff\xff\xff\xff\x0f") == {"f": -(2**31)}


@pytest.mark.parametrize(
    ("field_type", "body", "expected"),
    [
        ("string", b"\x01", "invalid_avro"),  # length -1
        ("bytes", b"\x03ab", "invalid_avro"),  # length -2
        ("string", b"\x0aabc", "truncated_payload"),  # 5 announced, 3 there
        ("boolean", b"\x02", "invalid_avro"),
        ("boolean", b"\x01", "decoded"),
        ("double", b"\x00" * 7, "truncated_payload"),
        ("float", b"\x00" * 3, "truncated_payload"),
        ({"type": "fixed", "name": "F", "size": 4}, b"abc", "truncated_payload"),
        ({"type": "int", "logicalType": "date"}, b"\xfe\xff\xff\xff\x0f", "invalid_avro"),
        (
            {"type": "long", "logicalType": "timestamp-millis"},
            b"\xfe" + b"\xff" * 8 + b"\x01",
            "invalid_avro",
        ),
        ({"type": "array", "items": "long"}, b"\xfe\xff\x01\x02", "truncated_payload"),
        ({"type": "map", "values": "long"}, b"\x80\x80\x04", "truncated_payload"),
        ({"type": "array", "items": "long"}, b"\x02\x02", "truncated_payload"),  # no end
    ],
)
def test_garbage_has_its_reason(field_type: Any, body: bytes, expected: str) -> None:
    assert reason(compile_decoder(_one(field_type)), body) == expected


def test_nothing_but_codec_errors_on_random_bytes() -> None:
    _, decode, _ = compiled(DOSSIER_RAW)

    @settings(max_examples=300, deadline=None)
    @given(body=st.binary(max_size=200))
    def check(body: bytes) -> None:
        reason(decode, body)  # anything else propagates and fails the test

    check()


# -- the deserializer uses it, and falls back to fastavro ------------------------------


class _Registry(BaseHTTPRequestHandler):
    """A loopback registry answering GET /schemas/ids/<id> from a dict."""

    schemas: ClassVar[dict[int, str]] = {}

    def do_GET(self) -> None:
        schema_id = int(self.path.split("?")[0].rstrip("/").split("/")[-1])
        body: dict[str, Any]
        if schema_id in self.schemas:
            status, body = 200, {"schema": self.schemas[schema_id]}
        else:
            status, body = 404, {"error_code": 40403, "message": "Schema not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


DECIMAL_SCHEMA = {
    "type": "record",
    "name": "Money",
    "fields": [
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        }
    ],
}


@pytest.fixture(scope="module")
def registry() -> Iterator[SchemaRegistryClient]:
    _Registry.schemas = {
        1: DOSSIER_RAW.read_text(encoding="utf-8"),
        2: json.dumps(DECIMAL_SCHEMA),
        3: (AVRO / "publicservice" / "history" / "dossiers.raw.v1.1.avsc").read_text("utf-8"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with SchemaRegistryClient({"url": f"http://127.0.0.1:{server.server_address[1]}"}) as c:
            yield c
    finally:
        server.shutdown()
    server.server_close()


def test_deserializer_decodes_with_the_compiled_decoder(registry: SchemaRegistryClient) -> None:
    deserializer = AvroDeserializer(registry, DOSSIER_RAW.read_text(encoding="utf-8"))
    parsed = load(DOSSIER_RAW)
    body = write(parsed, dossier_event())
    assert_same(deserializer(frame(1, body), None), fastavro_read(body, parsed))
    assert deserializer._writers[1][1] is not None  # compiled, cached with the schema
    for cut in range(len(body)):
        assert reason(lambda v: deserializer(v, None), frame(1, body[:cut])) == (
            "truncated_payload"
        )
    assert reason(lambda v: deserializer(v, None), frame(1, body + b"\x00")) == "trailing_bytes"
    assert reason(lambda v: deserializer(v, None), frame(9, body)) == "unknown_schema_id"


def test_deserializer_resolves_an_older_writer_schema(registry: SchemaRegistryClient) -> None:
    deserializer = AvroDeserializer(registry, DOSSIER_RAW.read_text(encoding="utf-8"))
    old = load(AVRO / "publicservice" / "history" / "dossiers.raw.v1.1.avsc")
    event = dossier_event()
    for key in ("applicant_birth_date", "applicant_sex"):
        del event["after"][key]
    decoded = deserializer(frame(3, write(old, event)), None)
    assert decoded["after"]["applicant_sex"] is None
    assert_same(decoded, fastavro_read(write(old, event), old, load(DOSSIER_RAW)))


def test_deserializer_falls_back_to_fastavro(registry: SchemaRegistryClient) -> None:
    deserializer = AvroDeserializer(registry)
    parsed = parse(DECIMAL_SCHEMA)
    body = write(parsed, {"amount": Decimal("12.34")})
    assert deserializer(frame(2, body), None) == {"amount": Decimal("12.34")}
    assert deserializer._writers[2][1] is None  # not compiled: fastavro read it
    assert reason(lambda v: deserializer(v, None), frame(2, body[:-1])) == "truncated_payload"
    assert reason(lambda v: deserializer(v, None), frame(2, body + b"\x00")) == "trailing_bytes"
