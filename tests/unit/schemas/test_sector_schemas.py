"""The sector datasets (issue 3): schemas, catalog entries and models agree.

Every schema parses with both Avro implementations the project meets (fastavro in the
codec, the reference ``avro`` package in other tools) and is the Debezium-style envelope;
every sector entry of ``schemas/catalog.toml`` names a schema, a model whose fields are
the Avro record's fields, and key/personal fields that exist; one hand-built record per
dataset survives a binary round trip unchanged.
"""

from __future__ import annotations

import importlib
import io
import json
import tomllib
import unicodedata
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from pydantic import BaseModel

from schemas.models.common import Sex
from schemas.models.documents import (
    Confidentiality,
    Direction,
    DocumentTask,
    OfficialDocument,
    TaskRole,
    TaskStatus,
    Urgency,
)
from schemas.models.education import (
    ClassStat,
    EmploymentType,
    ExamResult,
    ExamType,
    Ownership,
    Qualification,
    School,
    SchoolLevel,
    SchoolStatus,
    Teacher,
    TeacherStatus,
)
from schemas.models.environment import StationReading, StationType
from schemas.models.feedback import FeedbackReport, ReportCategory, ReportStatus
from schemas.models.health import (
    CaseClassification,
    CaseOutcome,
    DiseaseCase,
    Encounter,
    EncounterOutcome,
    EncounterType,
    FacilityLevel,
    FacilityStatus,
    FacilityType,
    HealthFacility,
)
from schemas.models.health import Ownership as HealthOwnership
from schemas.models.land import ConstructionPermit, Parcel, PermitStatus, PermitType
from schemas.models.transport import (
    BusPosition,
    OwnerKind,
    RegistrationStatus,
    VehicleRegistration,
    VehicleType,
)

ROOT = Path(__file__).resolve().parents[3]
AVRO_ROOT = ROOT / "schemas" / "avro"
CATALOG = ROOT / "schemas" / "catalog.toml"
SECTOR_DOMAINS = (
    "education",
    "health",
    "documents",
    "feedback",
    "environment",
    "transport",
    "land",
)
ENVELOPE_FIELDS = ["event_id", "op", "ts_ms", "source", "before", "after"]
ICT = timezone(timedelta(hours=7))

ENTRIES: list[dict[str, Any]] = [
    e
    for e in tomllib.loads(CATALOG.read_text(encoding="utf-8"))["dataset"]
    if str(e["id"]).split(".")[0] in SECTOR_DOMAINS
]
# Raw schemas only; the generated std schemas have their own tests
# (tests/unit/stream_processors/test_standardizers_schemas.py).
SCHEMA_FILES = sorted(p for d in SECTOR_DOMAINS for p in (AVRO_ROOT / d).glob("*.raw.v1.avsc"))


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [str(e["id"]) for e in entries]


def _document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _inner_record(document: dict[str, Any]) -> dict[str, Any]:
    before = next(f for f in document["fields"] if f["name"] == "before")
    record: dict[str, Any] = next(t for t in before["type"] if t != "null")
    return record


def _model(entry: dict[str, Any]) -> type[BaseModel]:
    module, _, name = str(entry["model"]).partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), name)
    return model


def test_every_sector_schema_is_catalogued() -> None:
    catalogued = {AVRO_ROOT / e["schema"] for e in ENTRIES}
    assert len(SCHEMA_FILES) == 15
    assert set(SCHEMA_FILES) == catalogued
    assert len(set(_ids(ENTRIES))) == len(ENTRIES)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_schema_parses_and_is_an_envelope(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    document = json.loads(text)
    fastavro.parse_schema(document)
    avro.schema.parse(text)
    assert [f["name"] for f in document["fields"]] == ENVELOPE_FIELDS
    assert document["namespace"] == f"vn.gov.databus.{path.parent.name}.raw"
    source = next(f for f in document["fields"] if f["name"] == "source")
    assert [f["name"] for f in source["type"]["fields"]] == [
        "system",
        "unit",
        "dataset",
        "ts_ms",
        "version",
    ]
    after = next(f for f in document["fields"] if f["name"] == "after")
    record = _inner_record(document)
    assert after["type"] == ["null", record["name"]]
    for field in record["fields"]:
        assert field.get("doc"), f"{field['name']} has no doc"
        if isinstance(field["type"], list):
            assert field["type"][0] == "null"
            assert "default" in field
            assert field["default"] is None


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids(ENTRIES))
def test_catalog_entry_matches_schema_and_model(entry: dict[str, Any]) -> None:
    domain, _, dataset = str(entry["id"]).partition(".")
    assert entry["schema"] == f"{domain}/{dataset}.raw.v1.avsc"
    assert entry["model"].startswith(f"schemas.models.{domain}:")
    path = AVRO_ROOT / entry["schema"]
    assert path.is_file()
    record = _inner_record(_document(path))
    names = [f["name"] for f in record["fields"]]
    model = _model(entry)
    assert list(model.model_fields) == names
    assert entry["key"]
    assert set(entry["key"]) <= set(names)
    assert set(entry["personal_fields"]) <= set(names)
    docs = {f["name"]: f["doc"] for f in record["fields"]}
    marked = {n for n, doc in docs.items() if doc.startswith("PERSONAL.")}
    assert marked == set(entry["personal_fields"])
    for name in entry["personal_fields"]:
        assert model.model_fields[name].repr is False
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"


def _t(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    """A local (UTC+7) machine time; aware datetimes compare by instant after the trip."""
    return datetime(year, month, day, hour, minute, second, tzinfo=ICT)


SAMPLES: dict[str, BaseModel] = {
    "education.schools": School(
        school_id="75000401",
        school_name="Trường THPT chuyên Lương Thế Vinh",
        school_level=SchoolLevel.UPPER_SECONDARY,
        ownership=Ownership.PUBLIC,
        commune_code="75001",
        address="Số 1 Đồng Khởi, phường Trấn Biên",
        phone="+842513823730",
        email="thptchuyenltv@dongnai.edu.vn",
        latitude=10.9574,
        longitude=106.8427,
        established_year=1991,
        status=SchoolStatus.ACTIVE,
    ),
    "education.class_stats": ClassStat(
        school_id="75000401",
        school_year="2025-2026",
        grade=10,
        class_count=12,
        student_count=420,
        female_student_count=231,
        ethnic_minority_student_count=9,
        disabled_student_count=None,
        repeating_student_count=0,
        reported_date=date(2025, 9, 30),
    ),
    "education.teachers": Teacher(
        teacher_id="GV-75-004512",
        school_id="75000401",
        full_name="Nguyễn Thị Thu Hà",
        citizen_id="075185001234",
        birth_date=date(1985, 3, 14),
        sex=Sex.FEMALE,
        subject_code="VAN",
        qualification=Qualification.MASTER,
        employment_type=EmploymentType.CIVIL_SERVANT,
        status=TeacherStatus.ACTIVE,
        start_date=date(2010, 9, 1),
    ),
    "education.exam_results": ExamResult(
        exam_type=ExamType.HS_GRADUATION,
        exam_year=2025,
        candidate_number="48012345",
        exam_council_code="48",
        first_exam_date=date(2025, 6, 26),
        student_citizen_id="075207004321",
        student_name="Trần Đức Khoa",
        student_birth_date=date(2007, 11, 2),
        school_id="75000401",
        commune_code="75002",
        scores={"TOAN": 8.75, "VAN": 7.5, "LY": 9.0, "ANH": 8.4},
        bonus_points=0.5,
        total_score=34.15,
    ),
    "health.facilities": HealthFacility(
        facility_code="75001",
        facility_name="Bệnh viện Đa khoa Đồng Nai",
        level=FacilityLevel.SPECIALIZED,
        facility_type=FacilityType.GENERAL_HOSPITAL,
        ownership=HealthOwnership.PUBLIC,
        commune_code="75002",
        address="Số 2 Đồng Khởi, phường Trấn Biên",
        latitude=10.9601,
        longitude=106.8513,
        beds=1400,
        license_number="123/SYT-GPHĐ",
        status=FacilityStatus.ACTIVE,
    ),
    "health.encounters": Encounter(
        encounter_id="75001-NT-2025-000873",
        facility_code="75001",
        patient_citizen_id="075062000111",
        patient_name="Lê Văn Hùng",
        patient_birth_date=date(1962, 5, 20),
        patient_sex=Sex.MALE,
        insurance_number="HT2757520001234",
        encounter_type=EncounterType.INPATIENT,
        department_code="K03",
        admitted_at="202508010830",
        discharged_at="202508061015",
        diagnosis_codes=["J18.9", "I10", "E11.9"],
        total_cost=12_450_000.0,
        insurance_covered_amount=9_960_000.0,
        outcome=EncounterOutcome.IMPROVED,
    ),
    "health.disease_cases": DiseaseCase(
        case_id="SXH-75-2025-01234",
        disease_code="A91",
        disease_name="Sốt xuất huyết Dengue",
        onset_date=date(2025, 7, 28),
        reported_at=_t(2025, 7, 30, 14, 5, 12),
        reporting_facility_code="75001",
        commune_code="75013",
        age_years=14,
        sex=Sex.FEMALE,
        patient_citizen_id=None,
        classification=CaseClassification.CONFIRMED,
        outcome=CaseOutcome.UNDER_TREATMENT,
    ),
    "documents.official_documents": OfficialDocument(
        document_id="VB-2025-018877",
        direction=Direction.INCOMING,
        number_symbol="1234/BYT-KCB",
        document_type="Công văn",
        issuing_unit_name="Bộ Y tế",
        issuing_unit_code=None,
        receiving_unit_code="DNA.SYT",
        subject="Về việc tăng cường phòng, chống dịch sốt xuất huyết",
        issued_date=date(2025, 7, 25),
        received_at=_t(2025, 7, 28, 8, 15, 0),
        urgency=Urgency.URGENT,
        confidentiality=Confidentiality.NORMAL,
        page_count=3,
    ),
    "documents.tasks": DocumentTask(
        task_id="XL-2025-044120",
        document_id="VB-2025-018877",
        assignee_unit_code="DNA.SYT",
        assignee_officer_id="CB-SYT-0142",
        role=TaskRole.LEAD,
        instruction="Giao phòng Nghiệp vụ Y chủ trì, tham mưu văn bản chỉ đạo trước ngày 05/8.",
        status=TaskStatus.IN_PROGRESS,
        assigned_at=_t(2025, 7, 28, 9, 0, 0),
        due_at=_t(2025, 8, 5, 17, 0, 0),
        done_at=None,
    ),
    "feedback.reports": FeedbackReport(
        report_id="PA-2025-0098812",
        category=ReportCategory.INFRASTRUCTURE,
        description="Đèn đường trên đường Phạm Văn Thuận không sáng từ tối qua, đoạn gần chợ.",
        commune_code="75001",
        latitude=10.9512,
        longitude=106.8234,
        reporter_phone="+84912345678",
        handling_unit_code="DNA.UBND.75001",
        status=ReportStatus.ASSIGNED,
        received_at=_t(2025, 8, 2, 21, 47, 3),
        response_deadline=_t(2025, 8, 7, 21, 47, 3),
        responded_at=None,
    ),
    "environment.station_readings": StationReading(
        station_id="DNA-KK-01",
        station_type=StationType.AIR,
        reading_time="20250802090000",
        latitude=10.9448,
        longitude=106.8243,
        aqi=62,
        pm25=21.4,
        pm10=38.9,
        co=812.0,
        no2=27.3,
        so2=9.8,
        o3=41.2,
        ph=None,
        do=None,
        cod=None,
        bod5=None,
        tss=None,
    ),
    "transport.vehicle_registrations": VehicleRegistration(
        plate="60A-123.45",
        vehicle_type=VehicleType.CAR,
        brand="VinFast",
        model="VF 8",
        owner_kind=OwnerKind.INDIVIDUAL,
        owner_citizen_id="075090007788",
        owner_name="Phạm Thị Ngọc Ánh",
        registration_date=date(2023, 4, 12),
        inspection_expiry_date=date(2026, 4, 11),
        inspection_station_code="6001D",
        status=RegistrationStatus.ACTIVE,
    ),
    "transport.bus_positions": BusPosition(
        vehicle_plate="60B-012.34",
        route_id="05",
        trip_id="05-20250802-0730",
        latitude=10.9487,
        longitude=106.8342,
        speed_kmh=32.5,
        heading=87.0,
        position_time=_t(2025, 8, 2, 7, 42, 18),
    ),
    "land.parcels": Parcel(
        parcel_id="75001-034-0125",
        commune_code="75001",
        map_sheet="34",
        parcel_number="125a",
        area_m2=96.4,
        land_use_purpose_code="ODT",
        address="Khu phố 3, phường Biên Hòa",
        owner_name="Võ Minh Tuấn",
        certificate_number="DĐ 123456",
        valid_from=date(2019, 11, 5),
        use_term_until=None,
    ),
    "land.construction_permits": ConstructionPermit(
        permit_id="GPXD-2025-00871",
        permit_number="871/GPXD",
        issuing_unit_code="DNA.UBND.75001",
        applicant_name="Đỗ Thị Hoà",
        commune_code="75001",
        address="Thửa 125a, tờ bản đồ 34, khu phố 3, phường Biên Hòa",
        parcel_id="75001-034-0125",
        permit_type=PermitType.NEW_CONSTRUCTION,
        issued_date=date(2025, 7, 15),
        floors=3,
        gross_floor_area_m2=245.8,
        status=PermitStatus.ISSUED,
    ),
}


def test_every_dataset_has_a_sample() -> None:
    assert set(SAMPLES) == set(_ids(ENTRIES))


def _nfc_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_nfc_strings(k), *_nfc_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _nfc_strings(v)]
    return []


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids(ENTRIES))
def test_round_trip(entry: dict[str, Any]) -> None:
    model = _model(entry)
    original = SAMPLES[entry["id"]]
    assert type(original) is model
    record = original.model_dump(mode="python")
    for text in _nfc_strings(record):
        assert unicodedata.is_normalized("NFC", text)
    ts = datetime(2025, 8, 2, 1, 0, tzinfo=UTC)
    event = {
        "event_id": str(uuid.UUID(int=7)),
        "op": "c",
        "ts_ms": ts,
        "source": {
            "system": entry["source_system"],
            "unit": entry["owner_unit"],
            "dataset": entry["id"],
            "ts_ms": ts,
            "version": 1,
        },
        "before": None,
        "after": record,
    }
    schema = fastavro.parse_schema(_document(AVRO_ROOT / entry["schema"]))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, event)
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, schema, schema)
    assert isinstance(decoded, dict)
    assert decoded["before"] is None
    assert model.model_validate(decoded["after"]) == original
