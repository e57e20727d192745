"""Every topic the bus writes carries CloudEvents (Kafka binding, binary mode), read
with the CloudEvents SDK: raw, std, dlq, alerts, quality, shared and the control topics.

A stack of its own and one real ``databus process`` worker; the share loop runs here
over the std topics it wrote. The simulators publish valid and invalid histories of two
shared datasets (one of them drives the air-quality alert up and down); a raw record
without any header is dead-lettered too; a source declares a figure; one letter is
replayed. Each record must parse with ``cloudevents.core.bindings.kafka.from_binary``,
(source, id) must be unique per topic, and a derived event (std, shared) must carry its
own id, the bus as source, the original's id in ``originid`` and a ``dataschema``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from bus_processes import Bus, own_bus, read_topic, wait_for
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import Producer
from pydantic import SecretStr

from bus.settings import AccessSettings
from databus.dlq_replay import read_letters, send_letters
from producers.declarations import declare
from producers.publisher import Publisher
from producers.simulators import SimRecord, SimSpec, generate_dataset, publish_records
from schemas.access_policy import load_policy
from schemas.catalog import ALERTS_TOPIC, QUALITY_TOPIC, get_dataset
from schemas.dead_letters import CONNECT_PREFIX, REPLAYS_TOPIC
from schemas.domain.reference import load_reference
from schemas.topics import DECLARATIONS_TOPIC
from stream_processors.share_loop import ShareLoop, policy_plans

pytestmark = pytest.mark.integration

AQI = "environment.station_readings"
FEEDBACK = "feedback.reports"
STATION = "TEST-CE-STATION-01"
DATASCHEMA = re.compile(r"^urn:databus:schema:[\w.\-]+-value:\d+$")


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    env = {"DATABUS_ALERTS__EVALUATE_EVERY_S": "1"}
    with own_bus(tmp_path_factory.mktemp("cloudevents"), env=env) as b:
        b.start("processor", "process")
        yield b


def event_of(msg: Any) -> BaseCloudEvent:
    """The consumed record as the CloudEvents SDK reads it (binary mode)."""
    headers: dict[str, bytes] = {}
    for name, value in msg.headers() or []:
        headers.setdefault(name, value or b"")  # a repeated header: its first value
    return from_binary(KafkaMessage(headers, msg.key(), msg.value() or b""), JSONFormat())


def events(bus: Bus, topic: str) -> list[BaseCloudEvent]:
    found = [event_of(m) for m in read_topic(bus.settings, topic)]
    assert found, f"{topic}: no record"
    for e in found:
        assert e.get_specversion() == "1.0", topic
        assert e.get_id() and e.get_source() and e.get_type(), topic
        when = e.get_time()
        assert when is not None and when.tzinfo is not None, topic
        assert e.get_datacontenttype(), topic
    ids = [(e.get_source(), e.get_id()) for e in found]
    assert len(ids) == len(set(ids)), f"{topic}: (source, id) must be unique per event"
    return found


def reading(template: SimRecord, at: datetime, aqi: int) -> object:
    local = at.astimezone(UTC) + timedelta(hours=7)
    return template.record.model_copy(
        update={
            "station_id": STATION,
            "reading_time": local.strftime("%Y-%m-%dT%H:%M:%S+07:00"),
            "aqi": aqi,
        }
    )


def test_every_topic_the_bus_writes_is_read_as_cloudevents(bus: Bus) -> None:
    ref = load_reference()
    spec = SimSpec(days=1, per_day=8, seed=5, invalid_share=0.25)
    records = [r for ds in (AQI, FEEDBACK) for r in generate_dataset(ds, spec, ref)]
    template = next(
        r
        for r in records
        if r.dataset_id == AQI and r.expect_reason is None and getattr(r.record, "aqi", None)
    )
    aqi, feedback = get_dataset(AQI), get_dataset(FEEDBACK)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=8)
    with Publisher(bus.settings, source_system="cloudevents-test") as pub:
        publish_records(pub, records)
        for i, level in enumerate([180, 190, 185, 60, 55, 50]):
            at = start + timedelta(hours=i)
            pub.publish(aqi, reading(template, at, level), version=1, changed_at=at)  # type: ignore[arg-type]
    # A record no Publisher wrote: no header at all, not Avro either.
    producer = Producer(bus.settings.kafka.client_config())
    producer.produce(feedback.raw_topic, key=b"hand-made", value=b'{"not": "avro"}')
    assert producer.flush(30) == 0
    declare(bus.settings, FEEDBACK, "DNA.STP", date(2026, 3, 1), 7, source_system="ce-test")

    invalid = sum(r.expect_reason is not None for r in records) + 1
    wait_for(
        "every event standardized or dead-lettered",
        lambda: (
            bus.metric("processor", "databus_events_produced_total")
            + bus.metric("processor", "databus_events_dead_lettered_total")
            >= len(records) + 7
        ),
        timeout=120,
    )

    # raw: the sources' events, ids as the Publisher made them
    raw_ids = {
        e.get_id()
        for ds in (aqi, feedback)
        for m in read_topic(bus.settings, ds.raw_topic)
        if m.headers()
        for e in [event_of(m)]
    }

    # std: derived events, each its own id, the origin in originid
    for ds in (aqi, feedback):
        for e in events(bus, ds.std_topic):
            assert e.get_source() == "urn:databus:processor"
            assert e.get_id() not in raw_ids
            assert e.get_extension("originid") in raw_ids
            assert DATASCHEMA.match(e.get_dataschema() or ""), e.get_dataschema()
            assert str(e.get_dataschema()).startswith(f"urn:databus:schema:{ds.std_topic}-value:")
            assert e.get_type().startswith(f"vn.gov.databus.{ds.id}.std.")

    # dlq: the original event, with Connect's error headers beside it
    wait_for(
        "every invalid event dead-lettered",
        lambda: (
            len(read_topic(bus.settings, feedback.dlq_topic))
            + len(read_topic(bus.settings, aqi.dlq_topic))
            >= invalid
        ),
    )
    letters = [m for ds in (aqi, feedback) for m in read_topic(bus.settings, ds.dlq_topic)]
    for ds in (aqi, feedback):
        events(bus, ds.dlq_topic)
    for m in letters:
        headers = dict(m.headers())
        assert headers[CONNECT_PREFIX + "topic"] in (
            aqi.raw_topic.encode(),
            feedback.raw_topic.encode(),
        )
        assert headers[CONNECT_PREFIX + "connector.name"] == b"databus-processor"
        assert headers["databus.errors.reason"]
    hand_made = next(m for m in letters if m.key() == b"hand-made")
    made = event_of(hand_made)
    assert made.get_source() == "urn:databus:processor"
    assert made.get_type() == "vn.gov.databus.deadletter"
    assert made.get_data() == '{"not": "avro"}'
    assert dict(hand_made.headers())[CONNECT_PREFIX + "stage"] == b"VALUE_CONVERTER"
    for m in letters:
        if m.key() != b"hand-made":
            assert event_of(m).get_id() in raw_ids  # the same event, dead-lettered

    # alerts and quality: the processor's Faust stages
    def alert_events() -> list[BaseCloudEvent]:
        return [e for e in events(bus, ALERTS_TOPIC) if STATION in (e.get_subject() or "")]

    wait_for(
        "the alert raised and resolved",
        lambda: (
            bool(read_topic(bus.settings, ALERTS_TOPIC))
            and {e.get_type() for e in alert_events()}
            >= {"vn.gov.databus.alert.raised", "vn.gov.databus.alert.resolved"}
        ),
        timeout=120,
    )
    for e in events(bus, ALERTS_TOPIC):
        assert e.get_source() == "urn:databus:alerts"
        assert DATASCHEMA.match(e.get_dataschema() or ""), e.get_dataschema()
    wait_for("quality reports", lambda: bool(read_topic(bus.settings, QUALITY_TOPIC)))
    for e in events(bus, QUALITY_TOPIC):
        assert e.get_source() == "urn:databus:quality"
        assert "|" in str(e.get_subject())
        assert DATASCHEMA.match(e.get_dataschema() or ""), e.get_dataschema()

    # shared: the share loop over the std topics the processor wrote
    settings = bus.settings.model_copy(
        update={"access": AccessSettings(pseudonym_key=SecretStr("ce-test-pseudonym-key"))}
    )
    plans = [p for p in policy_plans(load_policy()) if p.dataset.id in (AQI, FEEDBACK)]
    std_total = sum(len(read_topic(bus.settings, p.std_topic)) for p in plans)
    loop = ShareLoop(settings, plans, group="ce-test-share")
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    try:
        while loop.published < std_total and datetime.now(UTC) < deadline:
            loop.poll_once(0.2)
    finally:
        loop.close()
    assert loop.published == std_total
    std_ids = {e.get_id() for p in plans for e in events(bus, p.std_topic)}
    for p in plans:
        for e in events(bus, p.shared_topic):
            assert e.get_source() == "urn:databus:share"
            assert e.get_extension("originid") in std_ids
            assert e.get_id() not in std_ids
            schema = str(e.get_dataschema())
            assert schema.startswith(f"urn:databus:schema:{p.shared_topic}-value:")

    # control topics: a declaration and a replay's record
    [declared] = events(bus, DECLARATIONS_TOPIC)
    assert declared.get_type() == "vn.gov.databus.control.declaration"
    assert declared.get_source() == "/databus/ce-test/DNA.STP"
    assert declared.get_subject() == f"{FEEDBACK}|DNA.STP|2026-03-01"
    assert DATASCHEMA.match(declared.get_dataschema() or "")
    letter = next(lt for lt in read_letters(bus.settings, [feedback]) if lt.key != b"hand-made")
    outcome = send_letters(bus.settings, feedback, [letter])
    assert outcome.sent == {letter.view.letter_id}
    [marker] = events(bus, REPLAYS_TOPIC)
    assert marker.get_source() == "urn:databus:dlq-replay"
    assert marker.get_subject() == letter.view.letter_id
    assert marker.get_datacontenttype() == "application/json"
