"""``databus tail``'s records: the dataset found from the topic, personal fields masked."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from databus.tail import (
    decode_json_value,
    looks_personal,
    masking_for,
    render_line,
    tail_record,
)
from schemas.catalog import DATASETS, STAGES

CITIZEN_ID = "075190000042"
NAME = "Nguyễn Thị Hòa"
CATALOG_NAMES = {f for ds in DATASETS.values() for f in ds.personal_fields}


def dossier_event() -> dict[str, object]:
    return {
        "event_id": "e-1",
        "op": "c",
        "ts_ms": datetime(2025, 7, 1, 1, 30, tzinfo=UTC),
        "source": {"unit": "DNA.STP", "version": 1},
        "before": None,
        "after": {
            "dossier_id": "HS-1",
            "procedure_name": "Đăng ký khai sinh",
            "applicant_citizen_id": CITIZEN_ID,
            "applicant_name": NAME,
            "applicant_sex": "FEMALE",
            "status": "RECEIVED",
        },
    }


@pytest.mark.parametrize("stage", STAGES)
def test_every_catalog_topic_names_its_dataset(stage: str) -> None:
    for ds in DATASETS.values():
        found = masking_for(ds.topic(stage), DATASETS.values())
        assert (found.dataset, found.stage) == (ds, stage)


def test_other_topics_have_no_dataset_and_a_hidden_key() -> None:
    for topic in ("alerts.v1", "sink.ioc.dlq.v1", "agency.x.shared.v1", "publicservice.dossiers"):
        found = masking_for(topic, DATASETS.values())
        assert found.dataset is None and found.key_is_personal


def test_a_catalog_record_is_masked_with_its_personal_fields() -> None:
    masking = masking_for(DATASETS["publicservice.dossiers"].std_topic, DATASETS.values())
    rec = tail_record(
        masking,
        partition=1,
        offset=7,
        timestamp_ms=1_751_333_400_000,
        key=b"HS-1",
        headers=[("ce_id", b"e-1"), ("traceparent", b"00-x"), ("databus.backfill", b"1")],
        decoded=dossier_event(),
        raw_value=b"\x00....",
        catalog_names=CATALOG_NAMES,
    )
    line = render_line(rec)
    assert CITIZEN_ID not in line and NAME not in line
    doc = json.loads(line)
    after = doc["value"]["after"]
    assert after["applicant_name"] == "***"
    assert after["applicant_citizen_id"] == "***42 (12 chars)"
    assert after["procedure_name"] == "Đăng ký khai sinh"  # not personal: shown as is
    assert doc["key"] == "HS-1"  # the dossier id is no personal field
    assert doc["headers"] == {"ce_id": "e-1", "databus.backfill": "1"}
    assert doc["value"]["ts_ms"] == "2025-07-01T01:30:00+00:00"
    assert (doc["partition"], doc["offset"]) == (1, 7)
    assert doc["timestamp"].startswith("2025-07-01T01:30:00")


def test_a_personal_key_is_masked() -> None:
    # No catalog dataset is keyed by personal data today; one that is must not leak it.
    base = DATASETS["health.encounters"]
    ds = replace(base, key_fields=("patient_citizen_id",))
    masking = masking_for(ds.raw_topic, [ds])
    rec = tail_record(
        masking,
        partition=0,
        offset=0,
        timestamp_ms=None,
        key=CITIZEN_ID.encode(),
        headers=[],
        decoded={},
        raw_value=b"",
    )
    assert rec.key == "***"


def test_other_topics_mask_every_field_named_like_personal_data() -> None:
    masking = masking_for("sink.ioc.dlq.v1", DATASETS.values())
    decoded = {
        "after": {"owner_citizen_id": CITIZEN_ID, "full_name": NAME, "plate": "43A-12345"},
        "items": [{"reporter_phone": "0905123456", "unit_name": "Sở Tư pháp"}],
        "patient_birth_date": "01/01/1990",
        "count": 3,
    }
    rec = tail_record(
        masking,
        partition=0,
        offset=0,
        timestamp_ms=None,
        key=b"43A-12345",
        headers=[],
        decoded=decoded,
        raw_value=b"{}",
        catalog_names=CATALOG_NAMES,
    )
    line = render_line(rec)
    for secret in (CITIZEN_ID, NAME, "0905123456", "01/01/1990", "Sở Tư pháp"):
        assert secret not in line
    assert rec.key == "***"  # an unknown topic's key may be a citizen id
    assert rec.value["after"]["plate"] == "43A-12345"  # not named like personal data
    assert rec.value["count"] == 3


@pytest.mark.parametrize(
    ("name", "personal"),
    [
        ("citizen_id", True),
        ("student_citizen_id", True),
        ("full_name", True),
        ("name", True),
        ("insurance_number", True),
        ("sex", True),
        ("patient_sex", True),
        ("email", True),
        ("home_address", True),
        ("plate", False),
        ("status", False),
        ("unit_code", False),
        ("sextant", False),
    ],
)
def test_looks_personal(name: str, personal: bool) -> None:
    assert looks_personal(name, CATALOG_NAMES) is personal


def test_an_undecodable_value_shows_a_framing_hint_only() -> None:
    masking = masking_for("publicservice.dossiers.dlq.v1", DATASETS.values())
    raw = json.dumps({"applicant_name": NAME}).encode()
    rec = tail_record(
        masking,
        partition=0,
        offset=3,
        timestamp_ms=None,
        key=None,
        headers=[("databus.errors.reason", b"bad_magic_byte")],
        decoded=None,
        raw_value=raw,
    )
    line = render_line(rec)
    assert NAME not in line
    doc = json.loads(line)
    assert doc["value"] is None and "looks like JSON" in doc["note"]
    assert doc["headers"] == {"databus.errors.reason": "bad_magic_byte"}
    assert doc["key"] is None


def test_json_values_decode_and_other_bytes_do_not() -> None:
    assert decode_json_value(b'{"a": 1}') == {"a": 1}
    assert decode_json_value(b"[1]") == [1]
    assert decode_json_value(b"\x00\x00\x00\x00\x01") is None
    assert decode_json_value(b"{broken") is None
    assert decode_json_value(None) is None
