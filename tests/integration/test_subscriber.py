"""The agencies' Subscriber against the real broker: typed records, commit after handling."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import BaseModel
from registry_clients import registry_client
from std_samples import std_events

from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from schemas.catalog import DATASETS
from schemas.codec import AvroSerializer
from sinks.subscriber import SharedEvent, Subscriber
from stream_processors.share import mask_event, share_plan

pytestmark = pytest.mark.integration

KEY = b"subscriber-test-pseudonym-key"
COUNT = 20
PARTITIONS = 2


class ReportView(BaseModel):
    """What an agency declares of a report: only the fields it needs."""

    report_id: str
    reporter_phone_hash: str | None = None


def _publish_shared(settings: Settings, registry: SchemaRegistryClient, topic: str) -> set[str]:
    plan = share_plan(DATASETS["feedback.reports"], ("reporter_phone",), shared_topic=topic)
    ensure_topics(settings, [TopicSpec(topic, PARTITIONS)])
    serialize = AvroSerializer(registry, plan.subject, plan.schema_str)
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    ids = set()
    for event in std_events("feedback.reports")[:COUNT]:
        shared = mask_event(plan, event, KEY)
        producer.produce(topic, value=serialize(shared), key=shared["after"]["report_id"].encode())
        ids.add(str(shared["event_id"]))
    assert producer.flush(30) == 0
    return ids


def _committed(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def test_records_are_typed_and_committed_after_the_handler(
    stack_settings: Settings, registry_url: str
) -> None:
    registry = registry_client({"url": registry_url})
    tag = uuid.uuid4().hex[:8]
    topic = f"test.sub{tag}.feedback_reports.shared.v1"
    ids = _publish_shared(stack_settings, registry, topic)
    assert len(ids) == COUNT

    seen: list[str] = []
    events: list[SharedEvent[ReportView]] = []
    failed: list[str] = []
    all_done = threading.Event()
    stop = threading.Event()

    def handle(event: SharedEvent[ReportView]) -> None:
        assert isinstance(event.after, ReportView)
        rid = event.event_id
        if len(seen) == 5 and not failed:
            failed.append(rid)
            raise RuntimeError("the agency's database is down")
        seen.append(rid)
        events.append(event)
        if ids <= set(seen):
            all_done.set()

    sub: Subscriber[ReportView] = Subscriber(
        stack_settings,
        f"agency-{tag}",
        "feedback.reports",
        handle,
        model=ReportView,
        topic=topic,
        registry=registry,
        retry_s=0.05,
    )
    assert sub.group == f"agency.agency-{tag}.feedback.reports"
    worker = threading.Thread(target=sub.run, args=(stop,))
    worker.start()
    try:
        assert all_done.wait(60), f"handled {len(set(seen))} of {COUNT}"
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert set(seen) == ids
    assert failed and failed[0] in seen  # the failed record came again
    assert sub.failures == 1
    hashes = [e.after.reporter_phone_hash for e in events if e.after is not None]
    assert all(h is None or len(h) == 64 for h in hashes)
    assert all(e.source.dataset == "feedback.reports" and e.topic == topic for e in events)
    assert _committed(stack_settings, sub.group, topic) == COUNT


def test_without_a_model_records_are_dicts(stack_settings: Settings, registry_url: str) -> None:
    registry = registry_client({"url": registry_url})
    tag = uuid.uuid4().hex[:8]
    topic = f"test.sub{tag}.feedback_reports.shared.v1"
    ids = _publish_shared(stack_settings, registry, topic)
    got: list[SharedEvent[dict[str, Any]]] = []
    sub: Subscriber[dict[str, Any]] = Subscriber(
        stack_settings,
        f"plain-{tag}",
        "feedback.reports",
        got.append,
        topic=topic,
        registry=registry,
    )
    deadline = time.monotonic() + 60
    try:
        while len(got) < COUNT and time.monotonic() < deadline:
            sub.poll_once(0.2)
    finally:
        sub.close()
    assert {g.event_id for g in got} == ids
    records = [g.after for g in got if g.after is not None]
    assert all("reporter_phone" not in r and "reporter_phone_hash" in r for r in records)
