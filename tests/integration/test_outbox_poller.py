"""The outbox poller against the real broker and registry, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import SecretStr
from registry_clients import registry_client

from bus.settings import OutboxSettings, Settings
from bus.topic_admin import ensure_topics
from databus.outbox_cli import run_outbox
from producers.outbox import OutboxPoller, PollResult, create_outbox_table, outbox_table
from producers.publisher import Publisher
from producers.simulators import DossierSpec, generate_dossiers
from schemas.catalog import DOSSIERS
from schemas.codec import AvroDeserializer
from schemas.domain.reference import load_reference
from schemas.topics import bus_topics

pytestmark = pytest.mark.integration

TOPIC = DOSSIERS.raw_topic
SECRET_NAME = "Nguyễn Thị Bí Mật"
SECRET_ID = "079999000111"


@pytest.fixture(scope="module")
def settings(stack_settings: Settings) -> Settings:
    ensure_topics(stack_settings, bus_topics(stack_settings))
    return stack_settings


@pytest.fixture(scope="module")
def publisher(settings: Settings) -> Iterator[Publisher]:
    with Publisher(settings, source_system="outbox-test") as pub:
        yield pub


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'source.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    eng = sa.create_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def table(engine: sa.Engine) -> Iterator[sa.Table]:
    # A table of its own per test: the PostgreSQL database may be shared.
    t = create_outbox_table(engine, f"outbox_{uuid.uuid4().hex[:12]}")
    yield t
    t.drop(engine)


@pytest.fixture(scope="module")
def payloads() -> list[dict[str, Any]]:
    """48 valid dossier records (several events per dossier) in the simulator's order."""
    # days=3, units=3 at the default 2 dossiers a day yields ~25 events: raise the rate.
    # A fixed end (a Wednesday): "now" would put a weekend in the window on some days.
    end = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    config = DossierSpec(days=3, units=3, dossiers_per_unit_per_day=5.0, end=end)
    events = generate_dossiers(config, load_reference())
    assert len(events) >= 48
    return [{"op": ev.op.value, "record": ev.dossier.model_dump(mode="json")} for ev in events[:48]]


def fill(engine: sa.Engine, table: sa.Table, payloads: list[dict[str, Any]]) -> list[str]:
    """50 rows: the 48 valid ones with 2 invalid ones in between; returns the row ids."""
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(payloads):
        rows.append(
            {
                "id": uuid.uuid4(),
                "aggregatetype": DOSSIERS.id,
                "aggregateid": p["record"]["dossier_id"],
                "type": {"c": "created", "u": "updated"}.get(p["op"], p["op"]),
                "payload": p["record"],
            }
        )
        if i in (5, 30):  # invalid: personal data present, required fields missing
            bad = {
                "dossier_id": f"HS-BAD-{i}",
                "applicant_name": SECRET_NAME,
                "applicant_citizen_id": SECRET_ID,
                "status": "NOT_A_STATUS",
            }
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "aggregatetype": DOSSIERS.id,
                    "aggregateid": bad["dossier_id"],
                    "type": "u",
                    "payload": bad,
                }
            )
    with engine.begin() as conn:
        for r in rows:  # one by one: seq follows insertion order
            conn.execute(sa.insert(table).values(**r))
    assert len(rows) == 50
    return [str(r["id"]) for r in rows]


def consume(settings: Settings, wanted: set[str], expected: int) -> list[dict[str, Any]]:
    """Envelopes whose event id is in ``wanted``, read from the beginning with a fresh
    group, until ``expected`` of them arrived and the topic stayed quiet briefly."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"outbox-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    decode = AvroDeserializer(registry_client(settings.schema_registry.client_config()))
    partitions = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in sorted(partitions)])
    found: list[dict[str, Any]] = []
    consumed = 0
    deadline = time.monotonic() + 60
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                if len(found) >= expected and time.monotonic() - quiet_since > 0.5:
                    break
                continue
            quiet_since = time.monotonic()
            assert msg.error() is None, msg.error()
            consumed += 1
            envelope = decode(msg.value())
            envelope["event_id"] = str(envelope["event_id"])  # Avro logicalType uuid
            if envelope["event_id"] in wanted:
                assert msg.key() == envelope["after"]["dossier_id"].encode()
                headers = dict(msg.headers() or [])
                assert headers["ce_id"] == envelope["event_id"].encode()
                found.append(envelope)
    finally:
        consumer.close()
    assert len(found) >= expected, f"{len(found)} of {expected} found in {consumed} consumed"
    return found


def states(engine: sa.Engine, table: sa.Table) -> dict[str, tuple[bool, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.id, table.c.sent_at, table.c.error))
        return {str(r.id): (r.sent_at is not None, r.error) for r in rows}


def test_poller_sends_valid_rows_in_order_and_sets_invalid_ones_aside(
    engine: sa.Engine,
    table: sa.Table,
    publisher: Publisher,
    settings: Settings,
    payloads: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = fill(engine, table, payloads)
    poller = OutboxPoller(engine, publisher, table=table, batch_size=20)
    results = []
    with caplog.at_level(logging.DEBUG):
        while (result := poller.poll_once()) != PollResult():
            results.append(result)
    assert [r.sent + r.failed for r in results] == [20, 20, 10]
    assert sum(r.sent for r in results) == 48
    assert sum(r.failed for r in results) == 2

    marks = states(engine, table)
    refused = [i for i, (sent, error) in marks.items() if error is not None]
    assert len(refused) == 2
    assert all(not marks[i][0] for i in refused)
    assert all("status" in (marks[i][1] or "") for i in refused)
    valid_ids = [i for i in ids if i not in refused]
    assert all(marks[i] == (True, None) for i in valid_ids)
    assert SECRET_NAME not in caplog.text and SECRET_ID not in caplog.text
    assert "refused" in caplog.text

    envelopes = consume(settings, set(ids), expected=48)
    assert Counter(e["event_id"] for e in envelopes) == Counter(valid_ids)  # each exactly once
    by_key: dict[str, list[str]] = defaultdict(list)
    for e in envelopes:
        by_key[e["after"]["dossier_id"]].append(e["event_id"])
    expected_by_key: dict[str, list[str]] = defaultdict(list)
    for event_id, p in zip(valid_ids, payloads, strict=True):
        expected_by_key[p["record"]["dossier_id"]].append(event_id)
    assert by_key == expected_by_key  # outbox order per key
    assert any(len(v) > 1 for v in by_key.values())  # the order check means something
    for e, p in zip(
        sorted(envelopes, key=lambda e: valid_ids.index(e["event_id"])), payloads, strict=True
    ):
        assert e["op"] == p["op"]
        assert e["source"]["dataset"] == DOSSIERS.id
        assert e["after"]["dossier_id"] == p["record"]["dossier_id"]
    versions = [e["source"]["version"] for e in envelopes]
    for key_events in by_key.values():
        vs = [
            next(e["source"]["version"] for e in envelopes if e["event_id"] == i)
            for i in key_events
        ]
        assert vs == sorted(vs) and len(set(vs)) == len(vs)
    assert len(set(versions)) == 48

    # Drained: a second poll sends nothing and changes nothing.
    assert poller.poll_once() == PollResult()
    assert states(engine, table) == marks


class SimulatedCrash(Exception):
    pass


def test_crash_between_delivery_and_marking_resends_with_the_same_event_ids(
    engine: sa.Engine,
    table: sa.Table,
    publisher: Publisher,
    settings: Settings,
    payloads: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = fill(engine, table, payloads)
    crashing = OutboxPoller(engine, publisher, table=table, batch_size=100)

    def crash(*_args: object) -> None:
        raise SimulatedCrash("the process died after the broker acknowledged the batch")

    monkeypatch.setattr(crashing, "_mark", crash)
    with pytest.raises(SimulatedCrash):
        crashing.poll_once()
    assert all(mark == (False, None) for mark in states(engine, table).values())

    restarted = OutboxPoller(engine, publisher, table=table, batch_size=100)
    assert restarted.poll_once() == PollResult(sent=48, failed=2)
    assert restarted.poll_once() == PollResult()

    envelopes = consume(settings, set(ids), expected=96)
    counts = Counter(e["event_id"] for e in envelopes)
    refused = {i for i, (_s, error) in states(engine, table).items() if error is not None}
    assert len(refused) == 2
    assert counts == Counter({i: 2 for i in ids if i not in refused})  # at-least-once
    # Both copies of an event are the same event: a consumer keeps one by event_id.
    first: dict[str, dict[str, Any]] = {}
    for e in envelopes:
        if e["event_id"] in first:
            kept = first[e["event_id"]]
            assert (e["after"], e["source"]["version"]) == (
                kept["after"],
                kept["source"]["version"],
            )
        else:
            first[e["event_id"]] = e


def test_run_outbox_creates_the_table_and_drains_it(
    tmp_path: Path, settings: Settings, payloads: list[dict[str, Any]]
) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    outbox = OutboxSettings(url=SecretStr(url), table="unit_outbox", interval_s=0.05, batch_size=7)
    configured = settings.model_copy(update={"outbox": outbox})
    # First run: creates the table, finds nothing.
    assert run_outbox(configured, create_table=True, max_polls=1) == 0
    engine = sa.create_engine(url)
    try:
        table = outbox_table("unit_outbox")
        ids = fill(engine, table, payloads)
        assert run_outbox(configured, max_polls=10) == 0  # 50 rows / 7 a batch = 8 polls
        marks = states(engine, table)
    finally:
        engine.dispose()
    assert sum(sent for sent, _e in marks.values()) == 48
    assert sum(error is not None for _s, error in marks.values()) == 2
    consume(settings, set(ids), expected=48)
