"""The Avro codec against the real embedded registry: round trip and every decode error
whose detection needs the writer schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentAvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bus.errors import CodecError
from schemas.codec import AvroDeserializer, AvroSerializer, frame, unframe

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RAW_AVSC = (ROOT / "schemas/avro/publicservice/dossiers.raw.v1.avsc").read_text(encoding="utf-8")
ALERTS_AVSC = (ROOT / "schemas/avro/alerts/alerts.v1.avsc").read_text(encoding="utf-8")
NAME_PLACEHOLDER = "ZZZZZZZZ"


@pytest.fixture(scope="module")
def client(registry_url: str) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": registry_url}) as sr_client:
        yield sr_client


@pytest.fixture(scope="module")
def serializer(client: SchemaRegistryClient) -> AvroSerializer:
    subject = f"codec-test-{uuid.uuid4().hex[:8]}.raw-value"
    return AvroSerializer(client, subject, RAW_AVSC)


@pytest.fixture
def deserializer(client: SchemaRegistryClient) -> AvroDeserializer:
    return AvroDeserializer(client, RAW_AVSC)


def raw_event(name: str = "Nguyễn Thị Thủy") -> dict[str, Any]:
    ts = datetime(2025, 8, 1, 1, 30, 15, 123000, tzinfo=UTC)
    return {
        "event_id": str(uuid.uuid4()),
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
            "applicant_sex": None,
            "status": "COMPLETED",
            "channel": "IN_PERSON",
            "received_at": "01/08/2025 08:30",
            "due_at": "2025-08-06T17:00:00",
            "completed_at": "1754380800000",
        },
    }


def as_sent(event: dict[str, Any], decoded: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(decoded["event_id"], uuid.UUID)  # the uuid logical type
    return {**decoded, "event_id": str(decoded["event_id"])}


def test_round_trip_of_a_dossier_raw_event(
    serializer: AvroSerializer, deserializer: AvroDeserializer, client: SchemaRegistryClient
) -> None:
    event = raw_event()
    value = serializer(event, None)
    schema_id, _ = unframe(value)
    assert schema_id == serializer.schema_id
    schema_str = client.get_schema(schema_id).schema_str
    assert schema_str is not None and json.loads(schema_str)["name"] == "DossierRawEvent"
    assert as_sent(event, deserializer(value, None)) == event


def test_our_bytes_are_confluent_wire_format(
    serializer: AvroSerializer, client: SchemaRegistryClient
) -> None:
    event = raw_event()
    theirs = ConfluentAvroDeserializer(client)
    ctx = SerializationContext("publicservice.dossiers.raw.v1", MessageField.VALUE)
    decoded = theirs(serializer(event, None), ctx)
    assert decoded["after"]["applicant_name"] == "Nguyễn Thị Thủy"
    assert decoded["source"]["version"] == 3


def test_unknown_schema_id(deserializer: AvroDeserializer, serializer: AvroSerializer) -> None:
    body = serializer.encode_body(raw_event())
    with pytest.raises(CodecError) as info:
        deserializer(frame(2**31 - 7, body), None)
    assert info.value.reason == "unknown_schema_id"
    assert info.value.retriable is False


def test_every_truncation_of_the_body_is_truncated_payload(
    serializer: AvroSerializer, deserializer: AvroDeserializer
) -> None:
    body = serializer.encode_body(raw_event())
    reasons = {}
    for cut in range(len(body)):
        try:
            deserializer(frame(serializer.schema_id, body[:cut]), None)
        except CodecError as exc:
            reasons[cut] = exc.reason
        else:
            reasons[cut] = "decoded"
    wrong = {cut: r for cut, r in reasons.items() if r != "truncated_payload"}
    assert wrong == {}


@pytest.mark.parametrize("extra", [b"\x00", b"\x02xyz", b"garbage after the record"])
def test_trailing_bytes(
    serializer: AvroSerializer, deserializer: AvroDeserializer, extra: bytes
) -> None:
    value = serializer(raw_event(), None) + extra
    with pytest.raises(CodecError) as info:
        deserializer(value, None)
    assert info.value.reason == "trailing_bytes"
    assert str(len(extra)) in str(info.value)


@pytest.mark.parametrize("bad", [b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", b"ab\xc3\x28cdef"])
def test_invalid_utf8_in_a_string(
    serializer: AvroSerializer, deserializer: AvroDeserializer, bad: bytes
) -> None:
    body = serializer.encode_body(raw_event(name=NAME_PLACEHOLDER))
    assert body.count(NAME_PLACEHOLDER.encode()) == 1
    assert len(bad) == len(NAME_PLACEHOLDER)  # same length: the framing stays valid
    corrupt = body.replace(NAME_PLACEHOLDER.encode(), bad)
    with pytest.raises(CodecError) as info:
        deserializer(frame(serializer.schema_id, corrupt), None)
    assert info.value.reason == "invalid_utf8"


def test_schema_of_another_record_type_is_wrong_schema(
    client: SchemaRegistryClient, deserializer: AvroDeserializer, serializer: AvroSerializer
) -> None:
    alerts = AvroSerializer(client, f"codec-test-{uuid.uuid4().hex[:8]}.alerts-value", ALERTS_AVSC)
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
    value = alerts(alert, None)
    assert unframe(value)[0] == alerts.schema_id != serializer.schema_id
    with pytest.raises(CodecError) as info:
        deserializer(value, None)
    assert info.value.reason == "wrong_schema"
    # Without a reader schema the same bytes decode: the refusal is about the type.
    assert AvroDeserializer(client)(value, None)["alert_id"] == "a1"


def test_garbage_body_is_invalid_avro_not_a_crash(
    serializer: AvroSerializer, deserializer: AvroDeserializer
) -> None:
    body = bytearray(serializer.encode_body(raw_event()))
    assert body[0] == 72 and body[37] == 2  # 36-char event_id, then `op` "u" (index 1)
    body[37] = 0x20  # enum index 16 of 4 symbols
    with pytest.raises(CodecError) as info:
        deserializer(frame(serializer.schema_id, bytes(body)), None)
    assert info.value.reason == "invalid_avro"
