"""The shared-repository sink on a real PostgreSQL and on a SQLite file.

Each PostgreSQL test works in its own schema (dropped afterwards): the database may be
shared with other test runs.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pg_backends import terminate_backends

from bus.errors import SinkError
from schemas.catalog import get_dataset, load_schema
from sinks.base import Rejected, SinkRecord
from sinks.shared_repo import SharedRepoSink, create_repo_engine

sys.path.insert(0, str(Path(__file__).parents[1]))
from std_samples import SIMULATED, sink_records, std_events

pytestmark = pytest.mark.integration

SCHOOLS = get_dataset("education.schools")
REPORTS = get_dataset("feedback.reports")
READINGS = get_dataset("environment.station_readings")  # composite key with a timestamp


@dataclass
class Repo:
    engine: sa.Engine
    db_schema: str | None
    app_name: str

    def sink(self, **kwargs: Any) -> SharedRepoSink:
        sink = SharedRepoSink(self.engine, db_schema=self.db_schema, **kwargs)
        sink.setup()
        return sink


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    app_name = f"databus-test-{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        engine = create_repo_engine(f"sqlite:///{tmp_path / 'repo.db'}")
        yield Repo(engine, None, app_name)
        engine.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"t_shared_repo_{uuid.uuid4().hex[:10]}"
    engine = create_repo_engine(url, connect_args={"application_name": app_name})
    try:
        yield Repo(engine, schema, app_name)
    finally:
        engine.dispose()
        admin = sa.create_engine(url, poolclass=sa.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


# ---- the Python reference ----------------------------------------------------------


def _norm(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _key(dataset_id: str, image: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_norm(image[k]) for k in get_dataset(dataset_id).key_fields)


def reference(dataset_id: str, events: Sequence[dict[str, Any]]) -> dict[tuple[Any, ...], Any]:
    """Highest (version, event id) per key wins; a delete leaves a tombstone."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for ev in events:
        image = ev["before"] if ev["op"] == "d" else ev["after"]
        key = _key(dataset_id, image)
        order = (ev["source"]["version"], uuid.UUID(str(ev["event_id"])))
        cur = best.get(key)
        if cur is None or order > (
            cur["source"]["version"],
            uuid.UUID(str(cur["event_id"])),
        ):
            best[key] = ev
    out = {}
    for key, ev in best.items():
        image = ev["before"] if ev["op"] == "d" else ev["after"]
        out[key] = {
            **{k: _norm(v) for k, v in image.items()},
            "_version": ev["source"]["version"],
            "_event_id": str(ev["event_id"]),
            "_deleted": ev["op"] == "d",
        }
    return out


def current_rows(repo: Repo, sink: SharedRepoSink, dataset_id: str) -> dict[tuple[Any, ...], Any]:
    current, _ = sink.tables(dataset_id)
    keys = get_dataset(dataset_id).key_fields
    with repo.engine.connect() as conn:
        rows = conn.execute(sa.select(current)).mappings().all()
    out = {}
    for row in rows:
        values = {k: _norm(v) for k, v in row.items() if k != "_updated_at"}
        out[tuple(values[k] for k in keys)] = values
    return out


def history_ids(repo: Repo, sink: SharedRepoSink, dataset_id: str) -> list[str]:
    _, history = sink.tables(dataset_id)
    with repo.engine.connect() as conn:
        return sorted(str(i) for i in conn.scalars(sa.select(history.c._event_id)))


def assert_matches_reference(
    repo: Repo, sink: SharedRepoSink, dataset_id: str, events: Sequence[dict[str, Any]]
) -> None:
    expected = reference(dataset_id, events)
    stored = current_rows(repo, sink, dataset_id)
    assert stored.keys() == expected.keys()
    for key, want in expected.items():
        got = stored[key]
        for name, value in want.items():
            assert got[name] == value, (dataset_id, key, name)
    assert history_ids(repo, sink, dataset_id) == sorted({str(e["event_id"]) for e in events})


def write_all(sink: SharedRepoSink, dataset_id: str, events: Sequence[dict[str, Any]]) -> None:
    records = sink_records(dataset_id, events)
    for i in range(0, len(records), 97):
        assert sink.write(records[i : i + 97]) == []


def with_deletes(dataset_id: str, events: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """The events plus a delete of every ``every``-th entity (newest version + 1) and,
    after it, a replay of that entity's first event (a late, older create)."""
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for ev in events:
        key = _key(dataset_id, ev["after"])
        first.setdefault(key, ev)
        if key not in newest or ev["source"]["version"] > newest[key]["source"]["version"]:
            newest[key] = ev
    out = list(events)
    for i, (key, ev) in enumerate(sorted(newest.items())):
        if i % every:
            continue
        delete = copy.deepcopy(ev)
        delete["event_id"] = uuid.UUID(int=random.Random(i).getrandbits(128), version=4)
        delete["op"] = "d"
        delete["before"], delete["after"] = ev["after"], None
        delete["source"]["version"] = ev["source"]["version"] + 1
        out.extend([delete, first[key]])
    return out


# ---- the tests ----------------------------------------------------------------------


def test_every_simulated_dataset_stored(repo: Repo) -> None:
    sink = repo.sink()
    for dataset_id in SIMULATED:
        events = std_events(dataset_id)
        write_all(sink, dataset_id, events)
        assert_matches_reference(repo, sink, dataset_id, events)
    sink.close()


@pytest.mark.parametrize("dataset_id", [REPORTS.id, READINGS.id, SCHOOLS.id])
def test_replayed_twice_and_shuffled_changes_nothing(repo: Repo, dataset_id: str) -> None:
    events = with_deletes(dataset_id, std_events(dataset_id), every=7)
    sink = repo.sink(datasets=[get_dataset(dataset_id)])
    write_all(sink, dataset_id, events)
    assert_matches_reference(repo, sink, dataset_id, events)
    assert any(r["_deleted"] for r in current_rows(repo, sink, dataset_id).values())
    before = current_rows(repo, sink, dataset_id)
    rng = random.Random(5)
    for _ in range(2):
        shuffled = list(events)
        rng.shuffle(shuffled)
        records = sink_records(dataset_id, shuffled)
        i = 0
        while i < len(records):
            n = rng.randint(1, 150)
            assert sink.write(records[i : i + n]) == []
            i += n
        assert current_rows(repo, sink, dataset_id) == before
        assert_matches_reference(repo, sink, dataset_id, events)


def test_out_of_order_alone_converges(repo: Repo) -> None:
    """Shuffled from the start (deletes before their creates): the same tables."""
    events = with_deletes(REPORTS.id, std_events(REPORTS.id), every=5)
    shuffled = list(events)
    random.Random(9).shuffle(shuffled)
    sink = repo.sink(datasets=[REPORTS])
    write_all(sink, REPORTS.id, shuffled)
    assert_matches_reference(repo, sink, REPORTS.id, events)


def test_a_newer_event_revives_a_tombstone(repo: Repo) -> None:
    # (that older events cannot: tests/integration/test_sink_contract.py)
    created = std_events(SCHOOLS.id)[0]
    assert created["op"] == "c"
    v = created["source"]["version"]
    delete = copy.deepcopy(created)
    delete.update(op="d", before=created["after"], after=None, event_id=uuid.uuid4())
    delete["source"]["version"] = v + 1
    sink = repo.sink(datasets=[SCHOOLS])
    assert sink.write(sink_records(SCHOOLS.id, [created, delete])) == []
    key = _key(SCHOOLS.id, created["after"])
    assert current_rows(repo, sink, SCHOOLS.id)[key]["_deleted"] is True
    revive = copy.deepcopy(created)
    revive.update(op="u", event_id=uuid.uuid4())
    revive["source"]["version"] = v + 2
    revive["after"] = {**created["after"], "school_name": "Trường mới"}
    assert sink.write(sink_records(SCHOOLS.id, [revive])) == []
    row = current_rows(repo, sink, SCHOOLS.id)[key]
    assert row["_deleted"] is False and row["school_name"] == "Trường mới"


def _refuse_schools(repo: Repo, sink: SharedRepoSink, refused: Sequence[str]) -> None:
    """A rule the database enforces on every stored event: some schools are refused."""
    _, history = sink.tables(SCHOOLS.id)
    ids = ", ".join(f"'{i}'" for i in refused)
    with repo.engine.begin() as conn:
        table = conn.dialect.identifier_preparer.format_table(history)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                f"ALTER TABLE {table} ADD CONSTRAINT ck_test_refused "
                f"CHECK (school_id NOT IN ({ids}))"
            )
        else:  # SQLite cannot add a CHECK to a table; a trigger aborts the same way
            conn.exec_driver_sql(
                f"CREATE TRIGGER ck_test_refused BEFORE INSERT ON {table} "
                f"WHEN NEW.school_id IN ({ids}) "
                "BEGIN SELECT RAISE(ABORT, 'ck_test_refused'); END"
            )


def test_rows_the_database_rejects_come_back_the_rest_is_written(repo: Repo) -> None:
    events = std_events(SCHOOLS.id)
    updated = sorted({e["after"]["school_id"] for e in events if e["op"] == "u"})
    refused = [updated[0], sorted({e["after"]["school_id"] for e in events})[3]]
    sink = repo.sink(datasets=[SCHOOLS])
    _refuse_schools(repo, sink, refused)
    records = sink_records(SCHOOLS.id, events)
    rejected: list[Rejected] = []
    for i in range(0, len(records), 40):
        rejected.extend(sink.write(records[i : i + 40]))
    expected = [r for r in records if r.value["after"]["school_id"] in refused]
    assert [r.record for r in rejected] == expected
    assert {r.reason for r in rejected} == {"db_rejected"}
    for r in rejected:
        assert "ck_test_refused" in r.message
        assert r.record.value["after"]["school_name"] not in r.message
    kept = [e for e in events if e["after"]["school_id"] not in refused]
    assert_matches_reference(repo, sink, SCHOOLS.id, kept)
    # the same batch again: still exactly those refused, nothing duplicated
    again = sink.write(records)
    assert [r.record for r in again] == expected
    assert_matches_reference(repo, sink, SCHOOLS.id, kept)


@pytest.mark.parametrize("repo", ["postgresql"], indirect=True)  # SQLite ignores VARCHAR(n)
def test_value_too_long_is_rejected_on_postgresql(repo: Repo) -> None:
    events = std_events(SCHOOLS.id)
    sink = repo.sink(datasets=[SCHOOLS])
    current, history = sink.tables(SCHOOLS.id)
    longest = max(len(e["after"]["school_name"]) for e in events)
    with repo.engine.begin() as conn:
        for table in (current, history):
            name = conn.dialect.identifier_preparer.format_table(table)
            conn.exec_driver_sql(
                f"ALTER TABLE {name} ALTER COLUMN school_name TYPE varchar({longest - 1})"
            )
    rejected = sink.write(sink_records(SCHOOLS.id, events))
    too_long = [e for e in events if len(e["after"]["school_name"]) == longest]
    assert sorted(str(r.record.value["event_id"]) for r in rejected) == sorted(
        str(e["event_id"]) for e in too_long
    )
    assert all(r.exception_class == "StringDataRightTruncation" for r in rejected)
    assert all("sqlstate=22001" in r.message for r in rejected)
    kept = [e for e in events if len(e["after"]["school_name"]) < longest]
    assert_matches_reference(repo, sink, SCHOOLS.id, kept)


# ---- PostgreSQL drops its connections -----------------------------------------------


def _write_retrying(sink: SharedRepoSink, batch: Sequence[SinkRecord]) -> int:
    """Like the runner: a retriable SinkError means the same batch again. Returns how
    many attempts failed."""
    failures = 0
    while True:
        try:
            assert sink.write(batch) == []
            return failures
        except SinkError as exc:
            assert exc.retriable, str(exc)
            failures += 1
            assert failures < 5


@pytest.mark.parametrize("repo", ["postgresql"], indirect=True)
def test_postgresql_drops_connections_nothing_lost(
    repo: Repo, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    events = with_deletes(REPORTS.id, std_events(REPORTS.id), every=6)
    random.Random(3).shuffle(events)
    records = sink_records(REPORTS.id, events)
    sink = repo.sink(datasets=[REPORTS])
    batches = [records[i : i + 60] for i in range(0, len(records), 60)]

    # between batches: the pool's connection is dead; pre-ping replaces it
    assert _write_retrying(sink, batches[0]) == 0
    assert terminate_backends(postgres_url, repo.app_name) >= 1
    assert _write_retrying(sink, batches[1]) == 0

    # in the middle of a batch's transaction: a retriable error, then the same batch
    armed = {"on": 0}

    def kill_mid_batch(conn: sa.Connection, cursor: Any, statement: str, *args: Any) -> None:
        if armed["on"] and statement.lstrip().upper().startswith("INSERT"):
            armed["on"] -= 1
            terminate_backends(postgres_url, repo.app_name)

    sa.event.listen(repo.engine, "before_cursor_execute", kill_mid_batch)
    request.addfinalizer(
        lambda: sa.event.remove(repo.engine, "before_cursor_execute", kill_mid_batch)
    )
    failed = 0
    for batch in batches[2:]:
        armed["on"] = 1
        failed += _write_retrying(sink, batch)
    assert failed == len(batches) - 2  # every batch lost its connection once
    assert_matches_reference(repo, sink, REPORTS.id, events)


# ---- schema evolution ----------------------------------------------------------------


def schools_v2(extra: dict[str, Any]) -> dict[str, Any]:
    """A test-only next revision of the schools std schema: one more optional field."""
    envelope: dict[str, Any] = json.loads(load_schema(SCHOOLS.std_value_schema))
    for field in envelope["fields"]:
        if field["name"] == "before":
            record = next(b for b in field["type"] if isinstance(b, dict))
            record["fields"].append(extra)
    return envelope


def test_new_optional_field_adds_a_nullable_column_keeping_rows(repo: Repo) -> None:
    events = std_events(SCHOOLS.id)
    old, new = events[:50], events[50:]
    sink = repo.sink(datasets=[SCHOOLS])
    write_all(sink, SCHOOLS.id, old)
    v2 = schools_v2({"name": "website", "type": ["null", {"type": "string"}], "default": None})
    evolved = repo.sink(datasets=[SCHOOLS], schemas={SCHOOLS.id: [v2]})
    current, history = evolved.tables(SCHOOLS.id)
    with repo.engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in (current, history):
            cols = {c["name"]: c for c in inspector.get_columns(table.name, repo.db_schema)}
            assert cols["website"]["nullable"] is True
    new_v2 = [
        {**e, "after": {**e["after"], "website": f"https://s{i}.edu.vn"}} for i, e in enumerate(new)
    ]
    write_all(evolved, SCHOOLS.id, new_v2)
    # a producer already on a revision this sink has never seen: the column comes on the fly
    newest = [
        {
            **e,
            "event_id": uuid.uuid4(),
            "source": {**e["source"], "version": e["source"]["version"] + 100},
            "after": {**e["after"], "capacity": 900 + i},
        }
        for i, e in enumerate(old[:5])
    ]
    write_all(evolved, SCHOOLS.id, newest)
    rows = current_rows(repo, evolved, SCHOOLS.id)
    assert_matches_reference(repo, evolved, SCHOOLS.id, old + new_v2 + newest)
    untouched = [r for r in rows.values() if r["_version"] < 100 and r["website"] is None]
    assert untouched  # old rows kept, the new column NULL
    assert sorted(r["capacity"] for r in rows.values() if r["capacity"] is not None) == list(
        range(900, 905)
    )
    # the first sink learns the columns it did not know on its next setup
    sink.setup()
    assert {"website", "capacity"} <= set(sink.tables(SCHOOLS.id)[0].c.keys())


def test_setup_is_idempotent(repo: Repo) -> None:
    first = repo.sink()
    second = repo.sink()
    for dataset_id in (SCHOOLS.id, REPORTS.id):
        assert list(first.tables(dataset_id)[0].c.keys()) == list(
            second.tables(dataset_id)[0].c.keys()
        )


def _reusing(events: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An event of one school, and a change of another school under the same event id."""
    first = events[0]
    other = next(
        e for e in events if _key(SCHOOLS.id, e["after"]) != _key(SCHOOLS.id, first["after"])
    )
    reuser = copy.deepcopy(other)
    reuser["event_id"] = first["event_id"]
    reuser["source"]["version"] = other["source"]["version"] + 1
    return first, reuser


def test_an_event_id_reused_by_another_entity_is_refused_not_dropped(repo: Repo) -> None:
    events = std_events(SCHOOLS.id)
    first, reuser = _reusing(events)
    sink = repo.sink(datasets=[SCHOOLS])
    write_all(sink, SCHOOLS.id, events)
    before = current_rows(repo, sink, SCHOOLS.id)
    # In a later batch: refused with its reason; neither table changes.
    (refused,) = sink.write(sink_records(SCHOOLS.id, [reuser], first_offset=1000))
    assert (refused.reason, refused.exception_class) == ("event_id_reused", "Conflict")
    assert refused.record.value["after"]["school_name"] not in refused.message
    assert current_rows(repo, sink, SCHOOLS.id) == before
    assert_matches_reference(repo, sink, SCHOOLS.id, events)
    # A replay of the first event is no conflict: stored once, nothing refused.
    assert sink.write(sink_records(SCHOOLS.id, [first])) == []
    # In one batch with the event it collides with: the second is refused.
    fresh = repo.sink(datasets=[SCHOOLS])
    with repo.engine.begin() as conn:
        for table in fresh.tables(SCHOOLS.id):
            conn.execute(table.delete())
    rejected = fresh.write(sink_records(SCHOOLS.id, [first, reuser, first]))
    assert [(r.reason, r.record.offset) for r in rejected] == [("event_id_reused", 1)]
    assert history_ids(repo, fresh, SCHOOLS.id) == [str(first["event_id"])]


def test_record_by_record_the_reuse_is_refused_too(repo: Repo) -> None:
    events = std_events(SCHOOLS.id)
    first, reuser = _reusing(events)
    sink = repo.sink(datasets=[SCHOOLS])
    assert sink.write(sink_records(SCHOOLS.id, [first])) == []
    refused_school = next(
        e["after"]["school_id"]
        for e in events
        if e["after"]["school_id"]
        not in (first["after"]["school_id"], reuser["after"]["school_id"])
    )
    _refuse_schools(repo, sink, [refused_school])
    batch = [reuser, first, *(e for e in events if e["after"]["school_id"] == refused_school)]
    rejected = sink.write(sink_records(SCHOOLS.id, batch))  # refused as a batch: one by one
    reasons = {r.record.offset: r.reason for r in rejected}
    assert reasons[0] == "event_id_reused"
    assert 1 not in reasons, "the replay of the stored event is no conflict"
    assert set(reasons.values()) == {"event_id_reused", "db_rejected"}
    assert history_ids(repo, sink, SCHOOLS.id) == [str(first["event_id"])]
