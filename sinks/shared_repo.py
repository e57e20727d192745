"""Shared repository sink: every dataset's std events in SQL (PostgreSQL, or SQLite).

Per dataset a current-state table and an append-only history table; their layout,
and how Avro types map to SQL, are in :mod:`sinks.sql_tables`.

Idempotence, so at-least-once delivery never duplicates or regresses data:

- The current table is written with ``INSERT ... ON CONFLICT (key) DO UPDATE ...
  WHERE excluded._version > t._version OR (excluded._version = t._version AND
  excluded._event_id > t._event_id)``: an older event is ignored, a replay of the same
  event is ignored, and two events with one version converge on the greater id, so
  every delivery order ends in the same table. Within a batch only each key's winner
  is sent (the same order), which also keeps one statement from touching a row twice.
- A delete (op ``d``) writes a tombstone: ``_deleted = true``, the last state from
  ``before``, the delete's version. A late, older create cannot resurrect the row.
- The history table's primary key is the event id; inserts are ``ON CONFLICT DO
  NOTHING RETURNING _event_id``, so a replayed event is stored once. A history row is
  never dropped silently: an event id the insert did not take is looked up, and unless
  the stored row is the same change (same key and version: a replay), the event is
  refused as ``Rejected(reason="event_id_reused")`` — another entity (or version) already
  holds that id — and neither table is written for it. Two events of one batch with one
  id are judged the same way. The processor dead-letters such reuse within its window
  (``stream_processors.event_ids``); this is the check beyond it.

Personal fields are stored: the repository is internal to the province and its
processing record must be complete; what leaves it (open data, ``sinks.open_data``)
drops them.

Schema evolution: ``setup`` creates missing tables and adds, as nullable columns, every
field of every revision of the std schema the live table lacks (``ALTER TABLE ... ADD
COLUMN``, never a drop). A record with a field no known schema has (a producer already
on a newer revision) adds its column on the fly, typed from the value.

Failures: one transaction per batch (``batch_size`` records), rows sent with
``executemany``. Connection lost, server restarting, timeouts, serialization failures
and deadlocks raise a retriable ``SinkError`` (nothing of the batch is committed). A
batch the database refuses (integrity or data error) is rolled back and written again
record by record, each in a savepoint: the refused records come back as
``Rejected(reason="db_rejected")`` (error class, SQLSTATE and constraint, never the
values), the rest is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bus.errors import ConfigError, SinkError
from bus.private_files import private_sqlite
from bus.settings import Settings
from schemas.catalog import DATASETS, Dataset, load_schema, schema_revisions
from sinks.base import Rejected, SinkRecord
from sinks.sql_tables import (
    FieldColumn,
    current_table,
    field_columns,
    history_table,
    infer_column,
    sql_value,
)

__all__ = [
    "DbOutcome",
    "SharedRepoSink",
    "classify_db_error",
    "create_repo_engine",
    "dataset_columns",
    "describe_db_error",
    "repo_engine_from_settings",
]

log = logging.getLogger(__name__)

DbOutcome = Literal["retry", "reject", "broken"]

# SQLite reports a missing table or column as OperationalError, like a locked database;
# these will not heal by waiting.
_SQLITE_BROKEN = ("no such table", "no such column", "has no column named", "syntax error")


def create_repo_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for the shared repository: pre-ping (a connection the server dropped is
    replaced before use); on SQLite, real transactions (pysqlite's own handling breaks
    savepoints), a busy timeout and WAL so exports read while the sink writes."""
    is_sqlite = url.startswith("sqlite")
    database = sa.engine.make_url(url).database if is_sqlite else None
    if database and database != ":memory:" and not database.startswith("file:"):
        # citizen ids live here: the file (and so its -wal/-shm) is owner-only
        private_sqlite(Path(database))
    connect_args: dict[str, Any] = {"timeout": 30} if is_sqlite else {"connect_timeout": 10}
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    if is_sqlite:

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    return engine


def repo_engine_from_settings(settings: Settings) -> sa.Engine:
    return create_repo_engine(settings.shared_repo.resolved_url(settings.data_dir))


def dataset_columns(
    dataset: Dataset, extra_schemas: Iterable[Mapping[str, Any]] = ()
) -> list[FieldColumn]:
    """The columns of every revision of the dataset's std schema (then ``extra_schemas``):
    the current revision's order first, then fields only older or newer ones have."""
    envelopes = [json.loads(load_schema(p)) for p in schema_revisions(dataset.std_value_schema)]
    ordered = [envelopes[-1], *envelopes[:-1], *extra_schemas]
    columns: dict[str, FieldColumn] = {}
    for envelope in ordered:
        for column in field_columns(envelope):
            columns.setdefault(column.name, column)
    return list(columns.values())


@dataclass
class _Tables:
    dataset: Dataset
    current: sa.Table
    history: sa.Table
    columns: list[FieldColumn]
    top_level: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.top_level = {c.path[0] for c in self.columns}


@dataclass(frozen=True, slots=True)
class _Event:
    record: SinkRecord
    dataset: Dataset
    op: str
    event_id: UUID
    version: int
    image: Mapping[str, Any]
    source_ts: Any
    event_ts: Any
    source_system: Any
    source_unit: Any

    @property
    def order(self) -> tuple[int, UUID]:
        return (self.version, self.event_id)


class SharedRepoSink:
    """Writes std events of catalog datasets to the shared repository.

    ``datasets``: the ones this sink owns (default: every dataset with a std schema);
    ``schemas``: extra envelope schemas per dataset id (a revision not shipped yet);
    ``db_schema``: the PostgreSQL schema holding the tables (None: the default one).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        db_schema: str | None = None,
        datasets: Iterable[Dataset] | None = None,
        schemas: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        batch_size: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        owns_engine: bool = False,
    ) -> None:
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise ConfigError(f"shared repository: unsupported database {engine.dialect.name}")
        self._engine = engine
        self._schema = db_schema
        chosen = (
            list(datasets)
            if datasets is not None
            else [d for d in DATASETS.values() if d.std_schema is not None]
        )
        self._datasets = {d.id: d for d in chosen}
        self._by_topic = {d.std_topic: d for d in chosen}
        self._extra = {k: list(v) for k, v in (schemas or {}).items()}
        self._batch_size = batch_size
        self._clock = clock
        self._owns_engine = owns_engine
        self._tables: dict[str, _Tables] = {}
        self._statement_cache: dict[tuple[str, int, int], tuple[sa.Executable, sa.Executable]] = {}
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SharedRepoSink:
        repo = settings.shared_repo
        return cls(
            repo_engine_from_settings(settings),
            db_schema=repo.db_schema,
            batch_size=repo.batch_size,
            owns_engine=True,
        )

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def tables(self, dataset_id: str) -> tuple[sa.Table, sa.Table]:
        """The (current, history) tables of a dataset, as the sink knows them."""
        t = self._tables[dataset_id]
        return t.current, t.history

    # ---- setup and schema evolution -----------------------------------------------

    def setup(self) -> None:
        try:
            with self._engine.begin() as conn:
                if self._schema is not None and self._engine.dialect.name == "postgresql":
                    conn.execute(sa.schema.CreateSchema(self._schema, if_not_exists=True))
            for dataset in self._datasets.values():
                self._setup_dataset(dataset)
        except sa.exc.SQLAlchemyError as exc:
            raise _sink_error(exc, "setup") from exc

    def _setup_dataset(self, dataset: Dataset) -> None:
        columns = dataset_columns(dataset, self._extra.get(dataset.id, ()))
        metadata = sa.MetaData()
        current = current_table(dataset, columns, metadata, schema=self._schema)
        history = history_table(dataset, columns, metadata, schema=self._schema)
        with self._engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
        tables = _Tables(dataset, current, history, columns)
        self._tables[dataset.id] = tables
        self._reconcile(tables, columns)

    def _reconcile(self, tables: _Tables, wanted: Iterable[FieldColumn]) -> None:
        """Add the wanted columns the live tables lack; learn the live columns this sink
        did not know (added by a newer instance), so updates never leave them stale."""
        with self._engine.begin() as conn:
            inspector = sa.inspect(conn)
            for table in (tables.current, tables.history):
                live = {
                    c["name"]: c for c in inspector.get_columns(table.name, schema=self._schema)
                }
                for column in wanted:
                    if column.name not in live:
                        self._add_column(conn, table, column)
                    elif column.name not in table.c:
                        table.append_column(sa.Column(column.name, column.type, nullable=True))
                for name, info in live.items():
                    if name not in table.c:
                        table.append_column(sa.Column(name, info["type"], nullable=True))
                        if table is tables.current and not name.startswith("_"):
                            tables.columns.append(FieldColumn(name, (name,), info["type"]))
        tables.top_level = {c.path[0] for c in tables.columns}

    def _add_column(self, conn: sa.Connection, table: sa.Table, column: FieldColumn) -> None:
        dialect = conn.dialect
        prep = dialect.identifier_preparer
        col = sa.Column(column.name, column.type, nullable=True)
        exists = "IF NOT EXISTS " if dialect.name == "postgresql" else ""
        ddl = (
            f"ALTER TABLE {prep.format_table(table)} ADD COLUMN {exists}"
            f"{prep.quote(column.name)} {column.type.compile(dialect=dialect)}"
        )
        if dialect.name == "sqlite":
            # another writer may have added it meanwhile; SQLite has no IF NOT EXISTS here
            with conn.begin_nested():
                names = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
                if column.name not in names:
                    conn.exec_driver_sql(ddl)
        else:
            conn.exec_driver_sql(ddl)
        if column.name not in table.c:
            table.append_column(col)
        log.info("shared repository: added column %s.%s", table.name, column.name)

    def _evolve(self, events: Sequence[_Event]) -> None:
        """Columns for fields no known schema has, typed from their first non-null value."""
        for dataset_id in {e.dataset.id for e in events}:
            tables = self._tables[dataset_id]
            new: dict[str, FieldColumn] = {}
            for event in events:
                if event.dataset.id != dataset_id:
                    continue
                for name, value in event.image.items():
                    if name in tables.top_level or name in new or name.startswith("_"):
                        continue
                    column = infer_column(name, value)
                    if column is not None:
                        new[name] = column
            if new:
                tables.columns.extend(new.values())
                self._reconcile(tables, new.values())

    # ---- writing --------------------------------------------------------------------

    def write(self, batch: Sequence[SinkRecord]) -> Sequence[Rejected]:
        if self._closed:
            raise SinkError("shared repository sink is closed", retriable=False)
        if not self._tables and self._datasets:
            self.setup()
        rejected: list[Rejected] = []
        events: list[_Event] = []
        for record in batch:
            parsed = self._parse(record)
            if isinstance(parsed, Rejected):
                rejected.append(parsed)
            else:
                events.append(parsed)
        try:
            self._evolve(events)
        except sa.exc.SQLAlchemyError as exc:
            raise _sink_error(exc, "schema evolution") from exc
        for start in range(0, len(events), self._batch_size):
            rejected.extend(self._write_chunk(events[start : start + self._batch_size]))
        return rejected

    def _parse(self, record: SinkRecord) -> _Event | Rejected:
        value = record.value
        source = value.get("source") if isinstance(value.get("source"), Mapping) else None
        dataset = self._by_topic.get(record.topic)
        if dataset is None and source is not None:
            dataset = self._datasets.get(str(source.get("dataset")))
        if dataset is None:
            return Rejected(record, "malformed", f"no dataset of this sink for {record.topic}")
        op = value.get("op")
        image = value.get("before") if op == "d" else value.get("after")
        if op not in ("c", "u", "d", "r") or not isinstance(image, Mapping) or source is None:
            return Rejected(record, "malformed", "not a change event with op, source and image")
        missing = [k for k in dataset.key_fields if image.get(k) is None]
        if missing:
            return Rejected(record, "malformed", f"key fields missing: {missing}")
        try:
            raw_id = value.get("event_id")
            event_id = raw_id if isinstance(raw_id, UUID) else UUID(str(raw_id))
            version = int(source["version"])
        except (KeyError, TypeError, ValueError):
            return Rejected(record, "malformed", "event_id or source.version invalid")
        return _Event(
            record=record,
            dataset=dataset,
            op=str(op),
            event_id=event_id,
            version=version,
            image=image,
            source_ts=source.get("ts_ms"),
            event_ts=value.get("ts_ms"),
            source_system=source.get("system"),
            source_unit=source.get("unit"),
        )

    def _rows(self, event: _Event, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        tables = self._tables[event.dataset.id]
        fields = {c.name: c.value_of(event.image) for c in tables.columns}
        for name, value in event.image.items():
            # a field learnt from the live table (added by another instance)
            if name not in fields and name in tables.current.c:
                fields[name] = sql_value(value, tables.current.c[name].type)
        when = {"_source_ts": sql_value(event.source_ts, sa.DateTime())}
        when["_event_ts"] = sql_value(event.event_ts, sa.DateTime())
        current = {
            **fields,
            "_version": event.version,
            "_event_id": event.event_id,
            "_op": event.op,
            "_deleted": event.op == "d",
            **when,
            "_updated_at": now,
        }
        history = {
            **fields,
            "_event_id": event.event_id,
            "_version": event.version,
            "_op": event.op,
            **when,
            "_source_system": event.source_system,
            "_source_unit": event.source_unit,
            "_recorded_at": now,
        }
        return current, history

    def _statements(self, tables: _Tables) -> tuple[sa.Executable, sa.Executable]:
        # a column added since the last build changes the statements
        shape = (tables.dataset.id, len(tables.current.c), len(tables.history.c))
        cached = self._statement_cache.get(shape)
        if cached is None:
            cached = self._statement_cache[shape] = self._build_statements(tables)
        return cached

    def _build_statements(self, tables: _Tables) -> tuple[sa.Executable, sa.Executable]:
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        t = tables.current
        up = insert(t)
        keys = [t.c[k] for k in tables.dataset.key_fields]
        guard = (up.excluded._version > t.c._version) | (
            (up.excluded._version == t.c._version) & (up.excluded._event_id > t.c._event_id)
        )
        upsert = up.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: up.excluded[c.name] for c in t.columns if not c.primary_key},
            where=guard,
        )
        append = (
            insert(tables.history)
            .on_conflict_do_nothing(index_elements=["_event_id"])
            .returning(tables.history.c._event_id)
        )
        return upsert, append

    def _write_chunk(self, events: Sequence[_Event]) -> list[Rejected]:
        if not events:
            return []
        now = self._clock()
        try:
            try:
                with self._engine.begin() as conn:
                    return self._write_batch(conn, events, now)
            except sa.exc.SQLAlchemyError as exc:
                if classify_db_error(exc) != "reject":
                    raise
                log.warning(
                    "shared repository: batch refused (%s), writing record by record",
                    type(exc).__name__,
                )
            with self._engine.begin() as conn:
                return self._write_one_by_one(conn, events, now)
        except sa.exc.SQLAlchemyError as exc:
            raise _sink_error(exc, "write") from exc

    def _write_batch(
        self, conn: sa.Connection, events: Sequence[_Event], now: datetime
    ) -> list[Rejected]:
        by_dataset: dict[str, list[_Event]] = {}
        for event in events:
            by_dataset.setdefault(event.dataset.id, []).append(event)
        rejected: list[Rejected] = []
        for dataset_id, group in by_dataset.items():
            tables = self._tables[dataset_id]
            key_fields = tables.dataset.key_fields
            upsert, append = self._statements(tables)
            seen: dict[UUID, tuple[Any, ...]] = {}  # event id -> (key..., version)
            taken: list[tuple[_Event, dict[str, Any]]] = []
            history_rows: list[dict[str, Any]] = []
            for event in group:
                current, history = self._rows(event, now)
                change = _change(current, key_fields, event.version)
                first = seen.get(event.event_id)
                if first is not None:
                    if first != change:  # one id, two changes in one batch
                        rejected.append(_reused(event))
                    continue  # else the same event twice: stored once
                seen[event.event_id] = change
                history_rows.append(history)
                taken.append((event, current))
            inserted = {_uuid(row[0]) for row in conn.execute(append, history_rows)}
            missing = [e.event_id for e, _ in taken if e.event_id not in inserted]
            stored = self._stored_changes(conn, tables, missing) if missing else {}
            winners: dict[tuple[Any, ...], tuple[_Event, dict[str, Any]]] = {}
            for event, current in taken:
                held = stored.get(event.event_id)
                if held is not None and held != seen[event.event_id]:
                    rejected.append(_reused(event))
                    continue
                key = tuple(current[k] for k in key_fields)
                best = winners.get(key)
                if best is None or event.order > best[0].order:
                    winners[key] = (event, current)
            if winners:
                conn.execute(upsert, [row for _, row in winners.values()])
        return rejected

    def _stored_changes(
        self, conn: sa.Connection, tables: _Tables, event_ids: Sequence[UUID]
    ) -> dict[UUID, tuple[Any, ...]]:
        """(key..., version) of the history rows already holding these event ids."""
        h = tables.history
        key_fields = tables.dataset.key_fields
        query = sa.select(h.c._event_id, *(h.c[k] for k in key_fields), h.c._version).where(
            h.c._event_id.in_(list(event_ids))
        )
        found: dict[UUID, tuple[Any, ...]] = {}
        for row in conn.execute(query):
            stored = dict(zip(key_fields, row[1:-1], strict=True))
            found[_uuid(row[0])] = _change(stored, key_fields, int(row[-1]))
        return found

    def _write_one_by_one(
        self, conn: sa.Connection, events: Sequence[_Event], now: datetime
    ) -> list[Rejected]:
        rejected: list[Rejected] = []
        for event in events:
            upsert, append = self._statements(self._tables[event.dataset.id])
            current, history = self._rows(event, now)
            savepoint = conn.begin_nested()
            try:
                if not list(conn.execute(append, [history])):
                    tables = self._tables[event.dataset.id]
                    held = self._stored_changes(conn, tables, [event.event_id])
                    change = _change(current, tables.dataset.key_fields, event.version)
                    if held.get(event.event_id, change) != change:
                        savepoint.rollback()
                        rejected.append(_reused(event))
                        continue
                conn.execute(upsert, [current])
                savepoint.commit()
            except sa.exc.SQLAlchemyError as exc:
                savepoint.rollback()
                if classify_db_error(exc) != "reject":
                    raise
                rejected.append(
                    Rejected(
                        event.record,
                        "db_rejected",
                        describe_db_error(exc),
                        exception_class=_exception_class(exc),
                    )
                )
        return rejected

    def flush(self) -> None:
        """Nothing is buffered: every ``write`` commits before returning."""

    def close(self) -> None:
        self._closed = True
        if self._owns_engine:
            self._engine.dispose()


# ---- event ids ---------------------------------------------------------------------


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _comparable(value: Any) -> Any:
    # SQLite hands back naive UTC datetimes; the rows bind aware ones.
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _change(row: Mapping[str, Any], key_fields: Sequence[str], version: int) -> tuple[Any, ...]:
    """What an event id names: one version of one entity."""
    return (*(_comparable(row[k]) for k in key_fields), version)


def _reused(event: _Event) -> Rejected:
    return Rejected(
        event.record,
        "event_id_reused",
        f"event id {event.event_id} is already in {event.dataset.id}'s history "
        "for another entity or version",
        exception_class="Conflict",
    )


# ---- errors ----------------------------------------------------------------------


def classify_db_error(exc: BaseException) -> DbOutcome:
    """What a database error means for the sink: ``retry`` (the server is unavailable,
    the batch is sent again), ``reject`` (the record is refused for good) or ``broken``
    (the sink or its tables are wrong: the runner stops)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return "retry"
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return "reject"
    if isinstance(exc, sa.exc.OperationalError):
        message = str(exc.orig).lower()
        if any(marker in message for marker in _SQLITE_BROKEN):
            return "broken"
        return "retry"
    if isinstance(exc, sa.exc.InterfaceError | sa.exc.InternalError):
        return "retry"
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError):
        return "retry"
    if isinstance(exc, sa.exc.StatementError) and isinstance(
        exc.orig, TypeError | ValueError | OverflowError
    ):
        # a value the driver cannot bind for its column (e.g. out of range)
        return "reject"
    return "broken"


def _exception_class(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return type(orig if orig is not None else exc).__name__


def describe_db_error(exc: BaseException) -> str:
    """The database's reason without the values: error class, SQLSTATE, constraint,
    table and column names; for other messages only the part before the first colon
    (PostgreSQL and Python put the offending value after it)."""
    orig = getattr(exc, "orig", None) or exc
    parts = [type(orig).__name__]
    diag = getattr(orig, "diag", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        parts.append(f"sqlstate={sqlstate}")
    if diag is not None:
        for name in ("constraint_name", "table_name", "column_name"):
            if getattr(diag, name, None):
                parts.append(f"{name.removesuffix('_name')}={getattr(diag, name)}")
        primary = getattr(diag, "message_primary", None) or ""
        parts.append(primary.split(":", 1)[0])
    else:
        message = str(orig).splitlines()[0] if str(orig) else ""
        # SQLite: "CHECK constraint failed: name" names the constraint, never a value
        parts.append(message if "constraint failed" in message else message.split(":", 1)[0])
    return " ".join(p for p in parts if p)[:500]


def _sink_error(exc: sa.exc.SQLAlchemyError, during: str) -> SinkError:
    outcome = classify_db_error(exc)
    return SinkError(
        f"shared repository {during} failed: {_exception_class(exc)} ({describe_db_error(exc)})",
        retriable=outcome == "retry",
    )
