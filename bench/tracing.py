"""What tracing costs per event, off and on, in one process (no broker, no registry).

The three hooks of ``bus.tracing`` on the hot paths, each on dossier events:

- publish: ``EventEncoder.encode`` (validate, encode, headers) with tracing off (a
  random traceparent, as without tracing) and on (a ``create`` span per event);
- process: the batch loop's per-event ``process`` span and the std record's new
  traceparent (``BatchLoop._trace_std``); off, the loop skips it (one test per batch);
- sink: the sink runner's per-record span (``sinks.runner._trace_written``); off, skipped.

"On" is the SDK as ``bus.tracing.configure`` sets it up (``BatchSpanProcessor``), with
an exporter that encodes every span to OTLP protobuf and sends nothing: the CPU an
export costs in this process, without the network; every event traced, then 1 % of
them (``parentbased_traceidratio``: the rest carry an unsampled traceparent and cost
a non-recording span per hop). The export thread's work is
inside the timing (``force_flush`` before the clock stops). Every figure is the best
of ``--repeat`` runs of ``--events`` events.

    .venv/bin/python bench/tracing.py [--events 20000] [--repeat 5]

Writes ``bench/results/tracing-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import time
import types
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from bus import tracing
from bus.settings import load_settings
from producers.file_drop import template_rows
from producers.headers import new_ids
from producers.publisher import EventEncoder
from schemas.catalog import DOSSIERS, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.models.public_service import Dossier
from sinks.base import SinkRecord
from sinks.runner import _trace_written
from stream_processors.batch_core import BatchOutput, RawRecord
from stream_processors.batch_loop import BatchLoop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


class EncodeOnly(SpanExporter):
    """Encodes each batch of spans as the OTLP exporters do, and sends nothing."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        self.bytes += len(encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3,000 events, best of 3")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory of the run's JSON")
    args = ap.parse_args()
    if args.quick:
        args.events, args.repeat = 3_000, 3
    n, repeat = args.events, args.repeat

    # publish: the encoder of a Publisher whose schema id is known (no registry call)
    registry = SchemaRegistryClient({"url": f"http://127.0.0.1:{_closed_port()}"})
    serializer = AvroSerializer(
        registry, value_subject(DOSSIERS.raw_topic), load_schema(DOSSIERS.raw_schema)
    )
    encoder = EventEncoder(
        DOSSIERS,
        serializer,
        source_system="bench",
        max_bytes=load_settings().kafka.message_max_bytes,
        schema_id=1,
    )
    header, example = template_rows(Dossier)
    dossier = Dossier.model_validate(dict(zip(header, example, strict=True)))

    def publish() -> None:
        encode = encoder.encode
        for _ in range(n):
            encode(dossier, version=1)

    # process and sink: n records as the processor and a sink see them; the raw
    # records' traceparents sampled (flag 01) at the run's rate, as a Publisher wrote them
    def records(
        every: int,
    ) -> tuple[list[RawRecord], list[list[tuple[str, bytes]]], list[SinkRecord]]:
        raw: list[RawRecord] = []
        headers: list[list[tuple[str, bytes]]] = []
        for i in range(n):
            event_id, traceparent = new_ids()
            if i % every:
                traceparent = traceparent[:-2] + b"00"
            raw.append(
                RawRecord(
                    DOSSIERS.raw_topic,
                    i % 4,
                    i,
                    b"k",
                    b"v",
                    [("ce_id", event_id.encode()), ("traceparent", traceparent)],
                )
            )
            headers.append([("ce_id", event_id.encode()), ("traceparent", traceparent)])
        std = [
            SinkRecord(DOSSIERS.std_topic, r.partition, r.offset, b"k", {}, b"v", tuple(h))
            for r, h in zip(raw, headers, strict=True)
        ]
        return raw, headers, std

    loop = types.SimpleNamespace(_batch_started_ns=0, _datasets={DOSSIERS.raw_topic: DOSSIERS})

    def process(raw: list[RawRecord], headers: list[list[tuple[str, bytes]]]) -> Callable[[], None]:
        def run() -> None:
            out = BatchOutput()
            out.std = [(DOSSIERS.std_topic, b"k", b"v", list(h)) for h in headers]
            out.std_from = raw
            loop._batch_started_ns = time.time_ns()
            BatchLoop._trace_std(loop, out)  # type: ignore[arg-type]

        return run

    def sink(std: list[SinkRecord]) -> Callable[[], None]:
        return lambda: _trace_written("ioc", std, [], time.time_ns())

    exporter = EncodeOnly()
    # OTEL_TRACES_SAMPLER=parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG: the
    # publisher decides; the processor and sinks follow the traceparent's flag
    setups: dict[str, tuple[TracerProvider | None, int]] = {"off": (None, 1)}
    for name, ratio, every in (("on", 1.0, 1), ("sampled_1pct", 0.01, 100)):
        sdk = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
        # a queue for every span of a run: none dropped, every one encoded
        sdk.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=n + 1))
        setups[name] = (sdk, every)
    inputs = {every: records(every) for _provider, every in setups.values()}
    best: dict[str, float] = {}

    def measure(key: str, provider: TracerProvider | None, run: Callable[[], None]) -> None:
        tracing.use(provider)
        started = time.perf_counter()
        run()
        if provider is not None:
            provider.force_flush()
        best[key] = min(best.get(key, float("inf")), time.perf_counter() - started)

    publish()  # warm up: schema, templates
    try:
        # interleaved, best of each: a shared machine's load disturbs them alike
        for _ in range(repeat):
            for name, (provider, every) in setups.items():
                raw, headers, std = inputs[every]
                measure(f"publish_{name}_us", provider, publish)
                if provider is not None:
                    measure(f"process_span_{name}_us", provider, process(raw, headers))
                    measure(f"sink_span_{name}_us", provider, sink(std))
    finally:
        tracing.use(None)
        for used, _every in setups.values():
            if used is not None:
                used.shutdown()
        registry.close()
    us = 1e6 / n
    results: dict[str, Any] = {k: v * us for k, v in sorted(best.items())}
    results["publish_ratio_on"] = results["publish_on_us"] / results["publish_off_us"]
    results["publish_ratio_sampled_1pct"] = (
        results["publish_sampled_1pct_us"] / results["publish_off_us"]
    )
    results["otlp_bytes_per_span"] = exporter.bytes / max(exporter.spans, 1)

    r = results
    print(f"{n} dossier events, best of {repeat} runs (tracing on: OTLP-encoded, not sent)")
    rows = [
        ("publish (encode), tracing off", r["publish_off_us"], "µs/event"),
        ("publish (encode), tracing on", r["publish_on_us"], "µs/event"),
        ("publish ratio on/off", r["publish_ratio_on"], "x"),
        ("processor: process span", r["process_span_on_us"], "µs/event"),
        ("sink runner: sink span", r["sink_span_on_us"], "µs/record"),
        ("1 % sampled: publish (encode)", r["publish_sampled_1pct_us"], "µs/event"),
        ("1 % sampled: publish ratio on/off", r["publish_ratio_sampled_1pct"], "x"),
        ("1 % sampled: process span", r["process_span_sampled_1pct_us"], "µs/event"),
        ("1 % sampled: sink span", r["sink_span_sampled_1pct_us"], "µs/record"),
        ("OTLP size", r["otlp_bytes_per_span"], "bytes/span"),
    ]
    for name, value, unit in rows:
        print(f"  {name:<36} {value:8.2f} {unit}")
    print("  tracing off: the processor and sink hooks are skipped (one test per batch)")

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_file = args.out / f"tracing-{stamp}.json"
    out_file.write_text(
        json.dumps(
            {
                "benchmark": "tracing",
                "events": n,
                "repeat": repeat,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                **{k: round(v, 3) for k, v in results.items()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"  written to {out_file}")


if __name__ == "__main__":
    main()
