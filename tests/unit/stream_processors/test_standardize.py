"""The dossier standardizer: raw event dict -> std event dict, or a Rejected record."""

from __future__ import annotations

import io
import json
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import fastavro
import pytest

from schemas.domain.citizen_id import make_citizen_id
from schemas.domain.reference import CrosswalkEntry, ReferenceData, load_reference
from stream_processors.standardizers import (
    QUALITY_FLAGS,
    REASONS,
    STANDARDIZERS,
    Rejected,
    Standardized,
)

AVRO_DIR = Path(__file__).resolve().parents[3] / "schemas" / "avro" / "publicservice"
RAW_SCHEMA = fastavro.parse_schema(json.loads((AVRO_DIR / "dossiers.raw.v1.avsc").read_text()))
STD_SCHEMA = fastavro.parse_schema(json.loads((AVRO_DIR / "dossiers.std.v1.avsc").read_text()))

REF = load_reference()
EMITTED = datetime(2025, 8, 4, 2, 0, 0, 123_000, tzinfo=UTC)  # 09:00 in Đồng Nai
CITIZEN_ID = make_citizen_id("075", 1990, "FEMALE", 4242)


def standardize_dossier_event(
    raw: Any, ref: ReferenceData, *, now: datetime | None = None
) -> Standardized | Rejected:
    return STANDARDIZERS["publicservice.dossiers"](raw, ref, now)


def dossier(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dossier_id": "HS-0001",
        "dossier_code": "000.00.12.H19-250804-0001",
        "procedure_code": "1.001234",
        "procedure_name": "Cấp phiếu lý lịch tư pháp",
        "receiving_unit_code": "DNA.STP",
        "admin_unit_code": "75001",
        "applicant_citizen_id": CITIZEN_ID,
        "applicant_name": "Nguyễn Thị Hòa",
        "applicant_birth_date": "15/06/1990",
        "applicant_sex": "FEMALE",
        "status": "RECEIVED",
        "channel": "ONLINE",
        "received_at": "04/08/2025 08:30",
        "due_at": "2025-08-14",
        "completed_at": None,
    }
    base.update(changes)
    return base


def event(op: str = "c", **images: Any) -> dict[str, Any]:
    if not images:
        images = {"before": None, "after": dossier()}
    return {
        "event_id": "5b0f4a52-8d2c-4c55-9a4e-3f1f3a1d2c01",
        "op": op,
        "ts_ms": EMITTED,
        "source": {
            "system": "dvc-portal",
            "unit": "DNA.TTPVHCC",
            "dataset": "publicservice.dossiers",
            "ts_ms": EMITTED,
            "version": 3,
        },
        "before": images.get("before"),
        "after": images.get("after"),
    }


def ok(raw: dict[str, Any], ref: ReferenceData = REF, **kwargs: Any) -> Standardized:
    result = standardize_dossier_event(raw, ref, **kwargs)
    assert isinstance(result, Standardized), result
    return result


def rejected(raw: Any, **kwargs: Any) -> Rejected:
    result = standardize_dossier_event(raw, REF, **kwargs)
    assert isinstance(result, Rejected), result
    assert result.reason in REASONS
    assert CITIZEN_ID not in result.message_en + result.message_vi
    return result


def avro_roundtrip(schema: Any, record: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, schema)


def std_roundtrip(std: dict[str, Any]) -> dict[str, Any]:
    """Encode with the std schema and decode again; uuid comes back as uuid.UUID."""
    decoded: dict[str, Any] = avro_roundtrip(STD_SCHEMA, std)
    return {**decoded, "event_id": str(decoded["event_id"])}


# --- full event round trip -----------------------------------------------------------------


def test_round_trip_raw_avro_to_std_avro() -> None:
    raw = avro_roundtrip(RAW_SCHEMA, event())  # decoded exactly as the agent sees it
    result = ok(raw)
    after = result.event["after"]
    assert after == {
        "dossier_id": "HS-0001",
        "dossier_code": "000.00.12.H19-250804-0001",
        "procedure_code": "1.001234",
        "procedure_name": "Cấp phiếu lý lịch tư pháp",
        "receiving_unit_code": "DNA.STP",
        "admin_unit_code": "75001",
        "admin_unit_code_source": "75001",
        "applicant_citizen_id": CITIZEN_ID,
        "applicant_name": "Nguyễn Thị Hòa",
        "applicant_birth_date": date(1990, 6, 15),
        "applicant_sex": "FEMALE",
        "status": "RECEIVED",
        "channel": "ONLINE",
        "received_at": datetime(2025, 8, 4, 1, 30, tzinfo=UTC),
        "due_at": datetime(2025, 8, 14, 16, 59, 59, 999_000, tzinfo=UTC),
        "completed_at": None,
        "quality_flags": [
            "naive_time_assumed_local",
            "date_only_end_of_day",
        ],
    }
    assert result.event["before"] is None
    assert result.event["source"] == raw["source"]
    assert isinstance(raw["event_id"], UUID)  # how fastavro decodes the uuid logical type
    assert (result.event["event_id"], result.event["op"]) == (str(raw["event_id"]), "c")
    assert std_roundtrip(result.event) == result.event


def test_update_standardizes_both_images_and_encodes() -> None:
    before = dossier(
        admin_unit_code="25993",  # pre-reform code on a pre-reform dossier
        received_at="2025-06-20T09:00:00+07:00",
        due_at="2025-07-10T17:00:00+07:00",
        status="IN_PROGRESS",
        procedure_name=unicodedata.normalize("NFD", "Đăng ký khai sinh"),
    )
    after = dict(before, status="COMPLETED", completed_at="1752130800000")
    result = ok(event("u", before=before, after=after))
    for image in (result.event["before"], result.event["after"]):
        assert image["admin_unit_code"] == "75001"
        assert image["admin_unit_code_source"] == "25993"
        assert image["procedure_name"] == "Đăng ký khai sinh"
        assert "admin_unit_remapped" in image["quality_flags"]
        assert "text_normalized" in image["quality_flags"]
    assert result.event["after"]["completed_at"] == datetime(2025, 7, 10, 7, 0, tzinfo=UTC)
    assert "epoch_millis" in result.event["after"]["quality_flags"]
    assert "epoch_millis" in result.flags and "admin_unit_remapped" in result.flags
    assert std_roundtrip(result.event) == result.event


def test_delete_has_only_before() -> None:
    result = ok(event("d", before=dossier()))
    assert result.event["after"] is None
    assert result.event["before"]["dossier_id"] == "HS-0001"
    assert std_roundtrip(result.event) == result.event


def test_timestamps_are_truncated_to_milliseconds() -> None:
    result = ok(event(after=dossier(received_at="2025-08-04T08:30:00.123456+07:00")))
    assert result.event["after"]["received_at"].microsecond == 123_000


# --- text ---------------------------------------------------------------------------------------


def test_text_is_normalized_and_flagged() -> None:
    raw_name = unicodedata.normalize("NFD", " \u00d0ỗ  Thị\u00a0Thuỷ\u200b ")
    result = ok(event(after=dossier(applicant_name=raw_name)))
    assert result.event["after"]["applicant_name"] == "Đỗ Thị Thủy"
    assert "text_normalized" in result.event["after"]["quality_flags"]


def test_empty_required_text_is_rejected() -> None:
    result = rejected(event(after=dossier(applicant_name=" \u00a0 ")))
    assert (result.reason, result.field) == ("missing_field", "after.applicant_name")


# --- times --------------------------------------------------------------------------------------


def test_naive_received_at_is_local_time() -> None:
    result = ok(event(after=dossier(received_at="2025-08-04T08:30:00")))
    assert result.event["after"]["received_at"] == datetime(2025, 8, 4, 1, 30, tzinfo=UTC)
    assert "naive_time_assumed_local" in result.event["after"]["quality_flags"]


def test_impossible_received_at_is_rejected() -> None:
    result = rejected(event(after=dossier(received_at="31/02/2025 08:30")))
    assert (result.reason, result.field) == ("invalid_timestamp", "after.received_at")


def test_far_future_received_at_is_rejected() -> None:
    result = rejected(event(after=dossier(received_at="08/08/2025 08:30")))
    assert (result.reason, result.field) == ("far_future_timestamp", "after.received_at")


def test_far_future_is_judged_against_now_when_given() -> None:
    raw = event(after=dossier(received_at="08/08/2025 08:30"))
    assert ok(raw, now=datetime(2025, 8, 8, 0, 0, tzinfo=UTC))


def test_deadline_may_lie_far_ahead() -> None:
    result = ok(event(after=dossier(due_at="30/12/2025 17:00")))
    assert result.event["after"]["due_at"] == datetime(2025, 12, 30, 10, 0, tzinfo=UTC)


def test_far_future_completed_at_is_rejected() -> None:
    result = rejected(event(after=dossier(status="COMPLETED", completed_at="2026-01-01")))
    assert (result.reason, result.field) == ("far_future_timestamp", "after.completed_at")


def test_blank_completed_at_is_null() -> None:
    result = ok(event(after=dossier(completed_at="  ")))
    assert result.event["after"]["completed_at"] is None
    assert "blank_as_null" in result.event["after"]["quality_flags"]


def test_suspicious_times_are_flagged_not_rejected() -> None:
    result = ok(
        event(
            after=dossier(
                due_at="2025-08-01T17:00:00+07:00",
                status="COMPLETED",
                completed_at="2025-08-03T10:00:00+07:00",
            )
        )
    )
    flags = result.event["after"]["quality_flags"]
    assert "due_before_received" in flags
    assert "completed_before_received" in flags
    assert "completed_at_missing" in ok(event(after=dossier(status="COMPLETED"))).flags


@pytest.mark.parametrize("value", ["31/02/1990", "1990/06/15", "15/06/1899"])
def test_bad_birth_date_is_rejected(value: str) -> None:
    result = rejected(event(after=dossier(applicant_birth_date=value)))
    assert (result.reason, result.field) == ("invalid_date", "after.applicant_birth_date")
    assert value not in result.message_en


def test_birth_date_after_received_is_rejected() -> None:
    result = rejected(
        event(
            after=dossier(
                applicant_citizen_id=make_citizen_id("075", 2025, "FEMALE", 1),
                applicant_birth_date="05/08/2025",
            )
        )
    )
    assert result.reason == "invalid_date"


def test_missing_birth_date_and_sex_are_allowed() -> None:
    result = ok(event(after=dossier(applicant_birth_date=None, applicant_sex=None)))
    assert result.event["after"]["applicant_birth_date"] is None
    assert std_roundtrip(result.event) == result.event


# --- citizen ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["003190004242", "07519000424", "0751900042420", "07519000424X", "079 19O 004242"],
)
def test_invalid_citizen_id_is_rejected(value: str) -> None:
    result = rejected(event(after=dossier(applicant_citizen_id=value)))
    assert (result.reason, result.field) == ("invalid_citizen_id", "after.applicant_citizen_id")


@pytest.mark.parametrize(
    "changes",
    [
        {"applicant_sex": "MALE"},
        {"applicant_birth_date": "15/06/1991"},
        # same two year digits, wrong century digit
        {
            "applicant_citizen_id": make_citizen_id("075", 1905, "FEMALE", 1),
            "applicant_birth_date": "2005-06-15",
        },
    ],
)
def test_citizen_id_disagreeing_with_record_is_rejected(changes: dict[str, Any]) -> None:
    result = rejected(event(after=dossier(**changes)))
    assert (result.reason, result.field) == ("citizen_id_mismatch", "after.applicant_citizen_id")


def test_cmnd_is_flagged() -> None:
    result = ok(event(after=dossier(applicant_citizen_id="271234567")))
    assert result.event["after"]["applicant_citizen_id"] == "271234567"
    assert "legacy_cmnd_id" in result.event["after"]["quality_flags"]


# --- units ----------------------------------------------------------------------------------


def test_unknown_receiving_unit_is_rejected() -> None:
    result = rejected(event(after=dossier(receiving_unit_code="DNA.SKHDT")))
    assert (result.reason, result.field) == ("unknown_receiving_unit", "after.receiving_unit_code")
    assert "DNA.SKHDT" in result.message_en
    assert result.message_vi.startswith("Mã đơn vị tiếp nhận không có trong danh mục")


def test_old_commune_code_before_cut_over_is_remapped() -> None:
    result = ok(
        event(
            after=dossier(
                admin_unit_code="25441",
                received_at="2024-11-05T09:00:00+07:00",
                due_at="2024-11-15",
            )
        )
    )
    after = result.event["after"]
    assert (after["admin_unit_code"], after["admin_unit_code_source"]) == ("75026", "25441")
    assert "admin_unit_remapped" in after["quality_flags"]
    assert "admin_unit_code_outdated" not in after["quality_flags"]


def test_old_commune_code_after_cut_over_is_outdated() -> None:
    result = ok(event(after=dossier(admin_unit_code="25441")))
    after = result.event["after"]
    assert after["admin_unit_code"] == "75026"
    assert "admin_unit_code_outdated" in after["quality_flags"]


def test_cut_over_is_judged_by_received_at_not_arrival() -> None:
    # A 2024 dossier re-sent in August 2025 still carries its code legitimately.
    raw = event(
        after=dossier(admin_unit_code="25441", received_at="05/11/2024 09:00", due_at="15/11/2024")
    )
    assert "admin_unit_code_outdated" not in ok(raw).flags


@pytest.mark.parametrize("code", ["99999", "2544", "ABCDE"])
def test_unknown_commune_code_is_rejected(code: str) -> None:
    result = rejected(event(after=dossier(admin_unit_code=code)))
    assert (result.reason, result.field) == ("unknown_admin_unit", "after.admin_unit_code")


def test_commune_code_that_lost_leading_zeros_is_padded() -> None:
    ref = ReferenceData(
        cccd_province_codes=REF.cccd_province_codes,
        receiving_units=REF.receiving_units,
        crosswalk={"00004": CrosswalkEntry("00004", "00004", "Phường Ba Đình", None)},
    )
    result = ok(event(after=dossier(admin_unit_code="4")), ref)
    after = result.event["after"]
    assert (after["admin_unit_code"], after["admin_unit_code_source"]) == ("00004", "4")
    assert "admin_unit_code_zero_padded" in after["quality_flags"]


# --- envelope and payload ------------------------------------------------------------------------


def test_create_without_after_is_rejected() -> None:
    result = rejected(event("c", before=dossier()))
    assert (result.reason, result.field) == ("missing_payload", "after")


def test_delete_without_before_is_rejected() -> None:
    result = rejected(event("d", after=dossier()))
    assert (result.reason, result.field) == ("missing_payload", "before")


def test_bad_before_image_rejects_the_event() -> None:
    raw = event("u", before=dossier(receiving_unit_code="??"), after=dossier())
    assert rejected(raw).field == "before.receiving_unit_code"


@pytest.mark.parametrize(
    "raw",
    [
        {},
        None,
        "not an event",
        {**event(), "op": "x"},
        {**event(), "event_id": "not-a-uuid"},
        {**event(), "event_id": None},
        {**event(), "ts_ms": 1754272800000},
        {**event(), "ts_ms": datetime(2025, 8, 4)},
        {**event(), "source": None},
        {**event(), "source": {**event()["source"], "version": "3"}},
        {**event(), "after": "HS-0001"},
        {**event(), "after": {}},
        {**event(), "after": dossier(received_at=1754272800)},
        {**event(), "after": dossier(status="DONE")},
        {**event(), "after": dossier(channel=None)},
        {**event(), "after": dossier(applicant_sex="F")},
        {**event(), "after": dossier(applicant_citizen_id=79190004242)},
        {**event(), "after": dossier(applicant_birth_date=19900615)},
    ],
)
def test_garbage_is_rejected_never_raised(raw: Any) -> None:
    result = standardize_dossier_event(raw, REF)
    assert isinstance(result, Rejected)
    assert result.reason in REASONS


def test_event_id_gets_the_canonical_uuid_form() -> None:
    raw = {**event(), "event_id": "5B0F4A52-8D2C-4C55-9A4E-3F1F3A1D2C01"}
    assert ok(raw).event["event_id"] == "5b0f4a52-8d2c-4c55-9a4e-3f1f3a1d2c01"


def test_rejections_carry_both_languages() -> None:
    result = rejected(event(after=dossier(admin_unit_code="99999")))
    assert result.message_en.startswith("after.admin_unit_code: ")
    assert result.message_vi == (
        "Mã đơn vị hành chính cấp xã không có trong danh mục (trường after.admin_unit_code)"
    )


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_reason_has_vietnamese_text_in_nfc(reason: str) -> None:
    english, vietnamese = REASONS[reason]
    assert reason == reason.lower() and english
    assert unicodedata.is_normalized("NFC", vietnamese)
    assert not vietnamese.isascii()  # written with diacritics


def test_flags_are_from_the_closed_set() -> None:
    raws = [
        event(after=dossier(admin_unit_code="25441", applicant_citizen_id="271234567")),
        event(after=dossier(received_at="1754271000", completed_at=" ")),
        event(after=dossier(received_at="45873.35", applicant_name="Hoà")),
    ]
    for raw in raws:
        flags = set(ok(raw).flags)
        assert flags and flags <= QUALITY_FLAGS


def test_result_records_are_immutable() -> None:
    result = rejected(event(after=dossier(admin_unit_code="99999")))
    with pytest.raises(AttributeError):
        result.reason = "other"  # type: ignore[misc]
