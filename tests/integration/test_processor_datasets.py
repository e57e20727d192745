"""Every sector dataset through the real processor: exact std and DLQ content, and an
alert raised and resolved as designed.

A stack of its own and one ``databus process`` worker. The simulators publish mixed
valid and invalid histories for all 16 sector datasets; each valid event must reach
its std topic once and each invalid one its DLQ with the simulator's reason. Then a
station's air quality is driven above the alert level for three readings and back
below it for three: the ``air_quality_aqi`` alert is raised once and resolved once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from bus_processes import Bus, own_bus, read_topic, wait_for
from registry_clients import registry_client

from producers.publisher import Publisher
from producers.simulators import SIMULATORS, SimRecord, SimSpec, generate_dataset, publish_records
from schemas.catalog import ALERTS_TOPIC, QUALITY_TOPIC, get_dataset
from schemas.codec import AvroDeserializer
from schemas.domain.reference import load_reference

pytestmark = pytest.mark.integration

AQI_DS = "environment.station_readings"
STATION = "TEST-AQI-STATION-01"


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    # Re-evaluate every second so a quality report and wall-clock checks come quickly.
    env = {"DATABUS_ALERTS__EVALUATE_EVERY_S": "1"}
    with own_bus(tmp_path_factory.mktemp("datasets"), env=env) as b:
        b.start("processor", "process")
        yield b


@pytest.fixture(scope="module")
def records() -> list[SimRecord]:
    ref = load_reference()
    spec = SimSpec(days=2, per_day=12, seed=17, invalid_share=0.1)
    return [r for ds in SIMULATORS for r in generate_dataset(ds, spec, ref)]


def ce_ids(bus: Bus, topic: str) -> list[str]:
    return [dict(m.headers())["ce_id"].decode() for m in read_topic(bus.settings, topic)]


def origin_ids(bus: Bus, topic: str) -> list[str]:
    """The source events' ids of a topic of derived events (std): ``ce_originid``."""
    return [dict(m.headers())["ce_originid"].decode() for m in read_topic(bus.settings, topic)]


def test_every_dataset_standardized_or_dead_lettered_exactly(
    bus: Bus, records: list[SimRecord]
) -> None:
    with Publisher(bus.settings, source_system="datasets-test") as pub:
        publish_records(pub, records)
    datasets = sorted({r.dataset_id for r in records})
    assert datasets == sorted(SIMULATORS)  # every dataset of the catalog, dossiers too
    wait_for(
        "the processor to standardize or dead-letter every event",
        lambda: (
            bus.metric("processor", "databus_events_produced_total")
            + bus.metric("processor", "databus_events_dead_lettered_total")
            >= len(records)
        ),
        timeout=120,
    )
    for dataset_id in datasets:
        ds = get_dataset(dataset_id)
        mine = [r for r in records if r.dataset_id == dataset_id]
        valid = sorted(r.event_id for r in mine if r.expect_reason is None)
        invalid = {r.event_id: r.expect_reason for r in mine if r.expect_reason is not None}
        assert sorted(origin_ids(bus, ds.std_topic)) == valid, dataset_id
        dlq = read_topic(bus.settings, ds.dlq_topic)
        letters = {
            dict(m.headers())["ce_id"].decode(): dict(m.headers())["databus.errors.reason"].decode()
            for m in dlq
        }
        assert letters == invalid, dataset_id
        assert len(dlq) == len(invalid), f"{dataset_id}: each letter once"

    # Quality reports for the datasets, with validity below 1 where there were defects.
    decode = AvroDeserializer(registry_client(bus.settings.schema_registry.client_config()))

    def reports() -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for m in read_topic(bus.settings, QUALITY_TOPIC):
            out[(m.key() or b"").decode()] = decode(m.value())
        return out

    wait_for(
        "quality reports for every dataset", lambda: len({k.split("|")[0] for k in reports()}) >= 16
    )
    by_dataset = Counter(k.split("|")[0] for k in reports())
    assert set(by_dataset) >= set(datasets)


def reading(template: SimRecord, at: datetime, aqi: int) -> object:
    record = template.record
    local = at.astimezone(UTC) + timedelta(hours=7)
    return record.model_copy(
        update={
            "station_id": STATION,
            "reading_time": local.strftime("%Y-%m-%dT%H:%M:%S+07:00"),
            "aqi": aqi,
        }
    )


def test_air_quality_alert_raised_then_resolved(bus: Bus, records: list[SimRecord]) -> None:
    template = next(
        r
        for r in records
        if r.dataset_id == AQI_DS
        and r.expect_reason is None
        and getattr(r.record, "aqi", None) is not None
    )
    ds = get_dataset(AQI_DS)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=8)
    levels = [180, 190, 185, 60, 55, 50]
    with Publisher(bus.settings, source_system="datasets-test") as pub:
        for i, aqi in enumerate(levels):
            at = start + timedelta(hours=i)
            pub.publish(ds, reading(template, at, aqi), version=1, changed_at=at)  # type: ignore[arg-type]
    decode = AvroDeserializer(registry_client(bus.settings.schema_registry.client_config()))

    def states() -> list[str]:
        return [
            a["state"]
            for a in (decode(m.value()) for m in read_topic(bus.settings, ALERTS_TOPIC))
            if a["rule"] == "air_quality_aqi" and a.get("subject") == STATION
        ]

    wait_for(
        "the station's alert to be raised and resolved", lambda: "RESOLVED" in states(), timeout=120
    )
    seen = states()
    assert seen[0] == "RAISED" and seen[-1] == "RESOLVED", seen
    assert seen.count("RAISED") == 1 and seen.count("RESOLVED") == 1, seen
