"""The delivery ledger, pure: assigned, delivering, live by event time, late, quality."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas.catalog import DATASETS
from schemas.domain.delivery import ReconRow, build_ledger, latest_quality_rows

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 19:00 local: after the daily 17:00 deadline
HEALTH = [ds for ds in DATASETS.values() if ds.owner_unit == "DNA.SYT"]


def q(
    dataset: str,
    unit: str,
    *,
    last_event: datetime | None,
    received: int = 10,
    overall: float | None = 0.9,
    at: datetime = NOW,
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "unit_code": unit,
        "last_event_ts": last_event,
        "last_seen_ts": at if last_event is not None else None,
        "received": received if last_event is not None else 0,
        "overall": overall,
        "ts_ms": at,
    }


def test_every_owner_unit_gets_a_row_with_all_its_assigned_datasets() -> None:
    ledger = build_ledger(DATASETS.values(), [], NOW)
    assert {u.unit for u in ledger} == {ds.owner_unit for ds in DATASETS.values()}
    assert sum(u.assigned for u in ledger) == len(DATASETS)
    assert all(u.delivering == 0 and u.live == 0 and u.quality is None for u in ledger)


def test_silent_live_and_late_datasets_of_one_unit() -> None:
    encounters, cases, facilities = (
        DATASETS[f"health.{n}"] for n in ("encounters", "disease_cases", "facilities")
    )
    assert {encounters, cases, facilities} == set(HEALTH)
    rows = [
        # daily by 17:00: an event from this morning is live
        q(encounters.id, "DNA.BV1", last_event=NOW - timedelta(hours=5)),
        # realtime within 60 min: three hours old data arriving now is late
        q(cases.id, "DNA.BV1", last_event=NOW - timedelta(hours=3)),
    ]  # facilities: silent
    [unit] = build_ledger(HEALTH, rows, NOW, unit_names={"DNA.SYT": "Sở Y tế"})
    assert (unit.assigned, unit.delivering, unit.live, unit.late) == (3, 2, 1, 1)
    assert unit.summary() == "Sở Y tế: 2/3 delivering, 1 live"
    state = {d.dataset: (d.delivering, d.live, d.late) for d in unit.datasets}
    assert state == {
        encounters.id: (True, True, False),
        cases.id: (True, False, True),
        facilities.id: (False, False, False),
    }


def test_a_dataset_is_live_when_any_source_unit_is_and_quality_is_weighted_by_volume() -> None:
    ds = DATASETS["health.encounters"]
    rows = [
        q(ds.id, "A", last_event=NOW - timedelta(days=5), received=900, overall=1.0),
        q(ds.id, "B", last_event=NOW - timedelta(hours=1), received=100, overall=0.0),
    ]
    [unit] = build_ledger([ds], rows, NOW)
    [d] = unit.datasets
    assert d.live and d.source_units == 2
    assert d.quality == 0.9
    assert d.last_event == NOW - timedelta(hours=1)


def test_latest_quality_record_per_dataset_and_unit_wins() -> None:
    old = q(
        "health.encounters", "A", last_event=NOW - timedelta(days=9), at=NOW - timedelta(hours=2)
    )
    new = q("health.encounters", "A", last_event=NOW - timedelta(hours=1), at=NOW)
    other = q("health.encounters", "B", last_event=None, at=NOW - timedelta(hours=1))
    assert latest_quality_rows([old, new, other]) == [new, other]
    assert latest_quality_rows([new, old]) == [new]


def test_declared_vs_received_sums_only_declared_days_as_missing() -> None:
    ds = DATASETS["health.encounters"]
    day = date(2026, 3, 10)
    recon = [
        ReconRow(
            ds.id, "A", day, declared=10, received=7, dead_lettered=1, missing=3, status="missing"
        ),
        ReconRow(
            ds.id, "B", day, declared=5, received=6, dead_lettered=0, missing=-1, status="extra"
        ),
        ReconRow(
            ds.id,
            "C",
            day,
            declared=None,
            received=4,
            dead_lettered=0,
            missing=None,
            status="undeclared",
        ),
    ]
    [unit] = build_ledger([ds], [], NOW, recon=recon)
    assert (unit.declared, unit.received, unit.missing) == (15, 17, 3)


def test_json_form_is_plain_json() -> None:
    import json

    [unit] = build_ledger(HEALTH, [q("health.encounters", "A", last_event=NOW)], NOW)
    doc = json.loads(json.dumps(unit.as_json()))
    assert doc["delivering"] == 1
    assert doc["datasets"][1]["last_event"] == NOW.isoformat()
