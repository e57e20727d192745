"""The CloudEvents header builder (schemas.headers): new events, derived events (their
own deterministic id, the origin in ``ce_originid``), completed ones; each parsed back
with the CloudEvents SDK's Kafka binding."""

from __future__ import annotations

import uuid

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from schemas.headers import (
    DERIVED_NAMESPACE,
    ORIGINID_HEADER,
    PROCESSOR_SOURCE,
    SHARE_SOURCE,
    cloudevent,
    dataschema,
    derive,
    derived_id,
    ensure_cloudevent,
    sink_source,
)

RAW = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"7f1c3a52-0b1e-4d0e-9a43-3d4a1f2c9e11"),
    ("ce_source", b"/databus/portal/DNA.STP"),
    ("ce_type", b"vn.gov.databus.publicservice.dossiers.c"),
    ("ce_time", b"2026-03-01T08:00:00.123+00:00"),
    ("content-type", b"application/avro"),
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("databus.backfill", b"1"),
]
SCHEMA = dataschema("publicservice.dossiers.std.v1-value", 3)


def parse(headers: list[tuple[str, bytes]], value: bytes = b"\x00avro") -> BaseCloudEvent:
    return from_binary(KafkaMessage(dict(headers), b"key", value), JSONFormat())


def std(headers: list[tuple[str, bytes | None]] = list(RAW)) -> list[tuple[str, bytes]]:  # noqa: B006
    return derive(
        headers,
        stage="std",
        type="vn.gov.databus.publicservice.dossiers.std.c",
        fallback_id="envelope-id",
        fallback_source="/databus/portal/DNA.STP",
        time_ms=0,
        schema=SCHEMA,
    )


def test_dataschema_names_subject_and_version() -> None:
    assert SCHEMA == "urn:databus:schema:publicservice.dossiers.std.v1-value:3"


def test_derived_id_is_a_deterministic_uuid5_unique_per_origin_and_stage() -> None:
    a = derived_id("/databus/portal/DNA.STP", "e-1", "std")
    assert a == derived_id("/databus/portal/DNA.STP", "e-1", "std")
    assert uuid.UUID(a).version == 5
    assert a == str(uuid.uuid5(DERIVED_NAMESPACE, "/databus/portal/DNA.STP\ne-1\nstd"))
    others = {
        derived_id("/databus/portal/DNA.STP", "e-2", "std"),
        derived_id("/databus/portal/HCM.STP", "e-1", "std"),
        derived_id("/databus/portal/DNA.STP", "e-1", "share"),
    }
    assert a not in others and len(others) == 3


def test_a_derived_event_has_its_own_id_the_processor_as_source_and_the_origin() -> None:
    got = dict(std())
    assert got["ce_id"] != b"7f1c3a52-0b1e-4d0e-9a43-3d4a1f2c9e11"
    assert (
        got["ce_id"]
        == derived_id(
            "/databus/portal/DNA.STP", "7f1c3a52-0b1e-4d0e-9a43-3d4a1f2c9e11", "std"
        ).encode()
    )
    assert got["ce_source"] == PROCESSOR_SOURCE.encode()
    assert got[ORIGINID_HEADER] == b"7f1c3a52-0b1e-4d0e-9a43-3d4a1f2c9e11"
    assert got["ce_time"] == b"2026-03-01T08:00:00.123+00:00"  # the same occurrence
    assert got["ce_dataschema"] == SCHEMA.encode()
    assert got["ce_type"] == b"vn.gov.databus.publicservice.dossiers.std.c"
    # headers that are no CloudEvents attribute ride along; no attribute twice
    assert got["traceparent"] == dict(RAW)["traceparent"]
    assert got["databus.backfill"] == b"1"
    names = [k for k, _ in std()]
    assert len(names) == len(set(names))


def test_processing_again_gives_the_same_headers_and_a_second_stage_a_new_id() -> None:
    assert std() == std()
    shared = derive(
        std(),
        stage="share",
        type="vn.gov.databus.publicservice.dossiers.shared.c",
        source=SHARE_SOURCE,
        fallback_id="x",
        fallback_source=SHARE_SOURCE,
        time_ms=0,
    )
    got, first = dict(shared), dict(std())
    assert got["ce_id"] not in (first["ce_id"], first[ORIGINID_HEADER])
    assert got[ORIGINID_HEADER] == first["ce_id"]  # the std event it was made from
    assert got["ce_source"] == b"urn:databus:share"


def test_an_origin_without_cloudevents_headers_falls_back_to_the_envelope() -> None:
    got = dict(std([("traceparent", b"t")]))
    assert got[ORIGINID_HEADER] == b"envelope-id"
    assert got["ce_id"] == derived_id("/databus/portal/DNA.STP", "envelope-id", "std").encode()
    assert got["ce_time"] == b"1970-01-01T00:00:00.000Z"


def test_derived_headers_parse_with_the_cloudevents_sdk() -> None:
    event = parse(std())
    assert event.get_id() == dict(std())["ce_id"].decode()
    assert event.get_source() == PROCESSOR_SOURCE
    assert event.get_specversion() == "1.0"
    assert event.get_dataschema() == SCHEMA
    assert event.get_datacontenttype() == "application/avro"
    assert event.get_extension("originid") == "7f1c3a52-0b1e-4d0e-9a43-3d4a1f2c9e11"
    when = event.get_time()
    assert when is not None and when.tzinfo is not None


def test_a_new_event() -> None:
    headers = cloudevent(
        id="a-1",
        source="urn:databus:alerts",
        type="vn.gov.databus.alert.raised",
        time_ms=1_772_352_000_123,
        subject="rule:unit:1",
        schema="urn:databus:schema:alerts.v1-value:1",
    )
    event = parse(headers)
    assert (event.get_id(), event.get_source()) == ("a-1", "urn:databus:alerts")
    assert event.get_subject() == "rule:unit:1"
    assert dict(headers)["ce_time"] == b"2026-03-01T08:00:00.123Z"
    assert ORIGINID_HEADER not in dict(headers)


def test_ensure_keeps_a_complete_event_as_it_is() -> None:
    kept = ensure_cloudevent(
        RAW, stage="dlq", source=sink_source("s"), type="t", fallback_id="x", time_ms=0
    )
    assert kept == RAW


def test_ensure_completes_a_partial_event_deterministically() -> None:
    partial = [("ce_specversion", b"0.3"), ("ce_type", b""), ("x", b"1")]

    def ensure(coordinates: str) -> list[tuple[str, bytes]]:
        return ensure_cloudevent(
            partial,
            stage="dlq",
            source=sink_source("fhir"),
            type="vn.gov.databus.deadletter",
            fallback_id=coordinates,
            time_ms=0,
        )

    got = dict(ensure("t:0:1"))
    assert got["ce_specversion"] == b"1.0"
    assert got["ce_type"] == b"vn.gov.databus.deadletter"
    assert got["ce_source"] == b"urn:databus:sink:fhir"
    assert got["ce_id"] == dict(ensure("t:0:1"))["ce_id"] != dict(ensure("t:0:2"))["ce_id"]
    assert parse(ensure("t:0:1"), b"").get_type() == "vn.gov.databus.deadletter"
