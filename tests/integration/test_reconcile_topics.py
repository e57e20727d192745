"""Reconciliation on real topics: declarations vs the raw and dead-letter topics."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import cast

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bus.consumers import take
from bus.kafka_client import producer_config
from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.reconcile import count_topics
from producers.declarations import declare
from producers.publisher import Publisher
from producers.simulators import SimSpec, generate_dataset
from schemas.catalog import DATASETS
from schemas.domain.delivery import ReconRow, reconcile
from schemas.topics import DECLARATIONS_TOPIC, bus_topics

pytestmark = pytest.mark.integration

DS = "health.encounters"
DAY = date(2026, 11, 20)
NEXT = date(2026, 11, 21)


def raw_values(settings: Settings, topic: str, event_ids: set[str]) -> dict[str, bytes]:
    """The raw bytes of the given events, read back from the topic (by `ce_id`)."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"recon-test-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    found: dict[str, bytes] = {}
    eof: set[int] = set()
    while len(eof) < len(parts):
        for msg in take(consumer, 500, 1.0):
            if msg.error():
                eof.add(msg.partition() or 0)
                continue
            ce_id = dict(cast(list[tuple[str, bytes]], msg.headers() or [])).get("ce_id")
            if ce_id is not None and ce_id.decode() in event_ids:
                found[ce_id.decode()] = msg.value() or b""
    consumer.close()
    return found


def test_declared_received_dead_lettered(stack_settings: Settings) -> None:
    ensure_topics(stack_settings, [TopicSpec(DECLARATIONS_TOPIC, 1), *bus_topics(stack_settings)])
    ds = DATASETS[DS]
    unit = f"TEST.{uuid.uuid4().hex[:12]}"
    records = [
        r
        # a week: whatever today is, it holds working days (encounters are few on weekends)
        for r in generate_dataset(DS, SimSpec(days=7, per_day=10, seed=3))
        if r.expect_reason is None
    ][:6]
    assert len(records) == 6
    # 09:00 local on DAY, then an hour apart: five events on DAY...
    base = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    with Publisher(stack_settings, source_system="recon-test") as publisher:
        ids = [
            publisher.publish(
                ds, r.record, version=1, changed_at=base + timedelta(hours=i), unit=unit
            )
            for i, r in enumerate(records[:5])
        ]
        # ...one re-sent (same event id: counts once)...
        publisher.publish(
            ds, records[0].record, version=1, changed_at=base, unit=unit, event_id=ids[0]
        )
        # ...and one at 01:00 local on the next day, for which nothing is declared.
        publisher.publish(
            ds,
            records[5].record,
            version=1,
            changed_at=datetime(2026, 11, 20, 18, 0, tzinfo=UTC),
            unit=unit,
        )
        publisher.flush()

    # Two events dead-lettered (original bytes, as the processor writes them) — one of
    # them twice, as a replay would — plus bytes that are no event at all.
    raw = raw_values(stack_settings, ds.raw_topic, {ids[1], ids[2]})
    assert set(raw) == {ids[1], ids[2]}
    producer = Producer(producer_config(stack_settings))
    for value in (raw[ids[1]], raw[ids[2]], raw[ids[2]], b"\x00garbage"):
        producer.produce(ds.dlq_topic, key=b"k", value=value)
    assert producer.flush(30) == 0

    declare(stack_settings, DS, unit, DAY, 9, source_system="recon-test")
    declare(stack_settings, DS, unit, DAY, 6, source_system="recon-test")  # the correction

    counts = count_topics(stack_settings, [DS], DAY, NEXT)
    rows = [
        r
        for r in reconcile(counts.declared, counts.received, counts.dead_lettered)
        if r.unit == unit
    ]
    assert rows == [
        ReconRow(
            DS, unit, DAY, declared=6, received=5, dead_lettered=2, missing=1, status="missing"
        ),
        ReconRow(DS, unit, NEXT, None, 1, 0, None, "undeclared"),
    ]
    assert counts.undecodable[ds.dlq_topic] >= 1

    # The day filter leaves the other day out.
    only_day = count_topics(stack_settings, [DS], DAY, DAY)
    assert {k for k in only_day.received if k[1] == unit} == {(DS, unit, DAY)}
