"""Every catalog dataset's std events in the IOC store, against a real Redis.

The store is compared with references computed here in Python from the events
(highest version wins, ties to the greater event id), independently of the sink's
contribution functions.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import date
from functools import cache
from typing import Any, cast

import pytest
import redis
from redis_db import flushed_redis
from std_samples import SIMULATED, sink_records, std_events

from schemas.catalog import DATASETS
from sinks.base import SinkRecord
from sinks.ioc.codec import epoch_ms, field_text
from sinks.ioc.entities import entity_key
from sinks.ioc.geo import search
from sinks.ioc.read import (
    read_commune_education,
    read_commune_health,
    read_feedback_kpis,
    read_station_aqi,
)
from sinks.ioc.store import IocStoreSink

pytestmark = pytest.mark.integration

Snapshot = Callable[[redis.Redis], dict[bytes, object]]
TEST_DB = 7  # apart from the other tests' database 0


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with flushed_redis(redis_url, TEST_DB) as client:
        yield client


@pytest.fixture
def sink(r: redis.Redis) -> IocStoreSink:
    s = IocStoreSink(r)
    s.setup()
    return s


def _other_id(e: dict[str, Any], tail: str) -> uuid.UUID:
    return uuid.UUID(str(e["event_id"])[:-4] + tail)


@cache
def stream(dataset_id: str) -> list[dict[str, Any]]:
    """The simulated std events plus what a real stream also has: deletes (some
    carrying ``before``, some only a record key), stale re-sends, equal-version
    conflicts."""
    events = std_events(dataset_id)
    rng = random.Random(dataset_id)
    dataset = DATASETS[dataset_id]
    extra: list[dict[str, Any]] = []
    last = {dataset.key_of(e["after"]): e for e in events}
    for key in rng.sample(sorted(last), k=max(1, len(last) // 10)):
        e = last[key]
        state = e["after"]
        deleted = {
            **e,
            "event_id": _other_id(e, "dddd"),
            "op": "d",
            "before": state if rng.random() < 0.5 else None,
            "after": None,
            "source": {**e["source"], "version": e["source"]["version"] + 1000},
            "_key": dataset.key_of(state),
        }
        extra.append(deleted)
    for e in rng.sample(events, k=len(events) // 10):
        # the same version re-emitted under another event id with other content
        extra.append({**e, "event_id": _other_id(e, "ffff")})
    return events + extra


def as_records(dataset_id: str, events: Sequence[dict[str, Any]]) -> list[SinkRecord]:
    plain = [{k: v for k, v in e.items() if k != "_key"} for e in events]
    recs = sink_records(dataset_id, plain)
    return [
        replace(rec, key=e["_key"].encode()) if "_key" in e else rec
        for rec, e in zip(recs, events, strict=True)
    ]


def all_records() -> list[SinkRecord]:
    return [rec for d in SIMULATED for rec in as_records(d, stream(d))]


def write_shuffled(sink: IocStoreSink, recs: Sequence[SinkRecord], seed: int) -> None:
    rng = random.Random(seed)
    shuffled = list(recs)
    rng.shuffle(shuffled)
    i = 0
    while i < len(shuffled):
        size = rng.randint(1, 400)
        assert sink.write(shuffled[i : i + size]) == []
        i += size


def latest(dataset_id: str) -> dict[str, dict[str, Any]]:
    """Reference: the winning event per entity key (deletes included)."""
    dataset = DATASETS[dataset_id]
    won: dict[str, dict[str, Any]] = {}
    for e in stream(dataset_id):
        state = e["after"] or e["before"]
        key = dataset.key_of(state) if state else e["_key"]
        rank = (e["source"]["version"], str(e["event_id"]))
        cur = won.get(key)
        if cur is None or rank > (cur["source"]["version"], str(cur["event_id"])):
            won[key] = e
    return won


def live(dataset_id: str) -> list[dict[str, Any]]:
    return [e["after"] for e in latest(dataset_id).values() if e["op"] != "d"]


def decoded(r: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in cast(dict[bytes, bytes], r.hgetall(key)).items()}


# -- latest state ---------------------------------------------------------------------


def test_every_dataset_holds_the_latest_state_of_each_entity(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    write_shuffled(sink, all_records(), seed=1)
    for dataset_id in SIMULATED:
        personal = set(DATASETS[dataset_id].personal_fields)
        won = latest(dataset_id)
        assert len(won) >= 4
        pipe = r.pipeline(transaction=False)
        for key in won:
            pipe.hgetall(entity_key(dataset_id, key))
        for (key, e), stored in zip(won.items(), pipe.execute(), strict=True):
            got = {k.decode(): v.decode() for k, v in stored.items()}
            assert got["_version"] == str(e["source"]["version"]), (dataset_id, key)
            assert got["_event_id"] == str(e["event_id"])
            assert got["_op"] == e["op"]
            public = {k: v for k, v in got.items() if not k.startswith("_")}
            if e["op"] == "d":
                assert public == {}
            else:
                expected = {
                    k: field_text(v)
                    for k, v in e["after"].items()
                    if v is not None and k not in personal
                }
                assert public == expected, (dataset_id, key)


def test_replays_and_any_order_leave_the_same_store(
    r: redis.Redis, sink: IocStoreSink, redis_snapshot: Snapshot
) -> None:
    recs = all_records()
    assert sink.write(recs) == []
    in_order = redis_snapshot(r)
    assert sink.write(recs) == []
    assert sink.write(recs) == []
    write_shuffled(sink, recs, seed=2)
    assert redis_snapshot(r) == in_order
    r.flushdb()
    write_shuffled(sink, recs, seed=3)
    write_shuffled(sink, recs, seed=4)
    assert redis_snapshot(r) == in_order


# -- KPIs ---------------------------------------------------------------------------


def test_kpis_equal_a_reference_computed_from_the_events(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    write_shuffled(sink, all_records(), seed=5)

    # education: schools (active) per commune; classes, students, teachers by school
    schools = live("education.schools")
    commune_of = {s["school_id"]: s["commune_code"] or "unknown" for s in schools}
    edu: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in schools:
        if s["status"] == "ACTIVE":
            edu[commune_of[s["school_id"]]][0] += 1
    classes = live("education.class_stats")
    year = max(c["school_year"] for c in classes)
    for c in classes:
        if c["school_year"] == year:
            edu[commune_of.get(c["school_id"], "unknown")][1] += c["class_count"]
            edu[commune_of.get(c["school_id"], "unknown")][2] += c["student_count"]
    for t in live("education.teachers"):
        if t["status"] in ("ACTIVE", "ON_LEAVE"):
            edu[commune_of.get(t["school_id"], "unknown")][3] += 1
    got_edu = read_commune_education(r)
    assert {c: [k.schools, k.classes, k.students, k.teachers] for c, k in got_edu.items()} == {
        c: a for c, a in edu.items() if any(a)
    }
    assert sum(k.students for k in got_edu.values()) > 1000

    # health: encounters by their facility's commune, cases by their own commune
    fac = {f["facility_code"]: f["commune_code"] or "unknown" for f in live("health.facilities")}
    health: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for enc in live("health.encounters"):
        health[fac.get(enc["facility_code"], "unknown")][0] += 1
    for case in live("health.disease_cases"):
        health[case["commune_code"] or "unknown"][1] += 1
    got_health = read_commune_health(r)
    assert {c: [k.encounters, k.disease_cases] for c, k in got_health.items()} == dict(health)

    # AQI: the newest reading (by reading time) of each station that has one
    newest: dict[str, dict[str, Any]] = {}
    for reading in live("environment.station_readings"):
        if reading["aqi"] is not None:
            cur = newest.get(reading["station_id"])
            if cur is None or reading["reading_time"] > cur["reading_time"]:
                newest[reading["station_id"]] = reading
    aqi = read_station_aqi(r)
    assert {s: (a.reading_time_ms, a.aqi) for s, a in aqi.items()} == {
        s: (epoch_ms(x["reading_time"]), x["aqi"]) for s, x in newest.items()
    }
    assert aqi

    # feedback: open per handling unit, overdue = open and deadline passed at `now`
    reports = live("feedback.reports")
    deadlines = sorted(
        x["response_deadline"]
        for x in reports
        if x["status"] in ("RECEIVED", "ASSIGNED", "IN_PROGRESS") and x["response_deadline"]
    )
    now = deadlines[len(deadlines) // 2]  # half of them overdue
    fb: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for x in reports:
        if x["status"] in ("RECEIVED", "ASSIGNED", "IN_PROGRESS"):
            unit = x["handling_unit_code"] or "unassigned"
            fb[unit][0] += 1
            deadline = x["response_deadline"]
            fb[unit][1] += int(deadline is not None and deadline < now)
    got_fb = read_feedback_kpis(r, now)
    assert {u: [k.open, k.overdue] for u, k in got_fb.items()} == dict(fb)
    assert sum(k.overdue for k in got_fb.values()) > 0


# -- geo ------------------------------------------------------------------------------


def test_geo_search_finds_located_entities_and_forgets_deleted_ones(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    write_shuffled(sink, all_records(), seed=6)
    reading = live("environment.station_readings")[0]
    hits = search(r, "environment.station_readings", reading["longitude"], reading["latitude"], 0.5)
    assert hits[0].member == reading["station_id"]
    assert hits[0].distance_km < 0.01

    for dataset_id, member_field in (
        ("education.schools", "school_id"),
        ("health.facilities", "facility_code"),
        ("feedback.reports", "report_id"),
        ("transport.bus_positions", "vehicle_plate"),
    ):
        located = {str(x[member_field]) for x in live(dataset_id) if x.get("latitude") is not None}
        everything = {h.member for h in search(r, dataset_id, 107.0, 11.0, 500)}
        assert everything == located, dataset_id
        deleted = {k for k, e in latest(dataset_id).items() if e["op"] == "d"}
        assert deleted and not deleted & everything


# -- personal data and malformed records ----------------------------------------------


def _personal_values() -> set[str]:
    values: set[str] = set()
    for dataset_id in SIMULATED:
        for e in stream(dataset_id):
            for state in (e["before"], e["after"]):
                for name in DATASETS[dataset_id].personal_fields:
                    v = (state or {}).get(name)
                    if v is None:
                        continue
                    # a birth date can equal any other date (a permit's, a
                    # start date): dates are checked by field name only
                    if not isinstance(v, date):
                        values.add(field_text(v))
    # enum symbols (sex) are personal in one dataset and not in another
    return {v for v in values if len(v) >= 6 and not v.replace("_", "").isupper()}


def test_no_personal_field_reaches_redis(r: redis.Redis, sink: IocStoreSink) -> None:
    write_shuffled(sink, all_records(), seed=8)
    personal = _personal_values()
    assert len(personal) > 1000
    numbers = {v for v in personal if sum(ch.isdigit() for ch in v) >= 9}
    texts: list[str] = []
    for key in r.scan_iter(count=1000):
        texts.append(key.decode())
        kind = r.type(key)
        if kind == b"hash":
            content = decoded(r, key.decode())
            texts += [*content, *content.values()]
            dataset_id = key.decode().split("{", 1)[1].split(":", 1)[0]
            if dataset_id in DATASETS:
                assert not set(content) & set(DATASETS[dataset_id].personal_fields)
        elif kind == b"zset":
            texts += [m.decode() for m in cast(list[bytes], r.zrange(key, 0, -1))]
    assert len(texts) > 5000
    for t in texts:
        assert t not in personal
        for n in numbers:
            assert n not in t


def test_malformed_records_are_rejected_and_the_rest_written(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    good = as_records("health.facilities", stream("health.facilities")[:3])
    bad_value = {**good[0].value, "after": {**good[0].value["after"], "latitude": 999.0}}
    no_key = {**good[1].value, "op": "d", "after": None, "before": None}
    batch = [
        good[2],
        replace(good[0], value=bad_value, offset=10),
        replace(good[1], value=no_key, offset=11),
        replace(good[1], value={"op": "c"}, offset=12),
    ]
    rejected = sink.write(batch)
    assert [(x.record.offset, x.reason) for x in rejected] == [
        (10, "malformed"),
        (11, "malformed"),
        (12, "malformed"),
    ]
    key = DATASETS["health.facilities"].key_of(good[2].value["after"])
    assert r.hget(entity_key("health.facilities", key), "facility_code") == key.encode()


def test_counters_follow_a_changed_entity(r: redis.Redis, sink: IocStoreSink) -> None:
    [first] = [e for e in stream("education.schools") if e["op"] == "c"][:1]
    moved = {
        **first,
        "event_id": _other_id(first, "aaaa"),
        "source": {**first["source"], "version": first["source"]["version"] + 5000},
        "after": {**first["after"], "commune_code": "99999", "status": "ACTIVE"},
    }
    sink.write(as_records("education.schools", [moved, first]))
    got = read_commune_education(r)
    assert got["99999"].schools == 1
    old = first["after"]["commune_code"]
    assert old == "99999" or old not in got or got[old].schools == 0
