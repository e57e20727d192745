"""The Confluent wire format and the decoder's framing errors that need no registry.

A framing error must be reported before the registry is asked anything: the
deserializer below points at a closed port, so any lookup would surface as a
``RegistryError`` instead of the expected ``CodecError``. The registry-dependent
cases (unknown id, truncated body, trailing bytes, bad UTF-8, wrong record type,
round trip) are in ``tests/integration/test_codec_registry.py``.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.errors import CodecError, RegistryError
from schemas.codec import MAGIC_BYTE, AvroDeserializer, AvroSerializer, frame, unframe

ROOT = Path(__file__).resolve().parents[3]
RAW_AVSC = ROOT / "schemas" / "avro" / "publicservice" / "dossiers.raw.v1.avsc"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_registry() -> Iterator[SchemaRegistryClient]:
    """A real client pointed at a port nothing listens on (no retries, so it is fast)."""
    client = SchemaRegistryClient(
        {"url": f"http://127.0.0.1:{_closed_port()}", "max.retries": 0, "retries.wait.ms": 1}
    )
    yield client
    client.close()


def raw_event() -> dict[str, Any]:
    ts = datetime(2025, 8, 1, 1, 30, tzinfo=UTC)
    return {
        "event_id": str(uuid.UUID(int=1)),
        "op": "c",
        "ts_ms": ts,
        "source": {
            "system": "dvc-portal",
            "unit": "DNA.VPUB",
            "dataset": "publicservice.dossiers",
            "ts_ms": ts,
            "version": 1,
        },
        "before": None,
        "after": {
            "dossier_id": "HS-SYT-000001",
            "dossier_code": "000.00.01.H19-250801-0001",
            "procedure_code": "1.000894",
            "procedure_name": "Đăng ký khai sinh",
            "receiving_unit_code": "DNA.SYT",
            "admin_unit_code": "20194",
            "applicant_citizen_id": "048190000042",
            "applicant_name": "Nguyễn Thị Thủy",
            "applicant_birth_date": "01/02/1990",
            "applicant_sex": "FEMALE",
            "status": "RECEIVED",
            "channel": "ONLINE",
            "received_at": "2025-08-01T08:30:00+07:00",
            "due_at": "2025-08-06T17:00:00+07:00",
            "completed_at": None,
        },
    }


# --- frame / unframe ---------------------------------------------------------------


@pytest.mark.parametrize("schema_id", [0, 1, 257, 2**31 - 1, 2**32 - 1])
def test_frame_layout_and_unframe_round_trip(schema_id: int) -> None:
    body = b"\x02abc"
    framed = frame(schema_id, body)
    assert framed[0] == MAGIC_BYTE == 0
    assert framed[1:5] == struct.pack(">I", schema_id)  # 4-byte big-endian id
    assert framed[5:] == body
    assert unframe(framed) == (schema_id, body)


def test_unframe_header_only_gives_empty_body() -> None:
    assert unframe(frame(7, b"")) == (7, b"")


@pytest.mark.parametrize("value", [None, b""])
def test_empty_value(value: bytes | None) -> None:
    with pytest.raises(CodecError) as info:
        unframe(value)
    assert info.value.reason == "empty_value"
    assert info.value.retriable is False


@pytest.mark.parametrize("value", [b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x01"])
def test_value_shorter_than_header(value: bytes) -> None:
    with pytest.raises(CodecError) as info:
        unframe(value)
    assert info.value.reason == "truncated_header"
    assert str(len(value)) in str(info.value)


@pytest.mark.parametrize("magic", [1, 0x7F, 0x80, 0xFF])
def test_wrong_magic_byte(magic: int) -> None:
    value = bytes([magic]) + struct.pack(">I", 1) + b"\x02"
    with pytest.raises(CodecError) as info:
        unframe(value)
    assert info.value.reason == "bad_magic_byte"


def test_json_value_is_not_mistaken_for_avro() -> None:
    with pytest.raises(CodecError) as info:
        unframe(json.dumps({"dossier_id": "HS-1"}).encode())
    assert info.value.reason == "bad_magic_byte"


# --- the deserializer reports framing errors before asking the registry ----------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty_value"),
        (b"", "empty_value"),
        (b"\x00\x00\x01", "truncated_header"),
        (b"\x05\x00\x00\x00\x01\x02", "bad_magic_byte"),
    ],
)
def test_deserializer_framing_errors_do_not_touch_the_registry(
    dead_registry: SchemaRegistryClient, value: bytes | None, reason: str
) -> None:
    deserializer = AvroDeserializer(dead_registry, RAW_AVSC.read_text(encoding="utf-8"))
    with pytest.raises(CodecError) as info:
        deserializer(value, None)
    assert info.value.reason == reason


def test_unreachable_registry_is_a_retriable_registry_error(
    dead_registry: SchemaRegistryClient,
) -> None:
    deserializer = AvroDeserializer(dead_registry, RAW_AVSC.read_text(encoding="utf-8"))
    with pytest.raises(RegistryError) as info:
        deserializer(frame(1, b"\x00"), None)
    assert not isinstance(info.value, CodecError)  # an outage is not a bad record
    assert info.value.retriable is True


def test_serializer_with_unreachable_registry_is_retriable(
    dead_registry: SchemaRegistryClient,
) -> None:
    serializer = AvroSerializer(
        dead_registry, "codec-unit-value", RAW_AVSC.read_text(encoding="utf-8")
    )
    with pytest.raises(RegistryError) as info:
        serializer(raw_event(), None)
    assert info.value.retriable is True


def test_encode_body_is_plain_avro_of_the_schema(dead_registry: SchemaRegistryClient) -> None:
    # encode_body needs no registry; fastavro reads it back with the same schema.
    schema_str = RAW_AVSC.read_text(encoding="utf-8")
    serializer = AvroSerializer(dead_registry, "codec-unit-value", schema_str)
    event = raw_event()
    body = serializer.encode_body(event)
    parsed = fastavro.parse_schema(json.loads(schema_str))
    buf = io.BytesIO(body)
    decoded = cast(dict[str, Any], fastavro.schemaless_reader(buf, parsed, None))
    assert buf.tell() == len(body)
    # fastavro gives the uuid logical type back as a UUID object.
    assert decoded["event_id"] == uuid.UUID(event["event_id"])
    assert {**decoded, "event_id": str(decoded["event_id"])} == event
