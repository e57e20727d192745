"""One dataset's stateless stages: raw bytes → decoded envelope → standardized bytes.

No Kafka in here. Each stage returns its result or a ``DeadLetter``; a
``RegistryError`` (the registry is down) propagates instead: it is not the
record's fault, so the caller waits and retries rather than dead-lettering.

Every catalog dataset gets a pipeline. Its standardizer comes from
``stream_processors.standardizers``; a dataset without one (and without a
``std_schema`` in the catalog) passes through: the std topic carries the raw
schema, so downstream code does not wait for every standardizer to be written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.errors import CodecError
from schemas.catalog import Dataset, load_schema, value_subject
from schemas.codec import AvroDeserializer, AvroSerializer
from schemas.dead_letters import DeadLetter, codec_letter
from schemas.domain.reference import ReferenceData
from schemas.headers import dataschema, derive, schema_version
from stream_processors.standardizers import (
    Rejected,
    Standardized,
    Standardizer,
    build_standardizer,
)

__all__ = ["DatasetPipeline", "Output", "Standardizer", "standardizer_for"]


def _passthrough(
    raw: Mapping[str, Any], _ref: ReferenceData, _now: datetime | None
) -> Standardized | Rejected:
    return Standardized(event=dict(raw), flags=())


def _epoch_ms(value: object) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value if isinstance(value, int) else 0


def standardizer_for(dataset: Dataset) -> Standardizer:
    found = build_standardizer(dataset)  # bound to this entry's earliest day and key
    if found is None:
        if dataset.std_schema is not None:
            raise LookupError(f"{dataset.id} has a std_schema but no standardizer")
        return _passthrough
    return found


@dataclass(frozen=True, slots=True)
class Output:
    """A standardized event, encoded, with its headers."""

    event: dict[str, Any]
    value: bytes
    headers: list[tuple[str, bytes]]
    flags: tuple[str, ...]


class DatasetPipeline:
    def __init__(
        self,
        dataset: Dataset,
        registry: SchemaRegistryClient,
        reference: ReferenceData,
        *,
        standardizer: Standardizer | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.dataset = dataset
        self._decode = AvroDeserializer(registry, load_schema(dataset.raw_schema))
        self._registry = registry
        self._std_subject = value_subject(dataset.std_topic)
        self._std_schema = load_schema(dataset.std_value_schema)
        self._encode = AvroSerializer(registry, self._std_subject, self._std_schema)
        self._dataschema: str | None = None
        self._standardize = standardizer or standardizer_for(dataset)
        self._reference = reference
        self._clock = clock
        self._ce_type = f"vn.gov.databus.{dataset.id}.std."
        self.std_topic = dataset.std_topic  # a property that formats: read once

    def register(self) -> None:
        """Register the output schema now, so start-up fails early if it cannot."""
        _ = self._encode.schema_id
        _ = self.dataschema

    @property
    def dataschema(self) -> str:
        """The std records' ``ce_dataschema`` (asks the registry once)."""
        if self._dataschema is None:
            _ = self._encode.schema_id  # registered first: the lookup then finds it
            version = schema_version(self._registry, self._std_subject, self._std_schema)
            self._dataschema = dataschema(self._std_subject, version)
        return self._dataschema

    def decode(self, value: bytes | None) -> dict[str, Any] | DeadLetter:
        try:
            return self._decode(value)
        except CodecError as exc:
            return codec_letter(exc)

    def standardize(
        self, raw: Mapping[str, Any], headers: Iterable[tuple[str, bytes | None]] = ()
    ) -> Output | DeadLetter:
        result = self._standardize(raw, self._reference, self._clock())
        if isinstance(result, Rejected):
            return DeadLetter(
                stage="standardize",
                reason=result.reason,
                exception_class="Rejected",
                message=result.message_en,
                message_vi=result.message_vi,
                field=result.field,
            )
        event = result.event
        try:
            body = self._encode(event)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return DeadLetter(
                stage="encode",
                reason="std_schema_mismatch",
                exception_class=type(exc).__name__,
                message=str(exc),
                message_vi="kết quả chuẩn hóa không khớp lược đồ chuẩn",
            )
        source = raw.get("source") or {}
        out_headers = derive(
            headers,
            stage="std",
            type=self._ce_type + str(event.get("op")),
            fallback_id=str(raw.get("event_id") or ""),
            fallback_source=f"/databus/{source.get('system')}/{source.get('unit')}",
            time_ms=_epoch_ms(raw.get("ts_ms")),
            schema=self.dataschema,
        )
        return Output(event=event, value=body, headers=out_headers, flags=result.flags)
