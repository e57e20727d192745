"""Avro in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, body.

Serdes follow confluent-kafka's contract, ``__call__(obj, ctx) -> bytes`` and back,
but decoding is strict: every framing problem becomes a ``CodecError`` with a
stable reason code for the dead-letter topic, while a registry that cannot be
reached is a retriable ``RegistryError`` — an outage is not a bad record.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bus.errors import CodecError, RegistryError
from schemas.codec.decoder import AvroDecoder, compile_decoder
from schemas.codec.encoder import AvroEncoder, UnsupportedSchemaError, compile_encoder

__all__ = ["MAGIC_BYTE", "AvroDeserializer", "AvroSerializer", "frame", "unframe"]

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))


def frame(schema_id: int, body: bytes) -> bytes:
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def unframe(data: bytes | None) -> tuple[int, bytes]:
    """Split a framed value into (schema id, Avro body)."""
    schema_id, framed = _checked(data)
    return schema_id, framed[_HEADER.size :]


def _checked(data: bytes | None) -> tuple[int, bytes]:
    """(schema id, the framed value) once the header is checked."""
    if not data:
        raise CodecError("empty_value", "the record has no value")
    if len(data) < _HEADER.size:
        raise CodecError("truncated_header", f"{len(data)} bytes, shorter than the 5-byte header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise CodecError("bad_magic_byte", f"magic byte {magic}, expected {MAGIC_BYTE}")
    return int(schema_id), data


def _parse(schema_str: str) -> Any:
    return fastavro.parse_schema(json.loads(schema_str))


def _full_name(parsed: Any) -> str:
    return str(parsed.get("name", "")) if isinstance(parsed, dict) else ""


def _registry_error(exc: Exception, what: str) -> RegistryError:
    """A registry failure: a refusal (4xx) is final, an outage (5xx, no answer) retriable."""
    if isinstance(exc, SchemaRegistryError):
        return RegistryError(
            f"schema registry refused {what}: {exc.error_message}",
            retriable=exc.http_status_code >= 500,
        )
    return RegistryError(f"schema registry unreachable while {what}: {exc}")


class AvroSerializer:
    """Encode dicts with one schema; registers it under ``subject`` on first use."""

    def __init__(
        self,
        client: SchemaRegistryClient,
        subject: str,
        schema_str: str,
        *,
        auto_register: bool = True,
    ) -> None:
        self._client = client
        self._subject = subject
        self._schema_str = schema_str
        self._parsed = _parse(schema_str)
        try:
            # Same bytes as fastavro, several times faster (schemas/codec/encoder.py).
            self._encode: AvroEncoder = compile_encoder(self._parsed)
        except UnsupportedSchemaError:
            # A schema the compiler does not handle (the decimal logical type, a union
            # whose branch fastavro picks by deep validation) is written by fastavro.
            self._encode = self._fastavro_encode
        self._auto_register = auto_register
        self._schema_id: int | None = None

    @property
    def schema_id(self) -> int:
        if self._schema_id is None:
            schema = Schema(self._schema_str, "AVRO")
            try:
                if self._auto_register:
                    found: int | None = self._client.register_schema(self._subject, schema)
                else:
                    found = self._client.lookup_schema(self._subject, schema).schema_id
            except Exception as exc:
                raise _registry_error(exc, f"registering {self._subject}") from exc
            if found is None:
                raise RegistryError(f"{self._subject}: the registry returned no id")
            self._schema_id = found
        return self._schema_id

    @property
    def parsed_schema(self) -> Any:
        """The schema as fastavro parsed it (to read back what this serializer wrote)."""
        return self._parsed

    def union_record_name(self, field: str) -> str | None:
        """The full name of the one record branch of a top-level union field, if any.

        Encoders pass ``(name, value)`` for such a field (fastavro's tuple notation):
        the branch is then chosen by name instead of by trying each branch against
        the value, which costs a full check of the record (~10 µs per event).
        """
        for f in self._parsed.get("fields", ()) if isinstance(self._parsed, dict) else ():
            if f.get("name") != field or not isinstance(f.get("type"), list):
                continue
            names = [
                b["name"] if isinstance(b, dict) else b
                for b in f["type"]
                if (isinstance(b, dict) and b.get("type") == "record")
                or (isinstance(b, str) and b not in _PRIMITIVES)
            ]
            return names[0] if len(names) == 1 else None
        return None

    def encode_body(self, obj: dict[str, Any]) -> bytes:
        """The Avro body of ``obj``; ``ValueError``/``TypeError`` when it does not fit."""
        return self._encode(obj)

    def _fastavro_encode(self, obj: Any) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self._parsed, obj)
        return buf.getvalue()

    def __call__(self, obj: dict[str, Any], ctx: object = None) -> bytes:
        return frame(self.schema_id, self.encode_body(obj))


class AvroDeserializer:
    """Decode framed values; optionally insist on one record type (the dataset's).

    Each writer schema is compiled once with the reader schema into a strict decoder
    (schemas/codec/decoder.py, about twice as fast as fastavro); one it does not compile
    is read by fastavro, with the same reason codes.
    """

    def __init__(self, client: SchemaRegistryClient, reader_schema_str: str | None = None) -> None:
        self._client = client
        self._reader = _parse(reader_schema_str) if reader_schema_str else None
        # schema id -> (writer schema as fastavro parsed it, compiled decoder or None)
        self._writers: dict[int, tuple[Any, AvroDecoder | None]] = {}

    def _writer(self, schema_id: int) -> tuple[Any, AvroDecoder | None]:
        known = self._writers.get(schema_id)
        if known is not None:
            return known
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise CodecError(
                    "unknown_schema_id", f"schema id {schema_id} is not in the registry"
                ) from exc
            raise _registry_error(exc, f"looking up schema {schema_id}") from exc
        except Exception as exc:
            raise _registry_error(exc, f"looking up schema {schema_id}") from exc
        if schema.schema_type not in (None, "AVRO") or not schema.schema_str:
            raise CodecError("not_avro", f"schema id {schema_id} is {schema.schema_type}")
        parsed = _parse(schema.schema_str)
        if self._reader is not None and _full_name(parsed) != _full_name(self._reader):
            raise CodecError(
                "wrong_schema",
                f"schema id {schema_id} is {_full_name(parsed)}, "
                f"expected {_full_name(self._reader)}",
            )
        try:
            decode: AvroDecoder | None = compile_decoder(parsed, self._reader)
        except UnsupportedSchemaError:
            decode = None  # e.g. the decimal logical type: fastavro reads it
        self._writers[schema_id] = known = (parsed, decode)
        return known

    def __call__(self, data: bytes | None, ctx: object = None) -> dict[str, Any]:
        schema_id, framed = _checked(data)
        writer, decode = self._writer(schema_id)
        if decode is not None:
            # Reads the body in place (no copy); raises CodecError with the same
            # reason codes as the fastavro path below.
            record = decode(framed, _HEADER.size)
            if not isinstance(record, dict):
                raise CodecError("invalid_avro", "the value is not a record")
            return record
        return self._fastavro_read(writer, framed[_HEADER.size :])

    def _fastavro_read(self, writer: Any, body: bytes) -> dict[str, Any]:
        buf = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(buf, writer, self._reader)
        except (EOFError, StopIteration) as exc:
            raise CodecError("truncated_payload", "the Avro body ends early") from exc
        except UnicodeDecodeError as exc:
            raise CodecError("invalid_utf8", f"a string is not UTF-8: {exc.reason}") from exc
        except IndexError as exc:
            # fastavro's compiled reader raises IndexError, not EOFError, when the body
            # ends inside a multi-byte varint (a long, a timestamp, a length).
            if buf.tell() >= len(body):
                raise CodecError("truncated_payload", "the Avro body ends early") from exc
            raise CodecError("invalid_avro", f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # fastavro raises plain ValueError/IndexError on garbage
            raise CodecError("invalid_avro", f"{type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(body):
            raise CodecError(
                "trailing_bytes", f"{len(body) - buf.tell()} bytes left after the record"
            )
        if not isinstance(record, dict):
            raise CodecError("invalid_avro", "the value is not a record")
        return record
