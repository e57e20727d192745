"""What each dataset's std (or raw-shaped) event contributes to the alert rule groups."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from producers.simulators import SimSpec, generate_dataset
from schemas.domain.timeparse import to_ms
from stream_processors.alerts.engine import RULE_GROUPS
from stream_processors.alerts.facts import contributions
from stream_processors.alerts.rules.deltas import contribution_deltas, group_deltas
from stream_processors.alerts.rules.window import HOUR_MS, local_day

DUE = datetime(2025, 8, 4, 10, 0, tzinfo=UTC)  # 17:00 local
DUE_MS = int(DUE.timestamp() * 1000)
END = datetime(2025, 8, 20, tzinfo=UTC)


def event(after: dict[str, Any] | None, op: str = "u") -> dict[str, Any]:
    return {"op": op, "before": None, "after": after, "source": {"version": 2}}


def dossier(status: str, completed: object = None, due: object = DUE) -> dict[str, Any]:
    return {
        "dossier_id": "HS-1",
        "receiving_unit_code": "DNA.STP",
        "applicant_citizen_id": "075190000001",
        "applicant_name": "Nguyễn Văn A",
        "status": status,
        "due_at": due,
        "completed_at": completed,
    }


# --- time forms ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        DUE,
        DUE_MS,
        "2025-08-04T17:00:00+07:00",
        "2025-08-04T10:00:00Z",
        "2025-08-04T17:00:00",  # naive: local
        "04/08/2025 17:00",
        "20250804170000",
        "202508041700",
        datetime(2025, 8, 4, 17, 0),  # naive datetime: local
    ],
)
def test_times_in_every_form_read_the_same(value: object) -> None:
    assert to_ms(value) == DUE_MS


@pytest.mark.parametrize("value", [None, "soon", True, "20251399000000", [1]])
def test_unreadable_times_are_none(value: object) -> None:
    assert to_ms(value) is None


# --- dossiers ----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["RECEIVED", "IN_PROGRESS", "SUPPLEMENT_REQUESTED"])
def test_open_dossier_counts_at_its_deadline_hour(status: str) -> None:
    assert contributions("publicservice.dossiers", event(dossier(status))) == [
        ("dossier_unit", "DNA.STP", {"k": "open", "due_h": DUE_MS // HOUR_MS})
    ]


def test_completed_on_time_and_late_count_on_their_local_completion_day() -> None:
    on_time = DUE - timedelta(hours=1)
    late = DUE + timedelta(hours=8)  # 01:00 local on the next day
    (c1,) = contributions("publicservice.dossiers", event(dossier("COMPLETED", on_time)))
    (c2,) = contributions("publicservice.dossiers", event(dossier("COMPLETED", late)))
    assert c1[2] == {"k": "on_time", "day": local_day(DUE_MS)}
    assert c2[2] == {"k": "late", "day": local_day(DUE_MS) + 1}


def test_raw_text_times_give_the_same_contribution() -> None:
    std = contributions("publicservice.dossiers", event(dossier("COMPLETED", DUE)))
    raw = dossier("COMPLETED", "04/08/2025 17:00:00", "2025-08-04T17:00:00+07:00")
    assert contributions("publicservice.dossiers", event(raw)) == std


@pytest.mark.parametrize("status", ["RETURNED", "CANCELLED"])
def test_returned_and_cancelled_count_nowhere(status: str) -> None:
    assert contributions("publicservice.dossiers", event(dossier(status, DUE))) == []


def test_deletes_unknown_datasets_and_broken_images_contribute_nothing() -> None:
    assert contributions("publicservice.dossiers", event(dossier("RECEIVED"), op="d")) == []
    assert contributions("publicservice.dossiers", event(None)) == []
    assert contributions("education.schools", event(dossier("RECEIVED"))) == []
    assert contributions("publicservice.dossiers", event(dossier("RECEIVED", due="?"))) == []
    assert contributions("publicservice.dossiers", event({"status": 3})) == []


# --- feedback, readings, cases ------------------------------------------------------


def report(**kw: Any) -> dict[str, Any]:
    base = {
        "report_id": "PA-1",
        "commune_code": "75001",
        "reporter_phone": "+84901234567",
        "handling_unit_code": "DNA.SXD",
        "status": "IN_PROGRESS",
        "response_deadline": DUE,
        "responded_at": None,
    }
    return {**base, **kw}


def test_open_report_counts_for_its_unit_and_its_commune() -> None:
    payload = {"k": "open", "due_h": DUE_MS // HOUR_MS}
    assert contributions("feedback.reports", event(report())) == [
        ("feedback_unit", "DNA.SXD", payload),
        ("feedback_commune", "75001", payload),
    ]


def test_unassigned_report_counts_under_unassigned() -> None:
    found = contributions("feedback.reports", event(report(handling_unit_code=None)))
    assert found[0][:2] == ("feedback_unit", "UNASSIGNED")


def test_answered_report_counts_on_time_or_late() -> None:
    late = report(status="CLOSED", responded_at=DUE + timedelta(days=1))
    assert contributions("feedback.reports", event(late))[0][2] == {
        "k": "late",
        "day": local_day(DUE_MS) + 1,
    }


def test_rejected_or_deadline_less_reports_count_nowhere() -> None:
    assert contributions("feedback.reports", event(report(status="REJECTED"))) == []
    assert contributions("feedback.reports", event(report(response_deadline=None))) == []


def test_air_reading_with_aqi_contributes_its_time_and_aqi() -> None:
    reading = {
        "station_id": "KK-BH-01",
        "station_type": "AIR",
        "reading_time": "20250804170000",
        "aqi": 163,
    }
    assert contributions("environment.station_readings", event(reading)) == [
        ("aqi_station", "KK-BH-01", {"t": DUE_MS, "aqi": 163})
    ]
    water = {**reading, "station_type": "WATER", "aqi": None}
    assert contributions("environment.station_readings", event(water)) == []
    assert contributions("environment.station_readings", event({**reading, "aqi": None})) == []


def test_disease_case_counts_on_its_local_report_day() -> None:
    case = {
        "case_id": "CB-1",
        "disease_code": "A90",
        "commune_code": "75001",
        "patient_citizen_id": "075190000001",
        "reported_at": datetime(2025, 8, 3, 18, 0, tzinfo=UTC),  # 01:00 local on the 4th
    }
    assert contributions("health.disease_cases", event(case)) == [
        ("disease_commune", "75001", {"day": local_day(DUE_MS), "d": "A90"})
    ]


# --- simulator output ---------------------------------------------------------------

DATASETS = [
    "feedback.reports",
    "environment.station_readings",
    "health.disease_cases",
]


@pytest.mark.parametrize("dataset", DATASETS)
def test_simulated_events_contribute_without_personal_data(dataset: str) -> None:
    records = generate_dataset(dataset, SimSpec(days=3, per_day=40, seed=3, end=END))
    found = 0
    for rec in records:
        image = rec.record.model_dump()
        for group, key, payload in contributions(dataset, event(image, op=rec.op.value)):
            found += 1
            assert group in RULE_GROUPS
            text = json.dumps([key, payload])
            for field in ("reporter_phone", "patient_citizen_id"):
                secret = image.get(field)
                assert not secret or secret not in text
            assert len(text) < 120  # small payloads
    assert found > 0


def test_a_lifecycle_moves_one_count_between_buckets() -> None:
    # received → in progress (same bucket: no delta) → completed (open -1, late +1)
    prev: list[Any] = []
    sent = []
    for status, done in [("RECEIVED", None), ("IN_PROGRESS", None), ("COMPLETED", DUE)]:
        new = contributions("publicservice.dossiers", event(dossier(status, done)))
        sent.append(contribution_deltas(prev, new, DUE_MS))
        prev = new
    assert [len(d) for d in sent] == [1, 0, 2]
    grouped = group_deltas(sent[0] + sent[2])
    assert [d["sign"] for d in grouped[("dossier_unit", "DNA.STP")]] == [1, -1, 1]
