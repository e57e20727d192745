"""bus.tracing: W3C traceparent in and out, off by default, OTLP only with an endpoint."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bus import tracing

TP = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing.configure("databus-test") is False
    assert not tracing.enabled()
    assert tracing.current_ids() is None


def test_on_with_an_endpoint_exports_over_otlp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    try:
        assert tracing.configure("databus-test") is True
        assert tracing.enabled()
        provider = tracing._provider
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "databus-test"
    finally:
        tracing.shutdown()  # nothing was recorded: nothing to send


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"garbage",
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        b"00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        b"00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",  # not hex
    ],
)
def test_a_malformed_traceparent_starts_no_parent(value: bytes | None) -> None:
    assert tracing.parent_from([("traceparent", value)]) is None


def test_a_child_continues_the_trace_and_names_itself(spans: InMemorySpanExporter) -> None:
    parent = tracing.parent_from([("ce_id", b"e-1"), ("traceparent", TP)])
    assert parent is not None
    span = tracing.start_span("process t", parent=parent, attributes={"databus.dataset": "d"})
    written = tracing.traceparent_of(span)
    span.end()
    (done,) = spans.get_finished_spans()
    assert done.context is not None and done.parent is not None
    assert f"{done.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{done.parent.span_id:016x}" == "b7ad6b7169203331"
    assert written == f"00-{done.context.trace_id:032x}-{done.context.span_id:016x}-01".encode()


def test_an_unsampled_parent_records_nothing(spans: InMemorySpanExporter) -> None:
    parent = tracing.parent_from([("traceparent", TP[:-2] + b"00")])
    span = tracing.start_span("process t", parent=parent)
    assert tracing.traceparent_of(span).endswith(b"-00")
    span.end()
    assert spans.get_finished_spans() == ()


def test_a_failed_span_names_the_class_only(spans: InMemorySpanExporter) -> None:
    span = tracing.start_span("create t")
    tracing.end_error(span, ValueError("079190012345678901234 is not valid"))
    (done,) = spans.get_finished_spans()
    assert done.status.description == "ValueError"


def test_a_hop_follows_the_publishers_sampling_decision(spans: InMemorySpanExporter) -> None:
    unsampled = TP[:-2] + b"00"
    assert tracing.start_child("sink x t", [("traceparent", unsampled)]) is None
    assert tracing.start_child("sink x t", [("traceparent", unsampled.decode())]) is None
    sampled = tracing.start_child("sink x t", [("traceparent", TP)])
    assert sampled is not None and sampled.is_recording()
    sampled.end()
    root = tracing.start_child("sink x t", [])  # no traceparent: a trace of its own
    assert root is not None
    root.end()
    first, second = spans.get_finished_spans()
    assert first.parent is not None and second.parent is None


def test_start_child_off_is_none() -> None:
    assert not tracing.enabled()
    assert tracing.start_child("sink x t", [("traceparent", TP)]) is None
