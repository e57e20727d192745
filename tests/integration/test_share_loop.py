"""The share loop against the real broker and registry: std -> masked shared topic."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import SecretStr
from registry_clients import registry_client
from std_samples import std_events

from bus.audit import AuditLog, verify
from bus.settings import AccessSettings, Settings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.dlq_replay import read_topics
from schemas.access_policy import load_policy
from schemas.catalog import DATASETS, load_schema, value_subject
from schemas.codec import AvroDeserializer, AvroSerializer
from stream_processors.share import HASH_SUFFIX, SharePlan, keyed_hash, share_plan
from stream_processors.share_loop import ShareLoop

pytestmark = pytest.mark.integration

KEY = "integration-pseudonym-key-42"
DATASETS_UNDER_TEST = ("feedback.reports", "land.parcels", "land.construction_permits")
DEADLINE_S = 60.0


def _plans(tag: str) -> list[SharePlan]:
    policy = load_policy()
    return [
        share_plan(
            DATASETS[ds],
            policy.shared[ds].join_keys,
            std_topic=f"test.share{tag}.{ds.replace('.', '_')}.std.v1",
            shared_topic=f"test.share{tag}.{ds.replace('.', '_')}.shared.v1",
        )
        for ds in DATASETS_UNDER_TEST
    ]


def _produce_std(
    settings: Settings, registry: SchemaRegistryClient, plan: SharePlan
) -> list[dict[str, Any]]:
    ds = plan.dataset
    events = std_events(ds.id)[:60]
    assert ds.std_schema is not None
    serialize = AvroSerializer(registry, value_subject(plan.std_topic), load_schema(ds.std_schema))
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    for event in events:
        key = ds.key_of(event["after"] or event["before"])
        producer.produce(plan.std_topic, value=serialize(event), key=key.encode())
    assert producer.flush(30) == 0
    return events


def test_a_shared_topic_never_carries_a_personal_value(
    stack_settings: Settings, registry_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = stack_settings.model_copy(
        update={"access": AccessSettings(pseudonym_key=SecretStr(KEY))}
    )
    registry = registry_client({"url": registry_url})
    plans = _plans(tag)
    ensure_topics(settings, [TopicSpec(p.std_topic, 2) for p in plans])
    sent = {p.dataset.id: _produce_std(settings, registry, p) for p in plans}
    total = sum(len(v) for v in sent.values())

    audit = AuditLog(tmp_path / "audit.jsonl")
    loop = ShareLoop(settings, plans, audit=audit, registry=registry, group=f"test-share-{tag}")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while loop.published < total and time.monotonic() < deadline:
            loop.poll_once(0.2)
    finally:
        loop.close()
    assert loop.published == total and loop.skipped == 0

    decode = AvroDeserializer(registry)
    key = KEY.encode()
    for plan in plans:
        personal = set(plan.dataset.personal_fields)
        secrets = {
            str(image[f])
            for event in sent[plan.dataset.id]
            for image in (event["before"], event["after"])
            if image
            for f in personal
            if image.get(f) not in (None, "")
        }
        assert secrets, plan.dataset.id  # the stream does carry personal values
        messages = list(read_topics(settings, [plan.shared_topic]))
        assert len(messages) == len(sent[plan.dataset.id])
        seen = set()
        for msg in messages:
            raw = msg.value() or b""
            for value in secrets:
                assert value.encode("utf-8") not in raw
            shared = decode(raw)
            seen.add(str(shared["event_id"]))
            for image in (shared["before"], shared["after"]):
                if image is None:
                    continue
                assert not personal & set(image)
                for field in plan.hashed:
                    digest = image[field + HASH_SUFFIX]
                    assert digest is None or len(digest) == 64
        assert seen == {str(e["event_id"]) for e in sent[plan.dataset.id]}
        by_id = {str(e["event_id"]): e for e in sent[plan.dataset.id]}
        for msg in messages:
            shared = decode(msg.value())
            original = by_id[str(shared["event_id"])]["after"]
            for field in plan.hashed:
                if shared["after"] and original.get(field) is not None:
                    assert shared["after"][field + HASH_SUFFIX] == keyed_hash(key, original[field])
        subject = registry.get_latest_version(plan.subject)
        assert subject.schema.schema_str is not None and "SharedEvent" in subject.schema.schema_str

    result = verify(audit.path)
    assert result.ok and result.lines >= len(plans)
