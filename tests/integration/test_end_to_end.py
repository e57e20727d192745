"""The dossier path end to end on real servers: Publisher → Faust → Redis.

A stack of its own (broker, registry, Redis) so other tests' records on the
catalog topics cannot change the expected figures. The processor and the sink
run as the real ``databus`` processes; the test publishes a generated history,
then checks every figure against an independent computation from the truth the
simulator recorded — not against the bus's own code paths.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import pytest
import redis
from bus_processes import Bus, own_bus, read_topic, wait_for
from confluent_kafka import Consumer, Producer, TopicPartition
from registry_clients import registry_client

from bus.kafka_client import producer_config
from producers.publisher import Publisher
from producers.simulators import (
    DossierEvent,
    DossierSpec,
    generate_dossiers,
    latest_truth,
    publish_records,
)
from schemas.catalog import ALERTS_TOPIC, DOSSIERS, load_schema
from schemas.codec import AvroDeserializer, AvroSerializer
from schemas.domain.reference import load_reference
from sinks.ioc.dossier_kpis import compute_unit_kpis
from sinks.ioc.store import read_unit_kpis

pytestmark = pytest.mark.integration

DS = "publicservice.dossiers"
OVERDUE_RULE = "dossier_overdue_rate"


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    # The replay sends the ~4 % invalid events again: the dead-letter share rule may then
    # rightly raise, which is not what "a replay changes nothing" is about. Off here;
    # it has its own tests (test_alert_rules_stats.py, test_processor_datasets.py).
    data_dir = tmp_path_factory.mktemp("e2e")
    default_rules = (files("stream_processors.alerts.rules") / "alert_rules.toml").read_text()
    head, sep, tail = default_rules.partition("[dead_letter_share]\nenabled = true")
    assert sep, "alert_rules.toml changed: update this test"
    rules = data_dir / "alert_rules.toml"
    rules.write_text(head + "[dead_letter_share]\nenabled = false" + tail)
    env = {"DATABUS_ALERTS__RULES_FILE": str(rules)}
    with own_bus(data_dir, with_redis=True, env=env) as b:
        b.start("processor", "process")
        b.start("sink", "sink", "ioc")
        yield b


@pytest.fixture(scope="module")
def history() -> list[DossierEvent]:
    return generate_dossiers(
        DossierSpec(days=21, units=12, dossiers_per_unit_per_day=2.0, seed=11), load_reference()
    )


def publish(bus: Bus, events: list[DossierEvent]) -> None:
    with Publisher(bus.settings, source_system="e2e-test") as publisher:
        publish_records(publisher, events)


def wait_until_processed(bus: Bus, published: int) -> None:
    """Wait on the processes' own (cumulative) counters: every stage handled its input."""

    def processor(sample: str) -> float:
        return bus.metric("processor", sample)

    std = f"databus_events_produced_total{{dataset={DS},stage=std}}"
    wait_for(
        f"the processor to standardize, dead-letter or drop {published} events",
        lambda: (
            processor(std)
            + processor("databus_events_dead_lettered_total")
            + processor("databus_events_dropped_total")
            >= published
        ),
    )
    # The sink commits only after a durable write: once its committed offsets reach
    # the end of every partition it reads, everything is in Redis.
    wait_for("the sink to commit the end of its topics", lambda: sink_caught_up(bus))


def overdue_alerts(bus: Bus) -> list[dict[str, Any]]:
    decode = AvroDeserializer(registry_client(bus.settings.schema_registry.client_config()))
    alerts = [decode(m.value()) for m in read_topic(bus.settings, ALERTS_TOPIC)]
    return [a for a in alerts if a["rule"] == OVERDUE_RULE]


def sink_caught_up(bus: Bus) -> bool:
    ends: dict[tuple[str, int], int] = {}
    for topic in (DOSSIERS.std_topic, ALERTS_TOPIC):
        for msg in read_topic(bus.settings, topic):
            key = (topic, msg.partition())
            ends[key] = max(ends.get(key, 0), msg.offset() + 1)
    probe = Consumer({**bus.settings.kafka.client_config(), "group.id": bus.settings.sink_group})
    try:
        committed = probe.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
    finally:
        probe.close()
    return all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in committed)


def test_dossiers_end_to_end_and_replay(
    bus: Bus,
    history: list[DossierEvent],
    redis_snapshot: Callable[[redis.Redis], dict[bytes, object]],
) -> None:
    valid = [e for e in history if e.expect_reason is None]
    invalid = [e for e in history if e.expect_reason is not None]
    # ~1,000 valid events; how many depends on how many working days the 21 days hold
    assert invalid and len(valid) > 800, "the generated history must hold both kinds"

    publish(bus, history)
    wait_until_processed(bus, len(history))

    # 1. KPIs in Redis equal the independent computation from the simulator's truth.
    client = redis.Redis.from_url(bus.settings.redis.url or "")
    now = datetime.now(UTC)
    expected = compute_unit_kpis(latest_truth(history), now)
    assert {k.unit_code: k for k in read_unit_kpis(client, now)} == expected

    # 2. The DLQ holds exactly the invalid events, each with its reason.
    dlq = read_topic(bus.settings, DOSSIERS.dlq_topic)
    dlq = [m for m in dlq if not dict(m.headers())["ce_id"].startswith(b"bad-")]  # other test
    got = {dict(m.headers())["ce_id"].decode(): dict(m.headers()) for m in dlq}
    assert set(got) == {e.event_id for e in invalid}
    for ev in invalid:
        headers = got[ev.event_id]
        assert headers["databus.errors.reason"].decode() == ev.expect_reason
        assert headers["__connect.errors.topic"].decode() == DOSSIERS.raw_topic
        assert headers["databus.errors.exception.message.vi"]
    by_id = {e.event_id: e for e in invalid}
    raw_bytes = {m.value() for m in dlq}
    assert len(raw_bytes) == len(invalid), "the DLQ keeps each original record once"
    assert Counter(by_id[i].expect_reason for i in got) == Counter(e.expect_reason for e in invalid)

    # 3. The designed-overdue units raised exactly one alert each; no other unit did.
    designed = {str(e.truth["receiving_unit_code"]) for e in valid if e.truth["overdue_unit"]}
    assert len(designed) == 3
    wait_for(
        "the overdue alerts of the designed units",
        lambda: {a["unit_code"] for a in overdue_alerts(bus)} >= designed,
        timeout=60,
    )
    wait_for("the sink to store the alerts", lambda: sink_caught_up(bus))
    alerts = overdue_alerts(bus)
    raised = Counter(a["unit_code"] for a in alerts if a["state"] == "RAISED")
    assert raised == Counter({unit: 1 for unit in designed})
    open_alerts = client.hgetall("ioc:{alerts}:open")
    open_overdue = [k for k, v in open_alerts.items() if OVERDUE_RULE.encode() in v]
    assert len(open_overdue) == 3

    # 4. A second run of the same events changes nothing in the store.
    before = redis_snapshot(client)
    alerts_before = len(read_topic(bus.settings, ALERTS_TOPIC))
    publish(bus, history)
    wait_until_processed(bus, 2 * len(history))
    assert redis_snapshot(client) == before
    assert len(read_topic(bus.settings, ALERTS_TOPIC)) == alerts_before
    assert {k.unit_code: k for k in read_unit_kpis(client, now)} == expected


def test_framing_errors_are_dead_lettered_with_original_bytes(
    bus: Bus, history: list[DossierEvent]
) -> None:
    registry = registry_client(bus.settings.schema_registry.client_config())
    ev = history[0]
    envelope = {
        "event_id": ev.event_id,
        "op": "c",
        "ts_ms": datetime.now(UTC),
        "source": {"system": "t", "unit": "t", "dataset": DS, "ts_ms": ev.at, "version": 1},
        "before": None,
        "after": ev.dossier.model_dump(mode="json"),
    }
    good = AvroSerializer(
        registry, f"{DOSSIERS.raw_topic}-value", load_schema(DOSSIERS.raw_schema)
    )(envelope)
    other = AvroSerializer(
        registry,
        "e2e.other.raw.v1-value",
        '{"type":"record","name":"Other","namespace":"e2e","fields":[{"name":"x","type":"long"}]}',
    )({"x": 1})
    cases = {
        "empty_value": b"",
        "truncated_header": b"\x00\x00",
        "bad_magic_byte": b"\x01" + good[1:],
        "unknown_schema_id": b"\x00\x00\x0f\x42\x3f" + good[5:],
        "truncated_payload": good[:-7],
        "trailing_bytes": good + b"\x00\x00",
        "wrong_schema": other,
    }
    dead_before = bus.metric("processor", "databus_events_dead_lettered_total")
    producer = Producer(producer_config(bus.settings))
    for reason, value in cases.items():
        producer.produce(
            DOSSIERS.raw_topic, key=b"k", value=value, headers=[("ce_id", f"bad-{reason}")]
        )
    assert producer.flush(30) == 0
    wait_for(
        "the processor to dead-letter the framing errors",
        lambda: (
            bus.metric("processor", "databus_events_dead_lettered_total")
            >= dead_before + len(cases)
        ),
    )
    dlq = {
        dict(m.headers())["ce_id"].decode(): m
        for m in read_topic(bus.settings, DOSSIERS.dlq_topic)
        if dict(m.headers())["ce_id"].startswith(b"bad-")
    }
    assert set(dlq) == {f"bad-{r}" for r in cases}
    for reason, value in cases.items():
        msg = dlq[f"bad-{reason}"]
        headers = dict(msg.headers())
        assert headers["databus.errors.reason"].decode() == reason
        assert headers["databus.errors.stage"] == b"decode"
        assert (msg.value() or b"") == value, "the DLQ keeps the original bytes"
