"""The health axis sink behind the real SinkRunner, broker and registry: what the axis
refuses with a 4xx lands on ``sink.<name>.dlq.v1``, the rest arrives once."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from registry_clients import registry_client

from bus.settings import HealthAxisSettings, Settings, SinkSettings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.standins.health_receiver import HealthReceiver
from schemas.catalog import get_dataset, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.topics import sink_dlq_topic
from sinks.fhir import LOCAL_SYSTEMS as SYSTEMS
from sinks.health_axis import HealthAxisSink
from sinks.runner import SinkRunner

sys.path.insert(0, str(Path(__file__).parents[1]))
from databus_cli import run_databus
from std_samples import std_events

pytestmark = pytest.mark.integration

SECRET = "runner-test-secret"
DEADLINE_S = 60.0
FAST = SinkSettings(
    backoff_initial_s=0.02, backoff_max_s=0.2, breaker_fail_max=2, breaker_reset_timeout_s=0.1
)


@pytest.fixture
def receiver() -> Iterator[HealthReceiver]:
    with HealthReceiver(client_secret=SECRET) as axis:
        yield axis


def _dlq_records(settings: Settings, topic: str, n: int) -> list[dict[str, bytes]]:
    reader = Consumer({**settings.kafka.client_config(), "group.id": "unused"})
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got: list[dict[str, bytes]] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < n:
            assert time.monotonic() < deadline, f"only {len(got)} of {n} letters in {topic}"
            msg = reader.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            got.append({**dict(msg.headers() or []), "_value": msg.value() or b""})  # type: ignore[arg-type]
        assert reader.consume(10, 0.5) == []  # and nothing more
        return got
    finally:
        reader.close()


def test_a_4xx_lands_in_the_sink_dlq_the_rest_arrives_once(
    stack_settings: Settings, registry_url: str, receiver: HealthReceiver
) -> None:
    dataset = get_dataset("health.encounters")
    assert dataset.std_schema is not None
    topic = f"test.health{uuid.uuid4().hex[:10]}.std.v1"
    assert ensure_topics(stack_settings, [TopicSpec(topic, 1)]) == [topic]
    registry = registry_client({"url": registry_url})
    serialize = AvroSerializer(registry, value_subject(topic), load_schema(dataset.std_schema))
    events = std_events("health.encounters")[:60]
    refused = {events[7]["after"]["encounter_id"], events[41]["after"]["encounter_id"]}
    receiver.reject(refused, status=422)
    # the axis is also down for a moment: the runner holds the batch and retries
    receiver.fail(503, count=2)

    producer = Producer({**stack_settings.kafka.client_config(), "enable.idempotence": True})
    payloads = [serialize(event) for event in events]
    for event, payload in zip(events, payloads, strict=True):
        producer.produce(topic, payload, key=event["after"]["encounter_id"].encode())
    assert producer.flush(15) == 0

    name = f"healthaxis{uuid.uuid4().hex[:8]}"
    sink = HealthAxisSink(
        HealthAxisSettings(
            url=receiver.url,
            # pydantic turns a str into SecretStr; without its mypy plugin mypy cannot tell
            client_secret=SECRET,  # type: ignore[arg-type]
            pseudonym_key="pseudonym-key-runner-test",  # type: ignore[arg-type]
            rate_per_s=1000,
        )
    )
    runner = SinkRunner(
        stack_settings.model_copy(update={"sink": FAST}),
        sink,
        name=name,
        topics=[topic],
        group=f"test-health-{uuid.uuid4().hex[:8]}",
        registry=registry,
    )
    try:
        stored = {e["after"]["encounter_id"] for e in events} - refused
        deadline = time.monotonic() + DEADLINE_S
        while len(receiver.resources("Encounter")) < len(stored):
            assert time.monotonic() < deadline, "the runner did not deliver in time"
            runner.poll_once(timeout=0.2)
        letters = _dlq_records(stack_settings, sink_dlq_topic(name), len(refused))
    finally:
        runner.close()

    for encounter_id in stored:
        assert len(receiver.find("Encounter", SYSTEMS["encounter"], encounter_id)) == 1
    for encounter_id in refused:
        assert receiver.find("Encounter", SYSTEMS["encounter"], encounter_id) == []
    assert receiver.stats()["injected_failures"] == 2
    refused_payloads = {
        payloads[i] for i, e in enumerate(events) if e["after"]["encounter_id"] in refused
    }
    assert {letter["_value"] for letter in letters} == refused_payloads
    for letter in letters:
        assert letter["databus.errors.reason"] == b"http_4xx"
        assert letter["databus.errors.stage"] == f"sink:{name}".encode()
        assert letter["__connect.errors.exception.message"].startswith(b"HTTP 422")
        assert letter["__connect.errors.topic"] == topic.encode()


def test_sink_health_refuses_local_identifier_systems_in_production(tmp_path: Path) -> None:
    axis = {
        "DATABUS_HEALTH_AXIS__URL": "https://axis.example.org/fhir",
        "DATABUS_HEALTH_AXIS__CLIENT_SECRET": SECRET,
        "DATABUS_HEALTH_AXIS__PSEUDONYM_KEY": "p" * 20,
        "DATABUS_HEALTH_AXIS__SYSTEMS__FACILITY": "https://ministry.example.org/sid/facility",
    }
    result = run_databus(tmp_path, "sink", "health", **axis)
    out = " ".join((result.stdout + result.stderr).split())  # rich wraps long lines
    assert result.returncode == 2, out
    assert "DATABUS_HEALTH_AXIS__SYSTEMS__ENCOUNTER" in out, out
    assert "DATABUS_HEALTH_AXIS__SYSTEMS__FACILITY," not in out, out
    assert "Traceback" not in out and SECRET not in out, out
