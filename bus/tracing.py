"""Traces an operator can follow: one W3C trace per event, from publish to every sink.

Each hop writes a ``traceparent`` header (W3C Trace Context) naming its own span, and
the next hop's span is that span's child:

    create <raw topic>   (Publisher, producers.publisher.encoding; the trace's root)
    └─ process <raw topic>   (processor, per event; its span id on the std record)
       ├─ sink ioc <std topic>           (sinks.runner, per record written)
       ├─ sink shared_repo <std topic>
       └─ sink health_axis <std topic>

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: :func:`configure` then exports spans
over OTLP (``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf``, the default, or
``grpc``; the other ``OTEL_*`` variables as the OpenTelemetry SDK reads them). Otherwise
every hook is one ``enabled()`` test and the Publisher writes a random traceparent as
before. Tests and benchmarks install a provider of their own with :func:`use`.

Span names and attributes say where, never what: dataset, topic, partition, offset,
event id, sink name — never a payload value, a citizen id or a name.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

if TYPE_CHECKING:  # the SDK is imported only when tracing is turned on
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "TRACEPARENT",
    "Span",
    "SpanKind",
    "Status",
    "StatusCode",
    "configure",
    "current_ids",
    "enabled",
    "end_error",
    "parent_from",
    "shutdown",
    "start_child",
    "start_span",
    "traceparent_of",
    "use",
]

TRACEPARENT = "traceparent"
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_lock = threading.Lock()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def enabled() -> bool:
    """Whether spans are recorded (a provider installed): the hooks' only cost when off."""
    return _tracer is not None


def use(provider: TracerProvider | None) -> None:
    """Record spans with ``provider`` (tests, benchmarks); None turns tracing off. The
    provider is not made OpenTelemetry's global one."""
    global _provider, _tracer
    with _lock:
        _provider = provider
        _tracer = None if provider is None else provider.get_tracer("databus")


def configure(service_name: str) -> bool:
    """Export spans over OTLP when an endpoint variable is set; returns whether tracing is
    on. Called once by each process of the bus (publisher-side processes, the processor,
    each sink); spans still queued are sent at exit."""
    if not any(os.environ.get(v) for v in _ENDPOINT_VARS):
        return False
    if _provider is not None:
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    )
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        exporter = HttpExporter()
    # OTEL_SERVICE_NAME, when set, names the service instead
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    resource = Resource.create(named)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    """Send the spans still queued and turn tracing off."""
    provider = _provider
    use(None)
    if provider is not None:
        provider.shutdown()


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None outside one."""
    if _tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _parse(value: bytes | str | None) -> SpanContext | None:
    """The span context of a W3C ``traceparent`` (version 00); None when malformed."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    parts = text.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace_hex, span_hex, flags_hex = parts[:4]
    if len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    if version == "00" and len(parts) != 4:
        return None
    try:
        trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


def parent_from(headers: Iterable[tuple[str, bytes | str | None]] | None) -> Context | None:
    """The context whose span is the one a record's ``traceparent`` header names (the
    span of the hop that wrote it); None when the record has none or a malformed one."""
    if not headers:
        return None
    for name, value in headers:
        if name == TRACEPARENT:
            parent = _parse(value)
            if parent is None:
                return None
            return trace.set_span_in_context(NonRecordingSpan(parent))
    return None


_UNSAMPLED_LAST = frozenset(b"02468ace")  # a flags byte's last hex digit, sampled bit 0


def start_child(
    name: str,
    headers: Iterable[tuple[str, bytes | str | None]] | None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    start_time: int | None = None,
) -> Span | None:
    """The span of a hop that handles a record: the child of the span the record's
    ``traceparent`` names (a new trace's root when it has none). None when that
    traceparent says the trace is not sampled: the publisher decided, nothing is
    recorded, and the record's traceparent is passed on as it is. Set attributes on
    the span when ``span.is_recording()``."""
    if _tracer is None:
        return None
    parent = None
    for key, value in headers or ():
        if key == TRACEPARENT:
            if value and len(value) == 55:
                last = value[-1] if isinstance(value, bytes) else ord(value[-1])
                if last in _UNSAMPLED_LAST:
                    return None
            parent = parent_from(((key, value),))
            break
    return _tracer.start_span(name, context=parent, kind=kind, start_time=start_time)


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    attributes: Mapping[str, str | int] | None = None,
    start_time: int | None = None,
) -> Span:
    """A started span (a child of ``parent``, else of the current span); end it with
    ``span.end()``. Only called when :func:`enabled`."""
    tracer = _tracer
    if tracer is None:
        return trace.INVALID_SPAN
    return tracer.start_span(
        name, context=parent, kind=kind, attributes=attributes, start_time=start_time
    )


def end_error(span: Span, exc: BaseException) -> None:
    """End ``span`` as failed, naming the error's class only (its text may quote values)."""
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.end()


def traceparent_of(span: Span) -> bytes:
    """The ``traceparent`` header naming ``span``, for the record its hop writes."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()
