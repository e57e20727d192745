"""The CloudEvents headers of the processor's own events: alerts and quality reports.
Deterministic (deciding or scoring again after a crash gives the same id), one id per
distinct event, parsed back with the CloudEvents SDK."""

from __future__ import annotations

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from stream_processors.alerts.lifecycle import alert_headers
from stream_processors.quality import quality_headers

SCHEMA = "urn:databus:schema:alerts.v1-value:1"
NOW = 1_772_352_000_000


def test_alert_ids_are_per_alert_state_and_decision_time() -> None:
    raised = {"alert_id": "air_quality_aqi:ST-1:1", "state": "RAISED"}
    first = dict(alert_headers(raised, NOW, SCHEMA))
    assert first == dict(alert_headers(raised, NOW, SCHEMA))
    updated = dict(alert_headers({**raised, "state": "UPDATED"}, NOW, SCHEMA))
    later = dict(alert_headers(raised, NOW + 1, SCHEMA))
    assert len({first["ce_id"], updated["ce_id"], later["ce_id"]}) == 3
    event = from_binary(KafkaMessage(first, b"k", b"\x00"), JSONFormat())
    assert event.get_source() == "urn:databus:alerts"
    assert event.get_type() == "vn.gov.databus.alert.raised"
    assert event.get_subject() == "air_quality_aqi:ST-1:1"
    assert event.get_dataschema() == SCHEMA


def test_quality_ids_are_per_dataset_unit_and_scoring_time() -> None:
    one = dict(quality_headers("land.parcels", "DNA.STP", NOW, SCHEMA))
    assert one == dict(quality_headers("land.parcels", "DNA.STP", NOW, SCHEMA))
    others = {
        dict(quality_headers("land.parcels", "HCM.STP", NOW, SCHEMA))["ce_id"],
        dict(quality_headers("land.parcels", "DNA.STP", NOW + 1, SCHEMA))["ce_id"],
    }
    assert one["ce_id"] not in others and len(others) == 2
    event = from_binary(KafkaMessage(one, b"k", b"\x00"), JSONFormat())
    assert (event.get_source(), event.get_subject()) == (
        "urn:databus:quality",
        "land.parcels|DNA.STP",
    )
