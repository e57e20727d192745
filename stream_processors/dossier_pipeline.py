"""raw dossier bytes → standardized bytes, or a dead letter. No Kafka in here.

A ``RegistryError`` (the registry is down) propagates: it is not the record's
fault, so the agent waits and retries instead of dead-lettering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.errors import CodecError
from schemas.catalog import DOSSIERS, load_schema, value_subject
from schemas.codec import AvroDeserializer, AvroSerializer
from stream_processors.dlq import DeadLetter
from stream_processors.overdue_alert import DossierFact, fact_from_std_event
from stream_processors.reference import ReferenceData
from stream_processors.standardize import Rejected, standardize_dossier_event

__all__ = ["DossierPipeline", "Refused", "Standardized"]

_CODEC_VI = {
    "empty_value": "bản ghi không có giá trị",
    "truncated_header": "thiếu phần đầu 5 byte",
    "bad_magic_byte": "byte đầu không phải định dạng Confluent",
    "unknown_schema_id": "mã lược đồ không có trong kho lược đồ",
    "wrong_schema": "bản ghi thuộc lược đồ của bộ dữ liệu khác",
    "truncated_payload": "dữ liệu Avro bị cắt cụt",
    "trailing_bytes": "còn dư byte sau bản ghi",
    "invalid_utf8": "chuỗi không phải UTF-8",
    "invalid_avro": "dữ liệu Avro không hợp lệ",
    "not_avro": "lược đồ không phải Avro",
}


@dataclass(frozen=True)
class Standardized:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    fact: DossierFact


@dataclass(frozen=True)
class Refused:
    letter: DeadLetter


class DossierPipeline:
    def __init__(
        self,
        registry: SchemaRegistryClient,
        reference: ReferenceData,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._decode = AvroDeserializer(registry, load_schema(DOSSIERS.raw_schema))
        self._encode = AvroSerializer(
            registry, value_subject(DOSSIERS.std_topic), load_schema(DOSSIERS.std_value_schema)
        )
        self._reference = reference
        self._clock = clock

    def register(self) -> None:
        """Register the output schema now, so start-up fails early if it cannot."""
        _ = self._encode.schema_id

    def process(
        self, value: bytes | None, headers: Iterable[tuple[str, bytes | None]] = ()
    ) -> Standardized | Refused:
        try:
            raw = self._decode(value)
        except CodecError as exc:
            return Refused(
                DeadLetter(
                    stage="decode",
                    reason=exc.reason,
                    exception_class=type(exc).__name__,
                    message=str(exc),
                    message_vi=_CODEC_VI.get(exc.reason, "bản ghi không giải mã được"),
                )
            )
        result = standardize_dossier_event(raw, self._reference, now=self._clock())
        if isinstance(result, Rejected):
            return Refused(
                DeadLetter(
                    stage="standardize",
                    reason=result.reason,
                    exception_class="Rejected",
                    message=result.message_en,
                    message_vi=result.message_vi,
                    field=result.field,
                )
            )
        event = result.event
        try:
            body = self._encode(event)
        except (ValueError, TypeError) as exc:
            return Refused(
                DeadLetter(
                    stage="encode",
                    reason="std_schema_mismatch",
                    exception_class=type(exc).__name__,
                    message=str(exc),
                    message_vi="kết quả chuẩn hóa không khớp lược đồ chuẩn",
                )
            )
        fact = fact_from_std_event(event)
        out_headers = [(k, v or b"") for k, v in headers if k != "ce_type"]
        out_headers.append(("ce_type", f"vn.gov.databus.{DOSSIERS.id}.std.{event['op']}".encode()))
        return Standardized(
            key=fact.dossier_id.encode(), value=body, headers=out_headers, fact=fact
        )
