"""The IOC store sink against a real Redis (the session's ``redis_url``)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_db import flushed_redis

from bus.errors import SinkError
from sinks.base import SinkRecord
from sinks.ioc.dossier_kpis import compute_unit_kpis
from sinks.ioc.dossiers import upgrade_legacy_dossiers
from sinks.ioc.offsets import APPLIED_KEY, STORE_KEY
from sinks.ioc.store import (
    ALERT_CHANNEL,
    ALERT_STREAM_KEY,
    ALERT_TOPIC,
    DOSSIER_TOPIC,
    OPEN_ALERTS_KEY,
    UNITS_KEY,
    IocStoreSink,
    dossier_key,
    kpi_key,
    open_dossiers_key,
    read_unit_kpis,
)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 8, 1, 1, 0, tzinfo=UTC)
UNITS = ("000.00.12.H57", "000.00.15.H57", "000.20.31.H57")
PERSONAL = ("applicant_citizen_id", "applicant_name", "applicant_birth_date", "applicant_sex")


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with flushed_redis(redis_url) as client:
        yield client


@pytest.fixture
def sink(r: redis.Redis) -> IocStoreSink:
    s = IocStoreSink(r)
    s.setup()
    return s


# -- event builders ---------------------------------------------------------------


def make_dossier(i: int, rng: random.Random, unit: str) -> dict[str, Any]:
    received_at = T0 + timedelta(hours=rng.randint(0, 24 * 20), milliseconds=rng.randint(0, 999))
    return {
        "dossier_id": f"D{i:05d}",
        "dossier_code": f"H57.{i:05d}-250801",
        "procedure_code": f"1.00{rng.randint(1000, 9999)}",
        "procedure_name": "Cấp giấy phép xây dựng",
        "receiving_unit_code": unit,
        "admin_unit_code": "26734",
        "admin_unit_code_source": "26734",
        "applicant_citizen_id": f"0{rng.randint(10**10, 10**11 - 1)}",
        "applicant_name": f"Nguyễn Thị Bích {i}",
        "applicant_birth_date": date(1960, 1, 1) + timedelta(days=rng.randint(0, 15000)),
        "applicant_sex": rng.choice(["MALE", "FEMALE"]),
        "status": "RECEIVED",
        "channel": rng.choice(["ONLINE", "IN_PERSON"]),
        "received_at": received_at,
        "due_at": received_at + timedelta(days=rng.randint(1, 15)),
        "completed_at": None,
        "quality_flags": rng.choice([[], ["naive_time_assumed_local"]]),
    }


def event(
    op: str,
    version: int,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    event_id: str | None = None,
) -> dict[str, Any]:
    state = after or before
    assert state is not None
    ts = state["received_at"] + timedelta(seconds=version % 10**6)
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "op": op,
        "ts_ms": ts,
        "source": {
            "system": "dvc",
            "unit": "000.00.00.H57",
            "dataset": "dossiers",
            "ts_ms": ts,
            "version": version,
        },
        "before": before,
        "after": after,
    }


def lifecycle(i: int, rng: random.Random) -> list[dict[str, Any]]:
    """One dossier's events: created, worked on, then one of the possible endings."""
    state = make_dossier(i, rng, rng.choice(UNITS))
    version = rng.randint(1, 3) * 10**15  # large, like a clock-based version
    events = [event(rng.choice("cr"), version, None, state)]

    def step(**changes: Any) -> None:
        nonlocal state, version
        new = {**state, **changes}
        version += rng.randint(1, 5)
        events.append(event("u", version, state, new))
        state = new

    for status in rng.sample(["IN_PROGRESS", "SUPPLEMENT_REQUESTED", "IN_PROGRESS"], k=2):
        if rng.random() < 0.7:
            step(status=status)
    if rng.random() < 0.15:
        step(receiving_unit_code=rng.choice(UNITS))  # transferred to another unit
    ending = rng.choice(["on_time", "late", "returned", "cancelled", "open", "open", "deleted"])
    if ending == "on_time":
        step(status="COMPLETED", completed_at=state["due_at"] - timedelta(hours=rng.randint(0, 48)))
    elif ending == "late":
        step(status="COMPLETED", completed_at=state["due_at"] + timedelta(hours=rng.randint(1, 48)))
    elif ending in ("returned", "cancelled"):
        step(status=ending.upper())
    elif ending == "deleted":
        version += 1
        events.append(event("d", version, state, None))
    if rng.random() < 0.1:
        # re-emitted with the same version under a new event id
        events.append({**events[-1], "event_id": str(uuid.uuid4())})
    return events


def generated_events(seed: int, n: int = 250) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [e for i in range(n) for e in lifecycle(i, rng)]


def latest_states(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reference fold: the newest (version, event_id) per dossier; deleted ones drop out."""
    newest: dict[str, dict[str, Any]] = {}
    for e in events:
        dossier_id = (e["after"] or e["before"])["dossier_id"]
        cur = newest.get(dossier_id)
        rank = (e["source"]["version"], e["event_id"])
        if cur is None or rank > (cur["source"]["version"], cur["event_id"]):
            newest[dossier_id] = e
    return [e["after"] for e in newest.values() if e["op"] != "d"]


def records(values: Sequence[dict[str, Any]], topic: str = DOSSIER_TOPIC) -> list[SinkRecord]:
    return [
        SinkRecord(topic=topic, partition=0, offset=i, key=None, value=v)
        for i, v in enumerate(values)
    ]


def write_in_batches(sink: IocStoreSink, recs: Sequence[SinkRecord], rng: random.Random) -> None:
    i = 0
    while i < len(recs):
        size = rng.randint(1, 120)
        sink.write(recs[i : i + size])
        i += size


Snapshot = Callable[[redis.Redis], dict[bytes, object]]


def logical_state(r: redis.Redis) -> dict[bytes, Any]:
    """Every key's content, independent of encoding and insertion order."""
    out: dict[bytes, Any] = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"hash":
            out[key] = r.hgetall(key)
        elif kind == b"zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = r.smembers(key)
        elif kind == b"stream":
            out[key] = [fields for _id, fields in cast(list[Any], r.xrange(key))]
        elif key == STORE_KEY.encode():
            out[key] = b"present"  # the store's identity is random per store
        else:
            out[key] = r.get(key)
    return out


def all_text(r: redis.Redis) -> list[str]:
    """Every key, field, member and value in the database, decoded."""
    texts: list[str] = []
    for key, content in logical_state(r).items():
        texts.append(key.decode())
        if isinstance(content, dict):
            texts += [x.decode() for kv in content.items() for x in kv]
        elif isinstance(content, set):
            texts += [m.decode() for m in content]
        elif isinstance(content, list):
            for item in content:
                if isinstance(item, tuple):
                    texts.append(item[0].decode())
                else:
                    texts += [x.decode() for kv in item.items() for x in kv]
        elif content is not None:
            texts.append(content.decode())
    return texts


NOW = T0 + timedelta(days=14)


# -- dossiers -----------------------------------------------------------------------


def test_generated_lifecycles_match_the_reference_kpis(r: redis.Redis, sink: IocStoreSink) -> None:
    events = generated_events(seed=7)
    rng = random.Random(1)
    shuffled = events[:]
    rng.shuffle(shuffled)
    write_in_batches(sink, records(shuffled), rng)

    expected = compute_unit_kpis(latest_states(events), NOW)
    got = read_unit_kpis(r, NOW)
    assert got == list(expected.values())
    assert {k.unit_code for k in got} == set(UNITS)
    assert sum(k.open_overdue for k in got) > 0  # the scenario exercises overdue
    # later, more of the open dossiers have passed their due time, with no write
    later = T0 + timedelta(days=40)
    assert read_unit_kpis(r, later) == list(
        compute_unit_kpis(latest_states(events), later).values()
    )


def test_replays_leave_every_key_unchanged(
    r: redis.Redis, sink: IocStoreSink, redis_snapshot: Snapshot
) -> None:
    events = generated_events(seed=11, n=120)
    batch = records(events)
    sink.write(batch)
    before = redis_snapshot(r)

    sink.write(batch)
    sink.write(batch)
    shuffled = batch[:]
    random.Random(3).shuffle(shuffled)
    write_in_batches(sink, shuffled, random.Random(4))

    assert redis_snapshot(r) == before


def _to_legacy_layout(r: redis.Redis) -> int:
    """Rewrite every dossier hash as the dossier script before the entity plan
    wrote it: the contribution in _c_received.._c_completed_late, _c_due, _c_days."""
    n = 0
    for key in r.scan_iter(match="ioc:{unit:*}:dossier:*"):
        c = cast(bytes, r.hget(key, "_c") or b"").decode()
        fields = dict.fromkeys(
            ("_c_received", "_c_completed", "_c_completed_on_time", "_c_completed_late"), "0"
        )
        due, days = "", []
        for line in filter(None, c.split("\n")):
            p = line.split("\t")
            if p[0] == "h":
                fields[f"_c_{p[1]}"] = p[2]
            elif p[0] == "z":
                due = p[3]
            else:
                days.append(p[2])
        r.hdel(key, "_c")
        # redis-py: hset(mapping=) is a Mapping over a union key type, which dict[str, str] is not
        r.hset(key, mapping={**fields, "_c_due": due, "_c_days": "\t".join(days)})  # type: ignore[dict-item]
        n += 1
    return n


def test_a_store_of_the_earlier_dossier_layout_is_upgraded_at_setup(
    r: redis.Redis, sink: IocStoreSink, redis_snapshot: Snapshot
) -> None:
    events = generated_events(seed=13, n=120)
    cut = len(events) * 2 // 3
    sink.write(records(events[:cut]))
    written = redis_snapshot(r)
    legacy = _to_legacy_layout(r)
    assert legacy > 50
    assert redis_snapshot(r) != written
    assert upgrade_legacy_dossiers(r, batch=7) == legacy
    assert redis_snapshot(r) == written  # byte for byte what the entity plan writes
    assert upgrade_legacy_dossiers(r) == 0

    _to_legacy_layout(r)
    IocStoreSink(r).setup()
    assert redis_snapshot(r) == written
    sink.write(records(events[cut:]))
    expected = compute_unit_kpis(latest_states(events), NOW)
    assert read_unit_kpis(r, NOW) == list(expected.values())


def test_any_delivery_order_converges_on_the_same_store(r: redis.Redis, sink: IocStoreSink) -> None:
    events = generated_events(seed=5, n=150)
    sink.write(records(events))
    in_order = logical_state(r)
    for seed in (1, 2):
        r.flushdb()
        shuffled = records(events)
        rng = random.Random(seed)
        rng.shuffle(shuffled)
        write_in_batches(sink, shuffled, rng)
        assert logical_state(r) == in_order


def test_older_version_never_overwrites(
    r: redis.Redis, sink: IocStoreSink, redis_snapshot: Snapshot
) -> None:
    rng = random.Random(2)
    v1 = make_dossier(1, rng, "U1")
    v2 = {**v1, "status": "COMPLETED", "completed_at": v1["due_at"]}
    sink.write(records([event("u", 2, v1, v2)]))
    after_v2 = redis_snapshot(r)
    sink.write(records([event("c", 1, None, v1)]))

    assert redis_snapshot(r) == after_v2
    stored = r.hgetall(dossier_key("U1", "D00001"))
    assert stored[b"status"] == b"COMPLETED"
    assert stored[b"_version"] == b"2"
    [kpis] = read_unit_kpis(r, NOW)
    assert (kpis.received, kpis.completed_on_time, kpis.open_overdue) == (1, 1, 0)


def test_equal_version_different_event_id_greater_id_wins_in_any_order(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    base = make_dossier(1, random.Random(3), "U1")
    low = event("u", 5, None, {**base, "status": "IN_PROGRESS"}, event_id="0" * 8)
    high = event("u", 5, None, {**base, "status": "RETURNED"}, event_id="f" * 8)
    for order in ([low, high], [high, low]):
        r.flushdb()
        sink.write(records(order))
        assert r.hget(dossier_key("U1", "D00001"), "status") == b"RETURNED"
        assert r.zcard(open_dossiers_key("U1")) == 0


def test_no_personal_field_reaches_redis(r: redis.Redis, sink: IocStoreSink) -> None:
    events = generated_events(seed=9, n=80)
    sink.write(records(events))
    personal_values: set[str] = set()
    for e in events:
        for state in (e["before"], e["after"]):
            if state:
                personal_values.add(state["applicant_citizen_id"])
                personal_values.add(state["applicant_name"])
                personal_values.add(state["applicant_birth_date"].isoformat())
                personal_values.add(state["applicant_birth_date"].strftime("%d/%m/%Y"))
    texts = all_text(r)
    assert len(texts) > 1000
    for text in texts:
        assert "applicant" not in text
        assert "MALE" not in text  # applicant_sex values (FEMALE contains it too)
        for value in personal_values:
            assert value not in text


def test_delete_removes_the_dossier_and_its_contribution(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    d = make_dossier(1, random.Random(4), "U1")
    created = event("c", 1, None, d)
    deleted = event("d", 2, d, None)
    sink.write(records([created]))
    assert r.zcard(open_dossiers_key("U1")) == 1
    sink.write(records([deleted]))

    assert r.exists(kpi_key("U1")) == 0
    assert r.exists(open_dossiers_key("U1")) == 0
    tombstone = r.hgetall(dossier_key("U1", "D00001"))
    assert tombstone[b"_op"] == b"d"
    assert b"status" not in tombstone
    assert read_unit_kpis(r, NOW) == []
    # the create delivered again later cannot resurrect it
    sink.write(records([created]))
    assert r.exists(kpi_key("U1")) == 0
    assert read_unit_kpis(r, NOW) == []


def test_delete_delivered_before_create_wins(r: redis.Redis, sink: IocStoreSink) -> None:
    d = make_dossier(1, random.Random(4), "U1")
    sink.write(records([event("d", 2, d, None), event("c", 1, None, d)]))
    assert r.exists(kpi_key("U1"), open_dossiers_key("U1")) == 0


def test_transfer_moves_the_contribution_to_the_new_unit(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    v1 = make_dossier(1, random.Random(5), "U1")
    v2 = {**v1, "receiving_unit_code": "U2"}
    for order in ([1, 2], [2, 1]):
        r.flushdb()
        evs = {1: event("c", 1, None, v1), 2: event("u", 2, v1, v2)}
        sink.write(records([evs[i] for i in order]))
        assert [k.unit_code for k in read_unit_kpis(r, NOW)] == ["U2"]
        assert r.exists(kpi_key("U1"), open_dossiers_key("U1")) == 0
        assert r.zrange(open_dossiers_key("U2"), 0, -1) == [b"D00001"]


def test_open_overdue_is_counted_at_read_time_strictly_after_due(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    d = make_dossier(1, random.Random(6), "U1")
    sink.write(records([event("c", 1, None, d)]))
    due = d["due_at"]
    assert read_unit_kpis(r, due)[0].open_overdue == 0
    assert read_unit_kpis(r, due - timedelta(days=1))[0].overdue_rate is None
    late = read_unit_kpis(r, due + timedelta(microseconds=1))[0]
    assert late.open_overdue == 1
    assert (late.overdue_rate, late.on_time_rate) == (1.0, 0.0)


def test_works_with_a_decoding_client(redis_url: str, r: redis.Redis) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        s = IocStoreSink(client)
        s.setup()
        events = generated_events(seed=13, n=40)
        s.write(records(events))
        expected = list(compute_unit_kpis(latest_states(events), NOW).values())
        assert read_unit_kpis(client, NOW) == expected
    finally:
        client.close()


def test_scripts_are_reloaded_after_script_flush(r: redis.Redis, sink: IocStoreSink) -> None:
    r.script_flush()
    events = generated_events(seed=17, n=10)
    sink.write(records(events))
    assert read_unit_kpis(r, NOW) == list(compute_unit_kpis(latest_states(events), NOW).values())


def test_routes_by_shape_on_other_topics(r: redis.Redis, sink: IocStoreSink) -> None:
    d = make_dossier(1, random.Random(8), "U1")
    assert sink.write(records([event("c", 1, None, d)], topic="replay.dossiers")) == []
    assert r.sismember(UNITS_KEY, "U1")


def test_a_malformed_record_is_rejected_and_the_rest_written(
    r: redis.Redis, sink: IocStoreSink
) -> None:
    d = make_dossier(1, random.Random(8), "U1")
    naive = event("c", 1, None, {**d, "due_at": d["due_at"].replace(tzinfo=None)})
    naive["after"]["dossier_id"] = "D2"
    batch = records([event("c", 1, None, d), naive])
    rejected = sink.write(batch)
    assert [(x.record.offset, x.reason) for x in rejected] == [(1, "malformed")]
    assert all("Nguyễn" not in x.message for x in rejected)
    assert r.exists(dossier_key("U1", "D00001")) == 1
    assert r.exists(dossier_key("U1", "D2")) == 0


def test_setup_and_readers_fail_retriably_without_redis(tmp_path: Path) -> None:
    # (``write`` without Redis: tests/integration/test_sink_contract.py)
    # no client-side retries: the runner decides on retrying from ``retriable``
    client = redis.Redis(
        unix_socket_path=str(tmp_path / "absent.sock"), retry=Retry(NoBackoff(), 0)
    )
    s = IocStoreSink(client)
    with pytest.raises(SinkError) as info:
        s.setup()
    assert info.value.retriable is True
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    with pytest.raises(SinkError) as info:
        read_unit_kpis(client, NOW)
    assert info.value.retriable is True


# -- alerts --------------------------------------------------------------------------


def make_alert(
    state: str, minutes: int, *, alert_id: str = "A1", value: float = 0.4
) -> dict[str, Any]:
    ts = T0 + timedelta(minutes=minutes)
    return {
        "alert_id": alert_id,
        "rule": "dossier_overdue_rate",
        "state": state,
        "severity": "WARNING",
        "dataset": "publicservice.dossiers",
        "unit_code": "000.00.12.H57",
        "value": value,
        "threshold": 0.3,
        "window_days": 30,
        "window_start": ts - timedelta(days=30),
        "window_end": ts,
        "evidence": {"completed_late": 3, "open_overdue": 1, "completed_on_time": 6},
        "message": "Tỷ lệ hồ sơ quá hạn vượt ngưỡng / overdue rate above threshold",
        "ts_ms": ts,
    }


def test_alert_lifecycle(r: redis.Redis, sink: IocStoreSink, redis_snapshot: Snapshot) -> None:
    pubsub = r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]  # redis-py
    pubsub.subscribe(ALERT_CHANNEL)
    pubsub.get_message(timeout=2.0)  # reads (and drops) the subscribe confirmation
    try:
        raised = make_alert("RAISED", 0)
        sink.write(records([raised], topic=ALERT_TOPIC))
        assert set(r.hkeys(OPEN_ALERTS_KEY)) == {b"A1"}
        assert r.xlen(ALERT_STREAM_KEY) == 1
        message = pubsub.get_message(timeout=2.0)
        assert message is not None and b'"state":"RAISED"' in message["data"]

        updated = make_alert("UPDATED", 5, value=0.5)
        sink.write(records([updated, raised], topic=ALERT_TOPIC))  # raised replayed
        assert r.xlen(ALERT_STREAM_KEY) == 2
        assert b'"value":0.5' in r.hget(OPEN_ALERTS_KEY, "A1")  # type: ignore[operator]

        resolved = make_alert("RESOLVED", 10, value=0.2)
        sink.write(records([resolved], topic=ALERT_TOPIC))
        assert r.hlen(OPEN_ALERTS_KEY) == 0
        assert r.xlen(ALERT_STREAM_KEY) == 3

        # the records' offsets are made up per call here: only the data must not move
        snapshot = redis_snapshot(r)
        snapshot.pop(APPLIED_KEY.encode())
        sink.write(records([raised, updated, resolved], topic=ALERT_TOPIC))
        replayed = redis_snapshot(r)
        replayed.pop(APPLIED_KEY.encode())
        assert replayed == snapshot

        # a late transition older than the resolution is logged but cannot reopen
        sink.write(records([make_alert("UPDATED", 7)], topic=ALERT_TOPIC))
        assert r.hlen(OPEN_ALERTS_KEY) == 0
        assert r.xlen(ALERT_STREAM_KEY) == 4
        states = [f[b"state"] for _id, f in cast(list[Any], r.xrange(ALERT_STREAM_KEY))]
        assert states == [b"RAISED", b"UPDATED", b"RESOLVED", b"UPDATED"]

        published = [pubsub.get_message(timeout=2.0) for _ in range(3)]
        assert all(m is not None for m in published)
        assert pubsub.get_message(timeout=0.2) is None  # replays published nothing
    finally:
        pubsub.close()


def test_resolved_before_raised_leaves_no_open_alert(r: redis.Redis, sink: IocStoreSink) -> None:
    sink.write(records([make_alert("RESOLVED", 10), make_alert("RAISED", 0)], topic=ALERT_TOPIC))
    assert r.hlen(OPEN_ALERTS_KEY) == 0
    assert r.xlen(ALERT_STREAM_KEY) == 2


def test_alert_stream_is_capped(r: redis.Redis) -> None:
    sink = IocStoreSink(r, alert_stream_maxlen=10)
    alerts = [make_alert("RAISED", i, alert_id=f"A{i}") for i in range(400)]
    sink.write(records(alerts, topic=ALERT_TOPIC))
    # MAXLEN ~ trims whole stream nodes (100 entries by default)
    assert 10 <= r.xlen(ALERT_STREAM_KEY) < 400
    assert r.hlen(OPEN_ALERTS_KEY) == 400


def test_alert_and_dossier_records_in_one_batch(r: redis.Redis, sink: IocStoreSink) -> None:
    d = make_dossier(1, random.Random(9), "U1")
    batch = [
        *records([event("c", 1, None, d)]),
        replace(records([make_alert("RAISED", 0)], topic=ALERT_TOPIC)[0], offset=99),
    ]
    sink.write(batch)
    assert r.hlen(OPEN_ALERTS_KEY) == 1
    assert [k.unit_code for k in read_unit_kpis(r, NOW)] == ["U1"]
