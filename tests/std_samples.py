"""Standardized events of any catalog dataset, made without a broker, for sink tests.

``std_events(dataset_id)`` runs the dataset's simulator and its standardizer, exactly
as the processor does, and returns the std events (the value a sink decodes from the
``.std.v1`` topic); ``sink_records`` wraps them as the runner hands them to a sink,
with the Avro bytes of the std schema as ``raw``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, cast

import fastavro

from producers.simulators import SIMULATORS, SimRecord, SimSpec, generate_dataset
from schemas.catalog import DOSSIERS, get_dataset, load_schema
from schemas.domain.reference import load_reference
from sinks.base import SinkRecord
from stream_processors.standardizers import STANDARDIZERS, Standardized

__all__ = [
    "SIMULATED",
    "SPEC",
    "avro_bytes",
    "raw_envelope",
    "sink_records",
    "std_events",
]

SPEC = SimSpec(
    days=6, per_day=40, seed=11, invalid_share=0.0, end=datetime(2025, 10, 15, 10, tzinfo=UTC)
)
# Every dataset but the dossiers: the sinks keep those apart (their own IOC script,
# tables and tests), the rest alike.
SIMULATED = tuple(sorted(set(SIMULATORS) - {DOSSIERS.id}))


@cache
def _parsed(path: str) -> Any:
    return fastavro.parse_schema(json.loads(load_schema(path)))


def avro_bytes(schema_path: str, value: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, _parsed(schema_path), value)
    return buffer.getvalue()


def _round_trip(schema_path: str, value: dict[str, Any]) -> dict[str, Any]:
    schema = _parsed(schema_path)
    decoded = cast(
        dict[str, Any],
        fastavro.schemaless_reader(io.BytesIO(avro_bytes(schema_path, value)), schema, schema),
    )
    return decoded


def raw_envelope(rec: SimRecord) -> dict[str, Any]:
    """The raw event as the publisher encodes it and AvroDeserializer decodes it."""
    dataset = get_dataset(rec.dataset_id)
    envelope = {
        "event_id": rec.event_id,
        "op": rec.op.value,
        "ts_ms": rec.at + timedelta(seconds=1),
        "source": {
            "system": dataset.source_system,
            "unit": dataset.owner_unit,
            "dataset": dataset.id,
            "ts_ms": rec.at,
            "version": rec.version,
        },
        "before": None,
        "after": rec.record.model_dump(mode="python"),
    }
    return _round_trip(dataset.raw_schema, envelope)


def std_events(dataset_id: str, spec: SimSpec = SPEC) -> list[dict[str, Any]]:
    """The std events of a dataset's valid simulated records, decoded as a sink sees them."""
    dataset = get_dataset(dataset_id)
    assert dataset.std_schema is not None
    ref = load_reference()
    standardize = STANDARDIZERS[dataset_id]
    events = []
    for rec in generate_dataset(dataset_id, spec, ref):
        result = standardize(raw_envelope(rec), ref, None)
        if isinstance(result, Standardized):
            events.append(_round_trip(dataset.std_schema, result.event))
    return events


def sink_records(
    dataset_id: str, events: Sequence[dict[str, Any]], *, first_offset: int = 0
) -> list[SinkRecord]:
    """The events as the runner hands them to a sink: std topic, one partition, offsets."""
    dataset = get_dataset(dataset_id)
    assert dataset.std_schema is not None
    topic = dataset.std_topic
    return [
        SinkRecord(
            topic=topic,
            partition=0,
            offset=first_offset + i,
            key=None,
            value=dict(event),
            raw=avro_bytes(dataset.std_schema, event),
        )
        for i, event in enumerate(events)
    ]
