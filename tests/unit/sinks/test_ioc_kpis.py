"""Pure parts of the IOC store: KPI contributions, daily dossier figures, slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from std_samples import sink_records, std_events

from schemas.catalog import DATASETS
from sinks.base import SinkRecord
from sinks.ioc.dossier_kpis import compute_unit_day_kpis, daily_contribution
from sinks.ioc.entities import ENTITY_DATASETS, SHARDED_DATASETS, public_fields
from sinks.ioc.kpis import Member, class_stat, feedback_report, school, station_reading, teacher
from sinks.ioc.store import IocStoreSink

T = datetime(2025, 10, 9, 16, 30, tzinfo=UTC)  # 23:30 local


def test_school_counts_when_active_and_always_joins_its_commune() -> None:
    s = {"school_id": "S1", "commune_code": "75022", "status": "ACTIVE"}
    assert dict(school(s).counters) == {"school|S1|75022": 1, "schools|75022": 1}
    assert dict(school({**s, "status": "CLOSED"}).counters) == {"school|S1|75022": 1}
    assert dict(school({**s, "commune_code": None}).counters)["schools|unknown"] == 1


def test_class_stats_and_teachers_count_per_school() -> None:
    c = {"school_id": "S1", "school_year": "2025-2026", "class_count": 3, "student_count": 0}
    assert dict(class_stat(c).counters) == {"classes|2025-2026|S1": 3}
    t = {"school_id": "S1", "status": "ON_LEAVE"}
    assert dict(teacher(t).counters) == {"teachers|S1": 1}
    assert not teacher({**t, "status": "RETIRED"}).counters


def test_feedback_open_with_deadline_and_closed() -> None:
    r: dict[str, Any] = {
        "report_id": "R1",
        "status": "ASSIGNED",
        "handling_unit_code": None,
        "response_deadline": T,
    }
    c = feedback_report(r)
    assert dict(c.counters) == {"open|unassigned": 1}
    assert c.members == (Member("due", "unassigned|R1", 1760027400000),)
    assert feedback_report({**r, "status": "RESPONDED"}).counters == {}


def test_station_reading_keeps_aqi_by_reading_time() -> None:
    r = {"station_id": "KK1", "reading_time": T, "aqi": 56}
    c = station_reading(r)
    assert c.members == (Member("aqi:KK1", "1760027400000|56", 1760027400000),)
    assert station_reading({**r, "aqi": None}).members == ()


def test_daily_contribution_uses_local_days() -> None:
    d = {
        "status": "COMPLETED",
        "received_at": T,  # 2025-10-09 23:30 local
        "due_at": T + timedelta(days=2),
        "completed_at": T + timedelta(hours=1),  # 2025-10-10 00:30 local
        "receiving_unit_code": "U1",
    }
    assert daily_contribution(d) == (
        "2025-10-09|received",
        "2025-10-10|completed",
        "2025-10-10|completed_on_time",
    )
    assert daily_contribution(None) == ()
    opened = {**d, "status": "IN_PROGRESS", "completed_at": None}
    [day1, day2] = compute_unit_day_kpis([opened], T + timedelta(days=3), {"U1": "justice"})
    assert (day1.day, day1.kpis.received, day1.sector) == ("2025-10-09", 1, "justice")
    assert (day2.day, day2.kpis.open_overdue, day2.kpis.overdue_rate) == ("2025-10-11", 1, 1.0)


def test_no_personal_field_is_kept() -> None:
    for dataset_id in ENTITY_DATASETS:
        kept = set(public_fields(dataset_id))
        assert kept and not kept & set(DATASETS[dataset_id].personal_fields)


def _dossier_record() -> SinkRecord:
    state = {
        "dossier_id": "D1",
        "receiving_unit_code": "U{x}",
        "status": "RECEIVED",
        "received_at": T,
        "due_at": T + timedelta(days=3),
    }
    moved = {**state, "receiving_unit_code": "U2"}
    value = {
        "event_id": "e1",
        "op": "u",
        "ts_ms": T,
        "source": {"version": 2},
        "before": state,
        "after": moved,
    }
    return SinkRecord("publicservice.dossiers.std.v1", 0, 0, None, value)


@pytest.mark.parametrize("dataset_id", SHARDED_DATASETS)
def test_every_script_call_touches_one_hash_slot(dataset_id: str) -> None:
    sink = IocStoreSink(redis.Redis())  # no I/O: planning only
    events = std_events(dataset_id)[:80]
    deleted = {**events[0], "op": "d", "before": events[0]["after"], "after": None}
    recs = [*sink_records(dataset_id, [*events, deleted]), _dossier_record()]
    calls = [call for rec in recs for call in sink.plan(rec, set())]
    assert len(calls) >= len(recs)
    for call in calls:
        assert len({key_slot(k.encode()) for k in call.keys}) == 1, call.keys
