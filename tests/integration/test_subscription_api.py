"""The subscription API over real HTTP, broker and registry: tokens, policy, offsets, audit."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from std_samples import std_events

from bus.access_policy import parse_policy, token_hash
from bus.audit import AuditLog, verify
from bus.settings import Settings
from bus.topics import TopicSpec, ensure_topics
from schemas.catalog import DATASETS
from schemas.codec import AvroSerializer
from sinks.subscription_api import create_app
from stream_processors.share import mask_event, share_plan

pytestmark = pytest.mark.integration

KEY = b"api-test-pseudonym-key-0001"
COUNT = 30
DEADLINE_S = 60.0


def _publish_shared(settings: Settings, registry: SchemaRegistryClient, topic: str) -> set[str]:
    plan = share_plan(DATASETS["feedback.reports"], ("reporter_phone",), shared_topic=topic)
    ensure_topics(settings, [TopicSpec(topic, 2)])
    serialize = AvroSerializer(registry, plan.subject, plan.schema_str)
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    ids = set()
    for event in std_events("feedback.reports")[:COUNT]:
        shared = mask_event(plan, event, KEY)
        producer.produce(topic, value=serialize(shared), key=shared["after"]["report_id"].encode())
        ids.add(str(shared["event_id"]))
    assert producer.flush(30) == 0
    return ids


async def _read_all(client: TestClient[Any, Any], token: str, want: int) -> list[dict[str, Any]]:
    """Read in pages of 7 until ``want`` records came (or the deadline passed)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < want and time.monotonic() < deadline:
        resp = await client.get(
            "/datasets/feedback.reports/records?max=7",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200
        body = await resp.json()
        assert body["count"] == len(body["records"]) <= 7
        got += body["records"]
    return got


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_agencies_read_their_datasets_and_are_refused_the_rest(
    stack_settings: Settings, registry_url: str, tmp_path: Path
) -> None:
    registry = SchemaRegistryClient({"url": registry_url})
    tag = uuid.uuid4().hex[:8]
    topic = f"test.api{tag}.feedback_reports.shared.v1"
    ids = _publish_shared(stack_settings, registry, topic)
    token_a, token_b = f"token-a-{tag}-0123456789", f"token-b-{tag}-0123456789"
    a, b = f"a-{tag}", f"b-{tag}"
    policy = parse_policy(
        {
            "shared": {"feedback.reports": {"join_keys": ["reporter_phone"]}, "land.parcels": {}},
            "agencies": {
                a: {
                    "max_classification": "internal",
                    "datasets": ["feedback.reports"],
                    "token_sha256": token_hash(token_a),
                },
                b: {
                    "max_classification": "internal",
                    "datasets": ["feedback.reports", "land.parcels"],
                    "token_sha256": token_hash(token_b),
                },
            },
        }
    )
    audit = AuditLog(tmp_path / "audit.jsonl")
    app = create_app(
        stack_settings,
        policy,
        audit,
        registry=registry,
        topics={"feedback.reports": topic},
        wait_s=0.3,
    )

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            # no token, a wrong token: 401
            assert (await client.get("/datasets")).status == 401
            resp = await client.get("/datasets", headers={"Authorization": "Bearer nope"})
            assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]

            auth_a = {"Authorization": f"Bearer {token_a}"}
            listed = await (await client.get("/datasets", headers=auth_a)).json()
            assert [d["id"] for d in listed["datasets"]] == ["feedback.reports"]

            # outside its policy, shared to someone else or restricted or unknown: 403
            for outside in ("land.parcels", "health.encounters", "no.such"):
                resp = await client.get(f"/datasets/{outside}/records", headers=auth_a)
                assert resp.status == 403, outside

            bad = await client.get("/datasets/feedback.reports/records?max=0", headers=auth_a)
            assert bad.status == 400

            # each agency keeps its own offsets: A pages through once, B reads it all too
            got_a = await _read_all(client, token_a, COUNT)
            got_b = await _read_all(client, token_b, COUNT)
            for got in (got_a, got_b):
                assert len(got) == COUNT
                assert {r["value"]["event_id"] for r in got} == ids
            again = await client.get("/datasets/feedback.reports/records?max=5", headers=auth_a)
            assert (await again.json())["count"] == 0  # nothing new for A
            value = got_a[0]["value"]
            assert "reporter_phone" not in value["after"]
            assert isinstance(value["ts_ms"], str) and value["ts_ms"].startswith("20")

    asyncio.run(scenario())

    result = verify(audit.path)
    assert result.ok
    entries = _entries(audit.path)
    denied = [e for e in entries if e["outcome"] == "denied" and e["action"] == "api.read"]
    assert {(e["actor"], e["object"]) for e in denied} == {
        (a, "land.parcels"),
        (a, "health.encounters"),
        (a, "no.such"),
    }
    unauthenticated = [e for e in entries if e["action"] == "api.authenticate"]
    assert len(unauthenticated) == 2 and all(e["actor"] == "anonymous" for e in unauthenticated)
    granted = [e for e in entries if e["outcome"] == "granted"]
    assert sum(e["detail"]["records"] for e in granted if e["actor"] == a) == COUNT
    assert sum(e["detail"]["records"] for e in granted if e["actor"] == b) == COUNT
    assert token_a not in audit.path.read_text(encoding="utf-8")
