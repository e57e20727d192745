"""Field rules of the generic standardizer, one behaviour at a time."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from schemas.domain.citizen_id import make_citizen_id
from schemas.domain.reference import load_reference
from stream_processors.standardizers import (
    QUALITY_FLAGS,
    REASONS,
    STANDARDIZERS,
    Rejected,
    Standardized,
)
from stream_processors.standardizers.health import normalize_icd10

REF = load_reference()
AT = datetime(2025, 10, 14, 3, 0, tzinfo=UTC)  # 10:00 in Đồng Nai


def event(dataset_id: str, after: dict[str, Any], at: datetime = AT) -> dict[str, Any]:
    return {
        "event_id": "5B0F4A52-8D2C-4C55-9A4E-3F1F3A1D2C01",
        "op": "c",
        "ts_ms": at,
        "source": {"system": "s", "unit": "u", "dataset": dataset_id, "ts_ms": at, "version": 1},
        "before": None,
        "after": after,
    }


def school(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "school_id": "75000401",
        "school_name": "Trường THPT chuyên Lương Thế Vinh",
        "school_level": "UPPER_SECONDARY",
        "ownership": "PUBLIC",
        "commune_code": "75001",
        "address": None,
        "phone": "(0251) 3823 730",
        "email": "C75@DongNai.edu.vn",
        "latitude": 10.95,
        "longitude": 106.84,
        "established_year": 1991,
        "status": "ACTIVE",
    }
    base.update(changes)
    return base


def encounter(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "encounter_id": "75001-20251014-000001",
        "facility_code": "75001",
        "patient_citizen_id": make_citizen_id("075", 1990, "FEMALE", 42),
        "patient_name": "NGUYỄN THỊ HÒA",
        "patient_birth_date": date(1990, 6, 15),
        "patient_sex": "FEMALE",
        "insurance_number": "dn 4 75 0123456789",
        "encounter_type": "OUTPATIENT",
        "department_code": "k01",
        "admitted_at": "202510140830",
        "discharged_at": "202510140930",
        "diagnosis_codes": ["j069", "I10"],
        "total_cost": 350000.0,
        "insurance_covered_amount": 280000.0,
        "outcome": "CURED",
    }
    base.update(changes)
    return base


def ok(dataset_id: str, after: dict[str, Any]) -> Standardized:
    result = STANDARDIZERS[dataset_id](event(dataset_id, after), REF, None)
    assert isinstance(result, Standardized), result
    assert set(result.flags) <= QUALITY_FLAGS
    return result


def rejected(dataset_id: str, after: dict[str, Any]) -> Rejected:
    result = STANDARDIZERS[dataset_id](event(dataset_id, after), REF, None)
    assert isinstance(result, Rejected), result
    assert result.reason in REASONS
    return result


def test_school_phone_email_and_commune() -> None:
    result = ok("education.schools", school())
    after = result.event["after"]
    assert after["phone"] == "+842513823730"
    assert after["email"] == "c75@dongnai.edu.vn"
    assert after["commune_code"] == after["commune_code_source"] == "75001"
    assert result.event["event_id"] == "5b0f4a52-8d2c-4c55-9a4e-3f1f3a1d2c01"
    assert "phone_normalized" in result.flags


def test_old_commune_code_is_remapped_keeping_the_source() -> None:
    entry = next(e for e in REF.crosswalk.values() if e.old_code != e.new_code)
    after = ok("education.schools", school(commune_code=entry.old_code)).event["after"]
    assert after["commune_code_source"] == entry.old_code
    assert after["commune_code"] != entry.old_code


def test_unknown_commune_and_bad_phone() -> None:
    assert rejected("education.schools", school(commune_code="99999")).reason == (
        "unknown_admin_unit"
    )
    result = ok("education.schools", school(phone="12"))
    assert result.event["after"]["phone"] is None
    assert "phone_invalid_removed" in result.flags


def test_encounter_compact_times_names_codes_and_insurance() -> None:
    result = ok("health.encounters", encounter())
    after = result.event["after"]
    assert after["admitted_at"] == datetime(2025, 10, 14, 1, 30, tzinfo=UTC)
    assert after["patient_name"] == "Nguyễn Thị Hòa"
    assert after["insurance_number"] == "DN4750123456789"
    assert (after["insurance_number_group"], after["insurance_number_benefit_level"]) == ("DN", 4)
    assert after["diagnosis_codes"] == ["J06.9", "I10"]
    assert after["department_code"] == "K01"
    for flag in ("compact_local_time", "name_case_normalized", "insurance_number_normalized"):
        assert flag in result.flags


def test_encounter_defects() -> None:
    cases = {
        "discharged_before_admitted": encounter(discharged_at="202510140700"),
        "covered_exceeds_cost": encounter(insurance_covered_amount=400000.0),
        "invalid_insurance_number": encounter(insurance_number="ZZ4750123456789"),
        "invalid_disease_code": encounter(diagnosis_codes=["dengue"]),
        "citizen_id_mismatch": encounter(patient_sex="MALE"),
        "far_future_timestamp": encounter(admitted_at="203510140830"),
    }
    for reason, record in cases.items():
        result = rejected("health.encounters", record)
        assert result.reason == reason
        assert record["patient_citizen_id"] not in result.message_en + result.message_vi
        assert "Hòa" not in result.message_en + result.message_vi


def test_icd10_normalization() -> None:
    assert normalize_icd10("j069") == "J06.9"
    assert normalize_icd10(" B08.4 ") == "B08.4"
    assert normalize_icd10("A90") == "A90"
    assert normalize_icd10("9A0") is None


def test_confidential_document_is_refused_before_anything_is_read() -> None:
    record = {"confidentiality": "SECRET", "subject": None}
    result = rejected("documents.official_documents", record)
    assert result.reason == "confidential_document"


def test_document_type_name_is_mapped_to_its_code() -> None:
    record = {
        "document_id": "VB-1",
        "direction": "INCOMING",
        "number_symbol": "12/QĐ-UBND",
        "document_type": "quyết  định",
        "issuing_unit_name": "Ủy ban nhân dân tỉnh Đồng Nai",
        "issuing_unit_code": "DNA.VPUB",
        "receiving_unit_code": "DNA.SNV",
        "subject": "V/v kiểm tra",
        "issued_date": date(2025, 10, 13),
        "received_at": AT,
        "urgency": "NORMAL",
        "confidentiality": "NORMAL",
        "page_count": 2,
    }
    after = ok("documents.official_documents", record).event["after"]
    assert after["document_type_code"] == "QĐ"
    assert after["document_type"] == "quyết định"


def test_position_outside_the_province() -> None:
    fix = {
        "vehicle_plate": "60B-123.45",
        "route_id": "dn01",
        "trip_id": None,
        "latitude": 10.96,
        "longitude": 106.85,
        "speed_kmh": 30.0,
        "heading": 90.0,
        "position_time": AT,
    }
    assert ok("transport.bus_positions", fix).event["after"]["route_id"] == "DN01"
    zero = rejected("transport.bus_positions", {**fix, "latitude": 0.0, "longitude": 0.0})
    assert zero.reason == "position_out_of_area"
    fast = rejected("transport.bus_positions", {**fix, "speed_kmh": 900.0})
    assert fast.reason == "impossible_measurement"


def test_station_reading_compact_and_iso_times() -> None:
    reading: dict[str, Any] = {
        "station_id": "KK-BH-01",
        "station_type": "WATER",
        "reading_time": "20251014093000",
        "latitude": 10.95,
        "longitude": 106.84,
        **dict.fromkeys(("aqi", "pm25", "pm10", "co", "no2", "so2", "o3")),
        "ph": 7.1,
        "do": 6.2,
        "cod": 10.0,
        "bod5": 4.0,
        "tss": 20.0,
    }
    after = ok("environment.station_readings", reading).event["after"]
    assert after["reading_time"] == datetime(2025, 10, 14, 2, 30, tzinfo=UTC)
    iso = ok("environment.station_readings", {**reading, "reading_time": "2025-10-14T09:30:00"})
    assert iso.event["after"]["reading_time"] == after["reading_time"]
    assert rejected("environment.station_readings", {**reading, "ph": 15.0}).reason == (
        "impossible_measurement"
    )


def test_class_stats_counts() -> None:
    stat = {
        "school_id": "75000401",
        "school_year": "2025 / 2026",
        "grade": 10,
        "class_count": 12,
        "student_count": 480,
        "female_student_count": 250,
        "ethnic_minority_student_count": 10,
        "disabled_student_count": 2,
        "repeating_student_count": None,
        "reported_date": date(2025, 10, 1),
    }
    assert ok("education.class_stats", stat).event["after"]["school_year"] == "2025-2026"
    assert rejected("education.class_stats", {**stat, "female_student_count": 481}).reason == (
        "female_exceeds_students"
    )
    assert rejected("education.class_stats", {**stat, "disabled_student_count": 500}).reason == (
        "subcount_exceeds_students"
    )
    assert rejected("education.class_stats", {**stat, "school_year": "2025-2027"}).reason == (
        "invalid_field"
    )


def test_every_reason_is_bilingual() -> None:
    for english, vietnamese in REASONS.values():
        assert english and vietnamese and english != vietnamese
