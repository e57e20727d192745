"""The Publisher starts each event's trace: a ``create`` span its traceparent names."""

from __future__ import annotations

import re

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_publisher_encode import dossier, encoder_of
from test_publisher_encode import registry as registry  # the fixture

from bus import tracing
from bus.errors import PublishValidationError

TRACEPARENT = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


def test_the_traceparent_names_the_create_span(
    registry: SchemaRegistryClient, spans: InMemorySpanExporter
) -> None:
    encoder = encoder_of(registry, "publicservice.dossiers")
    event = encoder.encode(dossier(), version=1)
    headers = dict(event.headers)
    (span,) = spans.get_finished_spans()
    assert span.context is not None and span.parent is None
    assert span.name == f"create {encoder.topic}"
    ctx = span.context
    flags = f"{int(ctx.trace_flags):02x}"  # sampled, and (W3C level 2) a random trace id
    assert headers["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags}".encode()
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == event.event_id
    assert headers["ce_id"] == event.event_id.encode()
    shown = [span.name, *(str(v) for v in span.attributes.values())]
    assert not any("048190000042" in s or "Trần" in s for s in shown)  # the dossier's


def test_a_given_event_id_is_kept(
    registry: SchemaRegistryClient, spans: InMemorySpanExporter
) -> None:
    encoder = encoder_of(registry, "publicservice.dossiers")
    given = "5f0c6a3e-2b1d-4c8e-9a7f-0d1e2f3a4b5c"
    event = encoder.encode(dossier(), version=1, event_id=given)
    assert event.event_id == given
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None and span.attributes["messaging.message.id"] == given


def test_a_refused_event_ends_its_span_as_failed(
    registry: SchemaRegistryClient, spans: InMemorySpanExporter
) -> None:
    encoder = encoder_of(registry, "publicservice.dossiers")
    with pytest.raises(PublishValidationError):
        encoder.encode(None, version=1)
    # refused before the trace starts, or ended as failed: never left open
    assert all(s.status.description == "PublishValidationError" for s in spans.get_finished_spans())


def test_off_a_random_traceparent_as_before(registry: SchemaRegistryClient) -> None:
    assert not tracing.enabled()
    encoder = encoder_of(registry, "publicservice.dossiers")
    first = dict(encoder.encode(dossier(), version=1).headers)["traceparent"]
    second = dict(encoder.encode(dossier(), version=1).headers)["traceparent"]
    assert isinstance(first, bytes) and TRACEPARENT.fullmatch(first) and first != second
