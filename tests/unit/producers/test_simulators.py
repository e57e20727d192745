"""The sector simulators: one per catalog dataset, deterministic, valid, Avro-encodable,
with the promised share of defects and realistic Vietnamese content."""

from __future__ import annotations

import io
import itertools
import json
import unicodedata
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import fastavro
import pytest

from producers.simulators import (
    SIMULATORS,
    SimRecord,
    SimSpec,
    generate_dataset,
    publish_records,
)
from producers.simulators.environment import vn_aqi
from producers.simulators.transport import ROUTES
from schemas.catalog import DATASETS, load_schema
from schemas.domain.citizen_id import CitizenId, check_citizen_id
from schemas.domain.reference import ReferenceData, load_reference
from schemas.models.common import Op
from schemas.models.environment import StationReading, StationType
from schemas.models.health import Encounter
from schemas.models.transport import BusPosition

if TYPE_CHECKING:
    from producers.publisher import Publisher

END = datetime(2025, 9, 15, 10, 0, 7, tzinfo=UTC)
SPEC = SimSpec(days=7, per_day=20, seed=7, invalid_share=0.03, end=END)
SIMULATED = sorted(SIMULATORS)


@pytest.fixture(scope="module")
def ref() -> ReferenceData:
    return load_reference()


@cache
def records_of(dataset_id: str, spec: SimSpec = SPEC) -> list[SimRecord]:
    return generate_dataset(dataset_id, spec, load_reference())


@cache
def parsed_schema(path: str) -> Any:
    return fastavro.parse_schema(json.loads(load_schema(path)))


def test_every_catalog_dataset_has_a_simulator() -> None:
    assert set(SIMULATORS) == set(DATASETS)


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(KeyError, match="no simulator"):
        generate_dataset("publicservice.nothing", SPEC)


@pytest.mark.parametrize("dataset_id", SIMULATED)
def test_deterministic_for_a_seed(dataset_id: str, ref: ReferenceData) -> None:
    first = records_of(dataset_id)
    again = SIMULATORS[dataset_id](SPEC, ref)
    assert again == first
    ids = [r.event_id for r in first]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)
    other = SIMULATORS[dataset_id](SimSpec(days=7, per_day=20, seed=8, end=END), ref)
    assert [r.record for r in other] != [r.record for r in first]


@pytest.mark.parametrize("dataset_id", SIMULATED)
def test_records_validate_and_encode_in_the_raw_schema(dataset_id: str) -> None:
    dataset = DATASETS[dataset_id]
    model = dataset.model
    schema = parsed_schema(dataset.raw_schema)
    records = records_of(dataset_id)
    assert len(records) >= 40  # rosters (schools, facilities) are smaller than days × per_day
    for rec in records:
        assert rec.dataset_id == dataset_id
        assert type(rec.record) is model
        assert model.model_validate(rec.record.model_dump()) == rec.record
        event = {
            "event_id": rec.event_id,
            "op": rec.op.value,
            "ts_ms": END,
            "source": {
                "system": dataset.source_system,
                "unit": dataset.owner_unit,
                "dataset": dataset_id,
                "ts_ms": rec.at,
                "version": rec.version,
            },
            "before": None,
            # The Avro writer takes datetimes/dates for timestamp-millis and date fields:
            # mode="json" would turn them into ISO strings, which fastavro refuses.
            "after": rec.record.model_dump(),
        }
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, event)
        buffer.seek(0)
        decoded = fastavro.schemaless_reader(buffer, schema, schema)
        assert isinstance(decoded, dict)
        assert model.model_validate(decoded["after"]) == rec.record


@pytest.mark.parametrize("dataset_id", SIMULATED)
def test_json_records_round_trip_the_model(dataset_id: str) -> None:
    model = DATASETS[dataset_id].model
    for rec in records_of(dataset_id):
        assert model.model_validate(rec.record.model_dump(mode="json")) == rec.record


@pytest.mark.parametrize("dataset_id", SIMULATED)
def test_invalid_share_close_to_the_spec(dataset_id: str) -> None:
    spec = SimSpec(days=10, per_day=30, seed=3, invalid_share=0.1, end=END)
    records = records_of(dataset_id, spec)
    share = sum(r.expect_reason is not None for r in records) / len(records)
    assert 0.04 <= share <= 0.15, share
    for rec in records:
        assert rec.expect_reason is None or (rec.expect_reason.isidentifier() and rec.expect_reason)
    none = records_of(dataset_id, SimSpec(days=3, per_day=10, invalid_share=0.0, end=END))
    assert all(r.expect_reason is None for r in none)


@pytest.mark.parametrize("dataset_id", SIMULATED)
def test_default_share_has_some_defects(dataset_id: str) -> None:
    reasons = {r.expect_reason for r in records_of(dataset_id)} - {None}
    assert reasons


@pytest.mark.parametrize("dataset_id", SIMULATED)
def test_times_in_the_window_and_in_order(dataset_id: str) -> None:
    records = records_of(dataset_id)
    start = END - timedelta(days=SPEC.days)
    for rec in records:
        assert rec.at.utcoffset() == timedelta(0)
        assert start <= rec.at <= END
    times = [r.at for r in records]
    assert times == sorted(times)


@pytest.mark.parametrize("dataset_id", SIMULATED)
def test_versions_increase_per_key(dataset_id: str) -> None:
    dataset = DATASETS[dataset_id]
    by_key: dict[str, list[SimRecord]] = defaultdict(list)
    for rec in records_of(dataset_id):
        by_key[dataset.key_of(rec.record.model_dump(mode="json"))].append(rec)
    for key, recs in by_key.items():
        assert [r.version for r in recs] == list(range(1, len(recs) + 1)), key
        assert [r.op for r in recs] == [Op.CREATE] + [Op.UPDATE] * (len(recs) - 1), key
        assert all(a.at <= b.at for a, b in itertools.pairwise(recs)), key


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# The portal sends some decomposed (NFD) text with stray spaces on purpose, for the
# processor to standardize: test_dossier_simulator checks that messy minority.
MESSY_TEXT = {"publicservice.dossiers"}


@pytest.mark.parametrize("dataset_id", [d for d in SIMULATED if d not in MESSY_TEXT])
def test_vietnamese_text_is_nfc(dataset_id: str) -> None:
    texts = [s for r in records_of(dataset_id) for s in _strings(r.record.model_dump(mode="json"))]
    assert texts
    assert all(unicodedata.is_normalized("NFC", t) for t in texts)
    assert not any("\u00a0" in t or "\u200b" in t for t in texts)


PERSON_FIELDS = {
    "education.teachers": ("citizen_id", "birth_date", "sex"),
    "health.encounters": ("patient_citizen_id", "patient_birth_date", "patient_sex"),
}


@pytest.mark.parametrize("dataset_id", sorted(PERSON_FIELDS))
def test_citizen_ids_agree_with_the_record(dataset_id: str, ref: ReferenceData) -> None:
    id_field, birth_field, sex_field = PERSON_FIELDS[dataset_id]
    reasons: set[str] = set()
    for rec in records_of(dataset_id, SimSpec(days=7, per_day=30, invalid_share=0.1, end=END)):
        data = rec.record.model_dump()
        result = check_citizen_id(
            data[id_field],
            ref.cccd_province_codes,
            birth_date=data[birth_field],
            sex=str(data[sex_field]),
        )
        if rec.expect_reason in ("invalid_citizen_id", "citizen_id_mismatch"):
            assert not isinstance(result, CitizenId)
            assert result.reason == rec.expect_reason
            reasons.add(rec.expect_reason)
        else:
            assert isinstance(result, CitizenId), rec.expect_reason
    assert "invalid_citizen_id" in reasons


COMMUNE_FIELD = {
    "education.schools": "commune_code",
    "education.exam_results": "commune_code",
    "health.facilities": "commune_code",
    "health.disease_cases": "commune_code",
    "feedback.reports": "commune_code",
    "land.parcels": "commune_code",
    "land.construction_permits": "commune_code",
}


@pytest.mark.parametrize("dataset_id", sorted(COMMUNE_FIELD))
def test_commune_codes_known_unless_defective(dataset_id: str, ref: ReferenceData) -> None:
    spec = SimSpec(days=7, per_day=30, invalid_share=0.1, end=END)
    field = COMMUNE_FIELD[dataset_id]
    for rec in records_of(dataset_id, spec):
        code = getattr(rec.record, field)
        if rec.expect_reason == "unknown_admin_unit":
            assert code == "99999"
        else:
            assert code in ref.crosswalk, (dataset_id, code)


def test_units_come_from_the_reference_data(ref: ReferenceData) -> None:
    for dataset_id, field in (
        ("publicservice.dossier_steps", "handling_unit_code"),
        ("documents.official_documents", "receiving_unit_code"),
        ("documents.tasks", "assignee_unit_code"),
        ("feedback.reports", "handling_unit_code"),
        ("land.construction_permits", "issuing_unit_code"),
    ):
        for rec in records_of(dataset_id):
            unit = getattr(rec.record, field)
            if rec.expect_reason == "unknown_receiving_unit":
                assert unit not in ref.receiving_units
            elif unit is not None:
                assert unit in ref.receiving_units, (dataset_id, unit)


def test_air_readings_are_consistent() -> None:
    air = [
        r
        for r in records_of("environment.station_readings")
        if isinstance(r.record, StationReading) and r.record.station_type is StationType.AIR
    ]
    assert air
    for rec in air:
        reading = rec.record
        assert isinstance(reading, StationReading)
        assert reading.pm25 is not None and reading.pm10 is not None and reading.aqi is not None
        assert 0 <= reading.aqi <= 500
        assert reading.aqi == vn_aqi(reading.pm25, reading.pm10)
        if rec.expect_reason == "impossible_measurement":
            assert reading.pm25 > reading.pm10
        else:
            assert reading.pm25 < reading.pm10
    water = [
        r.record
        for r in records_of("environment.station_readings")
        if isinstance(r.record, StationReading)
        and r.record.station_type is StationType.WATER
        and r.expect_reason is None
    ]
    assert water and all(w.ph is not None and 6 <= w.ph <= 9 for w in water)


def test_buses_move_along_their_route_inside_the_province() -> None:
    by_bus: dict[str, list[BusPosition]] = defaultdict(list)
    for rec in records_of("transport.bus_positions"):
        fix = rec.record
        assert isinstance(fix, BusPosition)
        if rec.expect_reason is None:
            assert 10.9 <= fix.latitude <= 11.9 and 106.6 <= fix.longitude <= 107.6
            assert fix.position_time == rec.at
            by_bus[fix.vehicle_plate].append(fix)
        elif rec.expect_reason == "far_future_timestamp":
            assert fix.position_time > END + timedelta(days=365)
    assert len(by_bus) >= 2
    for fixes in by_bus.values():
        assert len({(f.latitude, f.longitude) for f in fixes}) > len(fixes) // 2
        assert {f.route_id for f in fixes} <= set(ROUTES)


def test_discharge_before_admission_is_marked() -> None:
    spec = SimSpec(days=7, per_day=40, invalid_share=0.1, end=END)
    seen = 0
    for rec in records_of("health.encounters", spec):
        enc = rec.record
        assert isinstance(enc, Encounter)
        if enc.discharged_at is None:
            continue
        before = enc.discharged_at < enc.admitted_at  # same yyyyMMddHHmm form
        assert before == (rec.expect_reason == "discharged_before_admitted")
        seen += before
    assert seen


class _FakePublisher:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.flushed = 0

    def publish(self, dataset: Any, after: Any, **kwargs: Any) -> str:
        self.calls.append((dataset.id, after, kwargs))
        return str(kwargs["event_id"])

    def flush(self) -> None:
        self.flushed += 1


def test_publish_records_replays_the_simulated_events() -> None:
    records = records_of("transport.bus_positions")[:25]
    fake = _FakePublisher()
    assert publish_records(cast("Publisher", fake), records) == 25
    assert fake.flushed == 1
    for rec, (dataset_id, after, kwargs) in zip(records, fake.calls, strict=True):
        assert dataset_id == rec.dataset_id and after is rec.record
        assert kwargs == {
            "version": rec.version,
            "op": rec.op,
            "changed_at": rec.at,
            "event_id": rec.event_id,
        }
