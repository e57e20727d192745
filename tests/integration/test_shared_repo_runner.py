"""The SQL sink behind the real SinkRunner, broker and registry: rows the database
refuses land on ``sink.<name>.dlq.v1`` with their original bytes, the rest is stored
once, and the offsets are committed past all of them."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from bus_processes import read_topic
from confluent_kafka import Producer
from registry_clients import registry_client
from std_samples import std_events

from bus.settings import Settings, SinkSettings
from bus.topic_admin import TopicSpec, ensure_topics
from schemas.catalog import get_dataset, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.topics import sink_dlq_topic
from sinks.runner import SinkRunner
from sinks.shared_repo import SharedRepoSink, create_repo_engine

pytestmark = pytest.mark.integration

SCHOOLS = get_dataset("education.schools")
FAST = SinkSettings(backoff_initial_s=0.02, backoff_max_s=0.2)


def test_refused_rows_land_in_the_sink_dlq_and_the_rest_is_stored_once(
    stack_settings: Settings, registry_url: str, tmp_path: Path
) -> None:
    assert SCHOOLS.std_schema is not None
    topic = f"test.sql{uuid.uuid4().hex[:10]}.std.v1"
    assert ensure_topics(stack_settings, [TopicSpec(topic, 2)]) == [topic]
    registry = registry_client({"url": registry_url})
    serialize = AvroSerializer(registry, value_subject(topic), load_schema(SCHOOLS.std_schema))
    events = std_events(SCHOOLS.id)
    ids = sorted({e["after"]["school_id"] for e in events})
    refused = {ids[2], ids[11]}

    engine = create_repo_engine(f"sqlite:///{tmp_path / 'repo.sqlite'}")
    sink = SharedRepoSink(engine, datasets=[SCHOOLS])
    sink.setup()
    current, history = sink.tables(SCHOOLS.id)
    quoted = ", ".join(f"'{i}'" for i in sorted(refused))
    with engine.begin() as conn:  # the database refuses these schools (a rule of its own)
        for table in (current.name, history.name):
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                f"WHEN NEW.school_id IN ({quoted}) BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )

    producer = Producer({**stack_settings.kafka.client_config(), "enable.idempotence": True})
    payloads = [serialize(e) for e in events]
    for event, payload in zip(events, payloads, strict=True):
        producer.produce(topic, payload, key=event["after"]["school_id"].encode())
    assert producer.flush(15) == 0

    name = f"sqlrepo{uuid.uuid4().hex[:8]}"
    runner = SinkRunner(
        stack_settings.model_copy(update={"sink": FAST}),
        sink,
        name=name,
        topics=[topic],
        group=f"test-sql-{uuid.uuid4().hex[:8]}",
        registry=registry,
        batch_size=50,
    )
    expected_letters = [
        p for e, p in zip(events, payloads, strict=True) if e["after"]["school_id"] in refused
    ]
    to_store = len(events) - len(expected_letters)
    try:
        deadline = time.monotonic() + 60
        while runner.records_written < to_store:
            assert time.monotonic() < deadline, f"{runner.records_written} of {to_store} stored"
            runner.poll_once(timeout=0.2)
    finally:
        runner.close()

    with engine.connect() as conn:
        stored = set(conn.execute(sa.select(current.c.school_id)).scalars())
        logged = list(conn.execute(sa.select(history.c._event_id)).scalars())
    assert stored == set(ids) - refused
    assert len(logged) == len(set(logged)) == len(events) - len(expected_letters)
    letters = read_topic(stack_settings, sink_dlq_topic(name))
    assert sorted(m.value() for m in letters) == sorted(expected_letters)
    for m in letters:
        headers = dict(m.headers() or [])
        assert headers["databus.errors.reason"] == b"db_rejected"
        assert headers["databus.errors.stage"] == f"sink:{name}".encode()
        assert headers["__connect.errors.topic"] == topic.encode()
    engine.dispose()
