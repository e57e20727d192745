"""Avro → SQL columns of the shared repository, and how database errors are sorted."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa

from bus.errors import ConfigError
from schemas.catalog import DATASETS, get_dataset, load_schema
from sinks.shared_repo import classify_db_error as classify
from sinks.shared_repo import dataset_columns, describe_db_error
from sinks.sql_tables import current_table, field_columns, history_table, infer_column, sql_value


def envelope(*fields: dict[str, Any]) -> dict[str, Any]:
    record = {"type": "record", "name": "Thing", "fields": list(fields)}
    return {
        "type": "record",
        "name": "Envelope",
        "fields": [
            {"name": "before", "type": ["null", record]},
            {"name": "after", "type": ["null", "Thing"]},
        ],
    }


def test_avro_types_map_to_portable_sql_types() -> None:
    cols = field_columns(
        envelope(
            {"name": "id", "type": "string"},
            {"name": "n", "type": "int"},
            {"name": "big", "type": ["null", "long"]},
            {"name": "x", "type": "double"},
            {"name": "ok", "type": "boolean"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}]},
            {
                "name": "amount",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
            },
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {"name": "flags", "type": {"type": "array", "items": "string"}},
            {"name": "scores", "type": {"type": "map", "values": "double"}},
            {"name": "either", "type": ["null", "string", "long"]},
            {
                "name": "geo",
                "type": {
                    "type": "record",
                    "name": "Geo",
                    "fields": [
                        {"name": "lat", "type": "double"},
                        {"name": "lon", "type": "double"},
                    ],
                },
            },
        )
    )
    kinds = {c.name: type(c.type) for c in cols}
    assert kinds == {
        "id": sa.Text,
        "n": sa.Integer,
        "big": sa.BigInteger,
        "x": sa.Double,
        "ok": sa.Boolean,
        "at": sa.DateTime,
        "day": sa.Date,
        "amount": sa.Numeric,
        "kind": sa.Text,
        "flags": sa.JSON,
        "scores": sa.JSON,
        "either": sa.JSON,
        "geo_lat": sa.Double,
        "geo_lon": sa.Double,
    }
    geo = next(c for c in cols if c.name == "geo_lat")
    assert geo.value_of({"geo": {"lat": 10.5, "lon": 106.0}}) == 10.5
    assert geo.value_of({"geo": None}) is None


def test_every_catalog_schema_gives_a_table_with_its_key() -> None:
    for dataset in DATASETS.values():
        if dataset.std_schema is None:
            continue
        cols = dataset_columns(dataset)
        md = sa.MetaData()
        current = current_table(dataset, cols, md)
        history = history_table(dataset, cols, md)
        assert [c.name for c in current.primary_key] == list(dataset.key_fields)
        assert [c.name for c in history.primary_key] == ["_event_id"]
        assert all(current.c[c.name].nullable for c in cols if c.name not in dataset.key_fields)


def test_older_revisions_keep_their_columns() -> None:
    dossiers = get_dataset("publicservice.dossiers")
    names = [c.name for c in dataset_columns(dossiers)]
    current = [c.name for c in field_columns(json.loads(load_schema(dossiers.std_value_schema)))]
    assert names[: len(current)] == current


def test_a_column_name_that_collides_is_refused() -> None:
    with pytest.raises(ConfigError):
        field_columns(envelope({"name": "_version", "type": "long"}))
    with pytest.raises(ConfigError):
        field_columns(
            envelope(
                {"name": "a_b", "type": "string"},
                {
                    "name": "a",
                    "type": {
                        "type": "record",
                        "name": "A",
                        "fields": [{"name": "b", "type": "int"}],
                    },
                },
            )
        )


def test_values_bind_in_utc_and_json_safe() -> None:
    local = datetime(2025, 10, 9, 23, 0, tzinfo=timezone(timedelta(hours=7)))
    assert sql_value(local, sa.DateTime(timezone=True)) == datetime(2025, 10, 9, 16, 0, tzinfo=UTC)
    assert sql_value(datetime(2025, 1, 1), sa.DateTime()).tzinfo is UTC
    uid = UUID(int=5)
    assert sql_value([local, uid, date(2025, 1, 2)], sa.JSON()) == [
        "2025-10-09T16:00:00+00:00",
        str(uid),
        "2025-01-02",
    ]
    assert sql_value(None, sa.Text()) is None


def test_unknown_fields_are_typed_from_their_value() -> None:
    assert infer_column("x", None) is None
    cases = {True: sa.Boolean, 3: sa.BigInteger, 1.5: sa.Double, "s": sa.Text}
    for value, kind in cases.items():
        column = infer_column("x", value)
        assert column is not None and isinstance(column.type, kind)
    column = infer_column("x", [1, 2])
    assert column is not None and isinstance(column.type, sa.JSON)


def _dbapi(cls: type[sa.exc.DBAPIError], orig: Exception, invalidated: bool = False) -> Any:
    return cls("INSERT ...", {}, orig, connection_invalidated=invalidated)


def test_errors_are_sorted_into_retry_reject_broken() -> None:
    assert classify(_dbapi(sa.exc.OperationalError, sqlite3.OperationalError("locked"))) == "retry"
    assert (
        classify(_dbapi(sa.exc.OperationalError, sqlite3.OperationalError("no such table: t")))
        == "broken"
    )
    assert classify(_dbapi(sa.exc.InterfaceError, Exception("closed"))) == "retry"
    assert classify(_dbapi(sa.exc.ProgrammingError, Exception("x"), invalidated=True)) == "retry"
    assert classify(_dbapi(sa.exc.IntegrityError, Exception("CHECK"))) == "reject"
    assert classify(_dbapi(sa.exc.DataError, Exception("too long"))) == "reject"
    assert classify(_dbapi(sa.exc.ProgrammingError, Exception("syntax"))) == "broken"
    bind = sa.exc.StatementError("bad value", "INSERT ...", {}, TypeError("not a date"))
    assert classify(bind) == "reject"


def test_error_descriptions_leave_values_out() -> None:
    pg_like = ValueError('invalid input syntax for type integer: "079123456789"')
    assert "079123456789" not in describe_db_error(_dbapi(sa.exc.DataError, pg_like))
    check = sqlite3.IntegrityError("CHECK constraint failed: ck_year")
    assert describe_db_error(_dbapi(sa.exc.IntegrityError, check)) == (
        "IntegrityError CHECK constraint failed: ck_year"
    )
