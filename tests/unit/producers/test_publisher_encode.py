"""The Publisher's per-event work, without a broker: one validation pass, the same
bytes as before, the same refusals, and headers/ids made cheaply but the same way.

Each dataset's ``EventEncoder`` (what a Publisher encodes with) is built with a
serializer whose registry nobody answers and a known schema id, so nothing is
registered.
"""

from __future__ import annotations

import io
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from bus.errors import PublishValidationError
from bus.settings import load_settings
from producers.headers import (
    HeaderTemplate,
    ce_time,
    cloudevent_headers,
    new_event_id,
    new_ids,
    new_traceparent,
)
from producers.publisher import EventEncoder, dict_is_dump
from producers.simulators import SIMULATORS, SimSpec, generate_dataset
from schemas.catalog import DATASETS, DOSSIERS, load_schema, value_subject
from schemas.codec import AvroSerializer, frame, unframe
from schemas.models.common import Op
from schemas.models.public_service import Channel, Dossier, DossierStatus

SECRET = "079190012345678901234"  # a personal value no refusal may quote
SCHEMA_ID = 42


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def registry() -> Iterator[SchemaRegistryClient]:
    url = f"http://127.0.0.1:{_closed_port()}"
    client = SchemaRegistryClient({"url": url, "max.retries": 0, "retries.wait.ms": 1})
    yield client
    client.close()


def encoder_of(registry: SchemaRegistryClient, dataset_id: str) -> EventEncoder:
    dataset = DATASETS[dataset_id]
    serializer = AvroSerializer(
        registry, value_subject(dataset.raw_topic), load_schema(dataset.raw_schema)
    )
    return EventEncoder(
        dataset,
        serializer,
        source_system="unit",
        max_bytes=load_settings().kafka.message_max_bytes,
        schema_id=SCHEMA_ID,  # as if registered
    )


def dossier(**changes: Any) -> Dossier:
    fields: dict[str, Any] = {
        "dossier_id": "HS-UNIT-1",
        "dossier_code": "000.00.12.H19-250801-0012",
        "procedure_code": "1.001612",
        "procedure_name": "Đăng ký thành lập hộ kinh doanh",
        "receiving_unit_code": "DNA.SCT",
        "admin_unit_code": "20194",
        "applicant_citizen_id": "048190000042",
        "applicant_name": "Trần Văn Lộc",
        "applicant_birth_date": "1990-02-01",
        "applicant_sex": "MALE",
        "status": DossierStatus.IN_PROGRESS,
        "channel": Channel.ONLINE,
        "received_at": "2025-08-01T08:30:00+07:00",
        "due_at": "2025-08-06T17:00:00+07:00",
        "completed_at": None,
    }
    fields.update(changes)
    return Dossier(**fields)


def _sim_records() -> list[Any]:
    spec = SimSpec(days=2, per_day=4, seed=7, end=datetime(2026, 11, 20, tzinfo=UTC))
    return [r for dataset_id in sorted(SIMULATORS) for r in generate_dataset(dataset_id, spec)[:8]]


SIM_RECORDS = _sim_records()


@pytest.mark.parametrize("dataset_id", sorted(DATASETS))
def test_every_dataset_model_skips_the_dump(dataset_id: str) -> None:
    assert dict_is_dump(DATASETS[dataset_id].model)


def test_a_model_with_a_nested_model_or_serializer_keeps_the_dump() -> None:
    from pydantic import field_serializer

    class Inner(BaseModel):
        x: int

    class Outer(BaseModel):
        inner: Inner

    class Serialized(BaseModel):
        when: date

        @field_serializer("when")
        def _iso(self, value: date) -> str:
            return value.isoformat()

    assert not dict_is_dump(Outer)
    assert not dict_is_dump(Serialized)


def test_validated_fields_are_the_python_dump_for_every_simulated_record() -> None:
    assert {r.dataset_id for r in SIM_RECORDS} == set(SIMULATORS)
    for rec in SIM_RECORDS:
        model = type(rec.record)
        checked = model.__pydantic_validator__.validate_python(rec.record.__dict__)
        assert checked.__dict__ == rec.record.model_dump(mode="python"), rec.dataset_id


def _old_envelope_bytes(
    serializer: AvroSerializer, rec: Any, decoded: dict[str, Any], event_id: str
) -> bytes:
    """What the Publisher wrote before: dump, validate, dump, then fastavro."""
    model = type(rec.record)
    state = model.model_validate(rec.record.model_dump(warnings=False)).model_dump(mode="python")
    record_name = serializer.union_record_name("after")
    branch = (record_name, state) if record_name else state
    envelope = {
        "event_id": event_id,
        "op": rec.op.value,
        "ts_ms": decoded["ts_ms"],
        "source": {
            "system": "unit",
            "unit": DATASETS[rec.dataset_id].owner_unit,
            "dataset": rec.dataset_id,
            "ts_ms": rec.at,
            "version": rec.version,
        },
        "before": branch if rec.op is Op.DELETE else None,
        "after": None if rec.op is Op.DELETE else branch,
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, serializer.parsed_schema, envelope)
    return frame(SCHEMA_ID, buf.getvalue())


def test_every_simulated_record_encodes_as_before(registry: SchemaRegistryClient) -> None:
    encoders: dict[str, EventEncoder] = {}
    for rec in SIM_RECORDS:
        encoder = encoders.get(rec.dataset_id) or encoder_of(registry, rec.dataset_id)
        encoders[rec.dataset_id] = encoder
        after = None if rec.op is Op.DELETE else rec.record
        before = rec.record if rec.op is Op.DELETE else None
        key, value, headers, event_id = encoder.encode(
            after,
            version=rec.version,
            op=rec.op,
            before=before,
            changed_at=rec.at,
            event_id=rec.event_id,
        )
        assert event_id == rec.event_id
        schema_id, body = unframe(value)
        assert schema_id == SCHEMA_ID
        decoded = fastavro.schemaless_reader(
            io.BytesIO(body), encoder.serializer.parsed_schema, None
        )
        assert isinstance(decoded, dict)
        # The envelope's ts_ms was taken now: the rest must be what the old path wrote.
        assert value == _old_envelope_bytes(encoder.serializer, rec, decoded, event_id)
        assert key == DATASETS[rec.dataset_id].key_of(rec.record.model_dump()).encode()
        names = [name for name, _ in headers]
        assert names == [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "content-type",
            "traceparent",
        ]


def test_publisher_made_ids_and_times(registry: SchemaRegistryClient) -> None:
    encoder = encoder_of(registry, DOSSIERS.id)
    before_ms = int(datetime.now(UTC).timestamp() * 1000)
    _, value, headers, event_id = encoder.encode(dossier(), version=3, op=Op.UPDATE, unit="UNIT.X")
    after_ms = int(datetime.now(UTC).timestamp() * 1000) + 1
    assert uuid.UUID(event_id).version == 4
    h = dict(headers)
    assert h["ce_id"] == event_id.encode()
    assert h["ce_source"] == b"/databus/unit/UNIT.X"
    assert h["ce_type"] == f"vn.gov.databus.{DOSSIERS.id}.u".encode()
    env = fastavro.schemaless_reader(
        io.BytesIO(unframe(value)[1]), encoder.serializer.parsed_schema, None
    )
    assert isinstance(env, dict)
    ts = env["ts_ms"]
    assert before_ms <= int(ts.timestamp() * 1000) <= after_ms
    assert env["source"]["ts_ms"] == ts  # no changed_at: the emission time
    assert env["source"]["unit"] == "UNIT.X"
    assert h["ce_time"] == ts.isoformat(timespec="milliseconds").encode()


# -- refusals: one validation pass still refuses what the dump-validate-dump refused ----


def _bad_models() -> dict[str, Any]:
    good = dossier().model_dump()
    return {
        "construct_too_long": Dossier.model_construct(**{**good, "applicant_citizen_id": SECRET}),
        "construct_not_a_string": Dossier.model_construct(
            **{**good, "applicant_citizen_id": int(SECRET[:14])}
        ),
        "construct_bad_status": Dossier.model_construct(**{**good, "status": "BOGUS"}),
        "construct_missing": Dossier.model_construct(
            **{k: v for k, v in good.items() if k != "due_at"}
        ),
        "copy_too_long": dossier().model_copy(update={"applicant_citizen_id": SECRET}),
        "copy_wrong_type": dossier().model_copy(update={"received_at": 20250801}),
        "copy_unknown_field": dossier().model_copy(update={"bogus": 1}),
        "copy_bad_enum": dossier().model_copy(update={"applicant_sex": "X"}),
        "dict_mutated": _mutated(),
    }


def _mutated() -> Dossier:
    d = dossier()
    d.__dict__["applicant_citizen_id"] = SECRET  # frozen models can still be forced
    return d


@pytest.mark.parametrize("case", sorted(_bad_models()))
def test_corrupted_instances_are_refused(registry: SchemaRegistryClient, case: str) -> None:
    encoder = encoder_of(registry, DOSSIERS.id)
    bad = _bad_models()[case]
    with pytest.raises(PublishValidationError) as info:
        encoder.encode(bad, version=1)
    assert "nothing was sent" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_wrong_model_type_is_refused(registry: SchemaRegistryClient) -> None:
    class NotADossier(BaseModel):
        dossier_id: str

    encoder = encoder_of(registry, DOSSIERS.id)
    with pytest.raises(PublishValidationError, match="takes Dossier, got NotADossier"):
        encoder.encode(NotADossier(dossier_id="x"), version=1)


def test_a_given_event_id_that_is_not_a_uuid_is_refused(registry: SchemaRegistryClient) -> None:
    encoder = encoder_of(registry, DOSSIERS.id)
    with pytest.raises(PublishValidationError, match="event_id: not a UUID"):
        encoder.encode(dossier(), version=1, event_id="evt-1")


def test_changed_at_that_is_not_a_datetime_is_refused_without_its_value(
    registry: SchemaRegistryClient,
) -> None:
    encoder = encoder_of(registry, DOSSIERS.id)
    with pytest.raises(PublishValidationError, match=r"source\.ts_ms: expected long, got str"):
        encoder.encode(dossier(), version=1, changed_at="2025-08-01")  # type: ignore[arg-type]


# -- ids and headers -----------------------------------------------------------------


@given(raw=st.binary(min_size=40, max_size=40))
def test_event_id_bits_are_uuid4s(raw: bytes) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr("producers.headers.os.urandom", lambda n: raw[:n])
        assert new_event_id() == str(uuid.UUID(bytes=raw[:16], version=4))
        event_id, traceparent = new_ids()
    assert event_id == str(uuid.UUID(bytes=raw[:16], version=4))
    assert traceparent == f"00-{raw[16:32].hex()}-{raw[32:].hex()}-01".encode()


def test_new_ids_are_random_uuid4s_and_traceparents() -> None:
    seen = set()
    pattern = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01")
    for _ in range(1000):
        event_id, traceparent = new_ids()
        assert uuid.UUID(event_id).version == 4 and str(uuid.UUID(event_id)) == event_id
        assert pattern.fullmatch(traceparent)
        assert pattern.fullmatch(new_traceparent().encode())
        assert uuid.UUID(new_event_id()).version == 4
        seen.add(event_id)
    assert len(seen) == 1000


@given(ms=st.integers(0, 253_402_300_799_999))
def test_ce_time_is_isoformat_milliseconds(ms: int) -> None:
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert ce_time(ms) == when.isoformat(timespec="milliseconds").encode()


def test_header_template_gives_cloudevent_headers() -> None:
    when = datetime(2025, 8, 1, 1, 2, 3, 456789, tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    tp = new_traceparent()
    template = HeaderTemplate("/databus/x/U", "vn.gov.databus.d.c")
    assert template.headers("id-1", ms, tp.encode()) == cloudevent_headers(
        event_id="id-1",
        source="/databus/x/U",
        event_type="vn.gov.databus.d.c",
        time=when,
        traceparent=tp,
    )
