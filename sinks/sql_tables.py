"""SQL tables of the shared repository, derived from a dataset's std Avro schema.

Per dataset ``<domain>.<dataset>`` two tables (names: the id with ``_`` for ``.``):

``<domain>_<dataset>`` — the current state, one row per entity::

    <key fields>      NOT NULL, the primary key (the catalog's key, composite or not)
    <other fields>    NULL allowed (see below), in schema order
    _version          BIGINT NOT NULL   source.version of the event that wrote the row
    _event_id         UUID NOT NULL     that event's id (ties on _version: greater id wins)
    _op               VARCHAR(1)        c / u / r, or d for a tombstone
    _deleted          BOOLEAN NOT NULL  true after op d: the row keeps the last state
                                        and its version so an older event cannot resurrect it
    _source_ts        TIMESTAMPTZ       source.ts_ms: when the change happened
    _event_ts         TIMESTAMPTZ       ts_ms of the event
    _updated_at       TIMESTAMPTZ       when the sink wrote the row (not data: left out of
                                        comparisons and exports)

``<domain>_<dataset>_history`` — every event once, append-only::

    _event_id         UUID, the primary key (a replayed event is ignored)
    _version, _op, _source_ts, _event_ts, _source_system, _source_unit
    <every field>     the image: ``after``, or ``before`` for op d
    _recorded_at      when the sink wrote it

Avro → SQL (portable between PostgreSQL and SQLite): string and enum → TEXT, int →
INTEGER, long → BIGINT, float/double → DOUBLE, boolean → BOOLEAN, bytes/fixed → BLOB,
timestamp-millis/micros → TIMESTAMP WITH TIME ZONE (UTC), date → DATE, decimal →
NUMERIC(p, s), uuid → TEXT; arrays, maps and unions of several non-null types → JSON.
A nested record becomes one column per field, ``parent_child``.

Only key columns are NOT NULL: BACKWARD_TRANSITIVE evolution may remove a field (its
column then receives NULL) and columns added later must accept the rows already there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from bus.errors import ConfigError
from schemas.catalog import Dataset

__all__ = [
    "META_COLUMNS",
    "FieldColumn",
    "after_record_schema",
    "current_table",
    "field_columns",
    "history_table",
    "infer_column",
    "sql_value",
    "table_name",
]

# Bookkeeping columns of the current table; every one starts with "_".
META_COLUMNS = (
    "_version",
    "_event_id",
    "_op",
    "_deleted",
    "_source_ts",
    "_event_ts",
    "_updated_at",
)


@dataclass(frozen=True, slots=True)
class FieldColumn:
    """One column holding a record field: its name and the path to its value."""

    name: str
    path: tuple[str, ...]
    type: sa.types.TypeEngine[Any]

    def value_of(self, record: Mapping[str, Any]) -> Any:
        value: Any = record
        for part in self.path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return sql_value(value, self.type)


def table_name(dataset: Dataset) -> str:
    return dataset.id.replace(".", "_")


def _named_types(schema: Any, found: dict[str, Any]) -> None:
    """Every named type (record, enum, fixed) defined anywhere in ``schema``."""
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed") and "name" in schema:
            name = schema["name"]
            found[name] = schema
            if "namespace" in schema and "." not in name:
                found[f"{schema['namespace']}.{name}"] = schema
        if kind == "record":
            for field in schema.get("fields", []):
                _named_types(field["type"], found)
        elif kind == "array":
            _named_types(schema["items"], found)
        elif kind == "map":
            _named_types(schema["values"], found)
        elif isinstance(kind, dict | list):
            _named_types(kind, found)


def after_record_schema(envelope: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record schema of the envelope's ``after`` field, and every named type."""
    named: dict[str, Any] = {}
    _named_types(dict(envelope), named)
    for field in envelope.get("fields", []):
        if field["name"] == "after":
            for branch in field["type"] if isinstance(field["type"], list) else [field["type"]]:
                resolved = named.get(branch, branch) if isinstance(branch, str) else branch
                if isinstance(resolved, dict) and resolved.get("type") == "record":
                    return resolved, named
    raise ConfigError(f"schema {envelope.get('name')!r} has no record-typed 'after' field")


_PRIMITIVES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "string": sa.Text,
    "int": sa.Integer,
    "long": sa.BigInteger,
    "float": sa.Double,
    "double": sa.Double,
    "boolean": sa.Boolean,
    "bytes": sa.LargeBinary,
}


def _sql_type(schema: Any, named: Mapping[str, Any]) -> sa.types.TypeEngine[Any]:
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        kind = schema.get("type")
        if logical in ("timestamp-millis", "timestamp-micros"):
            return sa.DateTime(timezone=True)
        if logical == "date":
            return sa.Date()
        if logical in ("time-millis", "time-micros"):
            return sa.Time()
        if logical == "decimal":
            return sa.Numeric(int(schema["precision"]), int(schema.get("scale", 0)))
        if kind == "enum":
            return sa.Text()
        if kind == "fixed":
            return sa.LargeBinary()
        if kind in ("array", "map", "record"):
            return sa.JSON()
        return _sql_type(kind, named)
    if isinstance(schema, str) and schema in _PRIMITIVES:
        return _PRIMITIVES[schema]()
    return sa.JSON()


def _flatten(
    fields: Iterable[Mapping[str, Any]], named: Mapping[str, Any], prefix: tuple[str, ...]
) -> Iterator[FieldColumn]:
    for field in fields:
        path = (*prefix, field["name"])
        schema = field["type"]
        branches = schema if isinstance(schema, list) else [schema]
        non_null = [b for b in branches if b != "null"]
        target = non_null[0] if len(non_null) == 1 else None
        if isinstance(target, str) and target in named:
            target = named[target]
        if isinstance(target, dict) and target.get("type") == "record":
            yield from _flatten(target["fields"], named, path)
        elif target is None:
            yield FieldColumn("_".join(path), path, sa.JSON())
        else:
            yield FieldColumn("_".join(path), path, _sql_type(target, named))


def field_columns(envelope: Mapping[str, Any]) -> list[FieldColumn]:
    """One column per (flattened) field of the envelope's ``after`` record, schema order."""
    record, named = after_record_schema(envelope)
    columns = list(_flatten(record["fields"], named, ()))
    seen: set[str] = set()
    for column in columns:
        if column.name in seen or column.name.startswith("_"):
            raise ConfigError(f"schema {record.get('name')!r}: column {column.name!r} collides")
        seen.add(column.name)
    return columns


def infer_column(name: str, value: Any) -> FieldColumn | None:
    """A column for a field no known schema has, from a non-null value; None if null."""
    kind: sa.types.TypeEngine[Any]
    if value is None:
        return None
    if isinstance(value, bool):
        kind = sa.Boolean()
    elif isinstance(value, int):
        kind = sa.BigInteger()
    elif isinstance(value, float):
        kind = sa.Double()
    elif isinstance(value, Decimal):
        kind = sa.Numeric()
    elif isinstance(value, datetime):
        kind = sa.DateTime(timezone=True)
    elif isinstance(value, date):
        kind = sa.Date()
    elif isinstance(value, time):
        kind = sa.Time()
    elif isinstance(value, bytes):
        kind = sa.LargeBinary()
    elif isinstance(value, str | UUID):
        kind = sa.Text()
    else:
        kind = sa.JSON()
    return FieldColumn(name, (name,), kind)


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, date | time | UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sql_value(value: Any, kind: sa.types.TypeEngine[Any]) -> Any:
    """A decoded Avro value as its column binds it: datetimes in UTC (SQLite keeps no
    offset), JSON columns JSON-safe, UUIDs as text."""
    if value is None:
        return None
    if isinstance(kind, sa.JSON):
        return _json_safe(value)
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, UUID) and not isinstance(kind, sa.Uuid):
        return str(value)
    if isinstance(kind, sa.Text) and isinstance(value, dict | list):
        return json.dumps(_json_safe(value), sort_keys=True, ensure_ascii=False)
    return value


def _field_sql_columns(
    columns: Iterable[FieldColumn], key_fields: tuple[str, ...]
) -> list[sa.Column[Any]]:
    return [
        sa.Column(
            c.name, c.type, nullable=c.name not in key_fields, primary_key=c.name in key_fields
        )
        for c in columns
    ]


def current_table(
    dataset: Dataset,
    columns: Iterable[FieldColumn],
    metadata: sa.MetaData,
    *,
    schema: str | None = None,
) -> sa.Table:
    cols = list(columns)
    names = {c.name for c in cols}
    missing = [k for k in dataset.key_fields if k not in names]
    if missing:
        raise ConfigError(f"dataset {dataset.id}: key fields {missing} are not in its schema")
    return sa.Table(
        table_name(dataset),
        metadata,
        *_field_sql_columns(cols, dataset.key_fields),
        sa.Column("_version", sa.BigInteger(), nullable=False),
        sa.Column("_event_id", sa.Uuid(), nullable=False),
        sa.Column("_op", sa.String(1), nullable=False),
        sa.Column("_deleted", sa.Boolean(), nullable=False),
        sa.Column("_source_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("_event_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("_updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )


def history_table(
    dataset: Dataset,
    columns: Iterable[FieldColumn],
    metadata: sa.MetaData,
    *,
    schema: str | None = None,
) -> sa.Table:
    name = f"{table_name(dataset)}_history"
    return sa.Table(
        name,
        metadata,
        sa.Column("_event_id", sa.Uuid(), primary_key=True),
        sa.Column("_version", sa.BigInteger(), nullable=False),
        sa.Column("_op", sa.String(1), nullable=False),
        sa.Column("_source_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("_event_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("_source_system", sa.Text(), nullable=True),
        sa.Column("_source_unit", sa.Text(), nullable=True),
        *_field_sql_columns(columns, ()),
        sa.Column("_recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"ix_{name}_key", *dataset.key_fields, "_version"),
        schema=schema,
    )
