"""The outbox poller: change events from a source system's own SQL database.

A source system that owns a SQL database writes each change to an *outbox table* in
the same transaction as the change itself (the transactional-outbox pattern, with the
column names of Debezium's EventRouter). The poller reads the rows not yet sent, in
``seq`` order, validates each payload with its dataset's pydantic model, publishes it
through the ``Publisher``, waits until the broker acknowledged every event of the
batch (``Publisher.flush()``), and only then marks the batch sent, in one transaction.

The table (``create_outbox_table`` creates it; PostgreSQL DDL, the same on SQLite with
``INTEGER PRIMARY KEY`` and text columns)::

    CREATE TABLE databus_outbox (
        seq           BIGSERIAL PRIMARY KEY,     -- order of the changes; the event version
        id            UUID NOT NULL UNIQUE,      -- the event id (CloudEvents ce_id)
        aggregatetype VARCHAR(200) NOT NULL,     -- catalog dataset id: publicservice.dossiers
        aggregateid   VARCHAR(200) NOT NULL,     -- entity id = the Kafka key
        type          VARCHAR(32)  NOT NULL,     -- c/u/d/r, or created/updated/deleted/...
        payload       JSON NOT NULL,             -- the record (for a delete: the last state)
        created_at    TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,  -- source.ts_ms
        sent_at       TIMESTAMPTZ NULL,          -- filled by the poller
        error         TEXT NULL                  -- filled by the poller for a refused row
    );
    CREATE INDEX ix_databus_outbox_pending ON databus_outbox (sent_at, error, seq);

Guarantees and conventions:

- **At-least-once, in order per key.** A batch is marked sent only after every one of
  its events was acknowledged; if delivery fails, nothing of the batch is marked and the
  next poll sends the whole batch again, in order. A crash between the broker's
  acknowledgement and the marking re-sends rows with the *same* event id (``id``), so
  consumers deduplicate on ``event_id`` / ``ce_id``.
- **Version.** ``source.version`` is the row's ``seq``: it increases with every change,
  so it increases per key too, and sinks keep the highest version they saw.
- **Refused rows do not block the outbox.** A row whose ``aggregatetype`` is not in the
  catalog, whose ``type`` is not an operation, whose payload fails the dataset's model
  or whose ``aggregateid`` is not the payload's key gets a message in ``error`` (field
  names and reasons only, never values) and is skipped from then on. It is counted in
  ``PollResult.failed`` and logged without personal data. The owning unit must fix it:
  write a corrected row (a new ``id``), or correct the payload and clear ``error``.
- **One poller per table.** On PostgreSQL the batch is read ``FOR UPDATE``, so a
  second poller started by mistake waits for the first instead of interleaving.
- Source teams delete sent rows on their own schedule (e.g. ``sent_at`` older than 7
  days); the poller never deletes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from bus.errors import ConfigError, DatabusError, PublishValidationError
from schemas.catalog import Dataset, get_dataset
from schemas.models.common import Op

__all__ = [
    "DEFAULT_TABLE",
    "EventPublisher",
    "OutboxEvent",
    "OutboxPoller",
    "OutboxRow",
    "PollResult",
    "RowError",
    "create_outbox_table",
    "decode_row",
    "fetch_pending",
    "mark_failed",
    "mark_sent",
    "outbox_table",
    "parse_op",
]

log = logging.getLogger(__name__)

DEFAULT_TABLE = "databus_outbox"

# The verbs source teams commonly write in `type`, mapped to Debezium's op codes.
_OPS: dict[str, Op] = {
    "c": Op.CREATE,
    "create": Op.CREATE,
    "created": Op.CREATE,
    "insert": Op.CREATE,
    "inserted": Op.CREATE,
    "u": Op.UPDATE,
    "update": Op.UPDATE,
    "updated": Op.UPDATE,
    "d": Op.DELETE,
    "delete": Op.DELETE,
    "deleted": Op.DELETE,
    "r": Op.READ,
    "read": Op.READ,
    "snapshot": Op.READ,
}

_ERROR_MAX = 1000  # characters kept in the `error` column


def outbox_table(
    name: str = DEFAULT_TABLE, *, schema: str | None = None, metadata: sa.MetaData | None = None
) -> sa.Table:
    """The outbox table as SQLAlchemy Core sees it (see the module docstring for DDL)."""
    md = metadata if metadata is not None else sa.MetaData(schema=schema)
    return sa.Table(
        name,
        md,
        # SQLite auto-increments only an INTEGER PRIMARY KEY, not a BIGINT one.
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.Uuid(), nullable=False, unique=True),
        sa.Column("aggregatetype", sa.String(200), nullable=False),
        sa.Column("aggregateid", sa.String(200), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Index(f"ix_{name}_pending", "sent_at", "error", "seq"),
        schema=schema,
    )


def create_outbox_table(
    engine: sa.Engine, name: str = DEFAULT_TABLE, *, schema: str | None = None
) -> sa.Table:
    """Create the outbox table (and its index) if it does not exist; returns it."""
    table = outbox_table(name, schema=schema)
    table.metadata.create_all(engine, checkfirst=True)
    return table


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    id: str
    aggregatetype: str
    aggregateid: str
    type: str
    payload: Any
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A row ready to publish."""

    seq: int
    event_id: str
    dataset: Dataset
    op: Op
    record: BaseModel
    changed_at: datetime | None


@dataclass(frozen=True, slots=True)
class RowError:
    """A row refused for good; ``message`` names fields and reasons, never values."""

    seq: int
    event_id: str
    dataset_id: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class PollResult:
    sent: int = 0
    failed: int = 0


def fetch_pending(conn: sa.Connection, table: sa.Table, limit: int) -> list[OutboxRow]:
    """The oldest rows neither sent nor refused, in ``seq`` order."""
    c = table.c
    query = (
        sa.select(c.seq, c.id, c.aggregatetype, c.aggregateid, c.type, c.payload, c.created_at)
        .where(c.sent_at.is_(None), c.error.is_(None))
        .order_by(c.seq)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return [
        OutboxRow(
            seq=int(r.seq),
            id=str(r.id),
            aggregatetype=str(r.aggregatetype),
            aggregateid=str(r.aggregateid),
            type=str(r.type),
            payload=r.payload,
            created_at=r.created_at,
        )
        for r in conn.execute(query)
    ]


def mark_sent(conn: sa.Connection, table: sa.Table, seqs: Sequence[int], at: datetime) -> int:
    """Set ``sent_at`` on these rows; returns how many were updated."""
    if not seqs:
        return 0
    c = table.c
    result = conn.execute(sa.update(table).where(c.seq.in_(list(seqs))).values(sent_at=at))
    return int(result.rowcount)


def mark_failed(conn: sa.Connection, table: sa.Table, errors: Sequence[RowError]) -> None:
    """Write each refused row's message to ``error``."""
    if not errors:
        return
    stmt = (
        sa.update(table)
        .where(table.c.seq == sa.bindparam("b_seq"))
        .values(error=sa.bindparam("b_error"))
    )
    conn.execute(stmt, [{"b_seq": e.seq, "b_error": e.message[:_ERROR_MAX]} for e in errors])


def parse_op(value: str) -> Op | None:
    """The op for a ``type`` value (c/u/d/r or a common verb, any case), else None."""
    return _OPS.get(value.strip().lower())


def _problems(exc: PydanticValidationError) -> str:
    # Field names and messages only: input values may hold personal data.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(record)'}: {err['msg']}"
        for err in exc.errors()
    )


def decode_row(row: OutboxRow) -> OutboxEvent | RowError:
    """Check one row against the catalog and its dataset's model (no I/O)."""

    def refuse(reason: str, message: str) -> RowError:
        return RowError(row.seq, row.id, row.aggregatetype, reason, message)

    try:
        dataset = get_dataset(row.aggregatetype)
    except (ConfigError, KeyError):
        return refuse("unknown_dataset", f"aggregatetype {row.aggregatetype!r} is not a dataset")
    op = parse_op(row.type)
    if op is None:
        return refuse("unknown_op", f"type {row.type!r} is not c/u/d/r or a known verb")
    payload = row.payload
    if isinstance(payload, str | bytes):  # a TEXT payload column, or a driver without JSON
        try:
            payload = json.loads(payload)
        except ValueError:
            return refuse("invalid_json", "payload is not JSON")
    if not isinstance(payload, Mapping):
        return refuse("invalid_payload", "payload is not a JSON object")
    try:
        record = dataset.model.model_validate(payload)
    except PydanticValidationError as exc:
        return refuse("invalid_payload", f"invalid {dataset.model.__name__}: {_problems(exc)}")
    key = dataset.key_of(record.model_dump(mode="json"))
    if key != row.aggregateid:
        return refuse("key_mismatch", f"aggregateid is not the payload's {dataset.key_field}")
    changed_at = row.created_at
    if changed_at is not None and changed_at.tzinfo is None:
        changed_at = changed_at.replace(tzinfo=UTC)  # SQLite's CURRENT_TIMESTAMP is UTC
    return OutboxEvent(row.seq, row.id, dataset, op, record, changed_at)


class EventPublisher(Protocol):
    """What the poller needs of ``producers.publisher.Publisher``."""

    def publish(
        self,
        dataset: Dataset,
        after: BaseModel | None,
        *,
        version: int,
        op: Op = ...,
        before: BaseModel | None = ...,
        changed_at: datetime | None = ...,
        unit: str | None = ...,
        event_id: str | None = ...,
    ) -> str: ...

    def flush(self, timeout: float = ...) -> None: ...


class OutboxPoller:
    """Moves outbox rows to Kafka through a ``Publisher`` (see the module docstring)."""

    def __init__(
        self,
        engine: sa.Engine,
        publisher: EventPublisher,
        *,
        table: sa.Table | None = None,
        batch_size: int = 500,
        interval_s: float = 1.0,
        flush_timeout_s: float = 60.0,
    ) -> None:
        if batch_size <= 0 or interval_s <= 0 or flush_timeout_s <= 0:
            raise ConfigError("outbox batch size, interval and flush timeout must be positive")
        self._engine = engine
        self._publisher = publisher
        self._table = table if table is not None else outbox_table()
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._flush_timeout_s = flush_timeout_s
        self.sent_total = 0
        self.failed_total = 0

    @property
    def table(self) -> sa.Table:
        return self._table

    def poll_once(self) -> PollResult:
        """Send one batch; returns what was sent and what was refused.

        Raises ``DeliveryError`` (retriable) when the broker did not acknowledge every
        event: nothing of the batch is marked, and the next poll sends it again.
        """
        with self._engine.begin() as conn:
            rows = fetch_pending(conn, self._table, self._batch_size)
            if not rows:
                return PollResult()
            sent: list[int] = []
            errors: list[RowError] = []
            for row in rows:
                decoded = decode_row(row)
                if isinstance(decoded, OutboxEvent):
                    try:
                        self._publish(decoded)
                    except PublishValidationError as exc:
                        # Fits the model but not the Avro schema. The message may quote a
                        # value: keep it in the source's own table, not in the log.
                        decoded = RowError(
                            row.seq, row.id, row.aggregatetype, "schema_mismatch", str(exc)
                        )
                    else:
                        sent.append(row.seq)
                        continue
                errors.append(decoded)
                log.warning(
                    "outbox row seq=%d id=%s (%s) refused: %s; the owning unit must fix it",
                    decoded.seq,
                    decoded.event_id,
                    decoded.dataset_id,
                    decoded.message if decoded.reason != "schema_mismatch" else decoded.reason,
                )
            if sent:
                self._publisher.flush(self._flush_timeout_s)
            self._mark(conn, sent, errors)
        self.sent_total += len(sent)
        self.failed_total += len(errors)
        return PollResult(sent=len(sent), failed=len(errors))

    def _publish(self, event: OutboxEvent) -> None:
        deleted = event.op is Op.DELETE
        self._publisher.publish(
            event.dataset,
            None if deleted else event.record,
            before=event.record if deleted else None,
            version=event.seq,
            op=event.op,
            changed_at=event.changed_at,
            event_id=event.event_id,
        )

    def _mark(self, conn: sa.Connection, sent: Sequence[int], errors: Sequence[RowError]) -> None:
        mark_sent(conn, self._table, sent, datetime.now(UTC))
        mark_failed(conn, self._table, errors)

    def run(self, stop: threading.Event | None = None, *, max_polls: int | None = None) -> None:
        """Poll until ``stop`` is set (or ``max_polls`` polls ran).

        A full batch is followed at once by the next poll; otherwise the poller waits
        ``interval_s``. Retriable failures (broker, database) are logged and retried
        after the interval; anything else stops the loop.
        """
        stop = stop or threading.Event()
        polls = 0
        while not stop.is_set() and (max_polls is None or polls < max_polls):
            polls += 1
            try:
                result = self.poll_once()
            except DatabusError as exc:
                if not exc.retriable:
                    raise
                log.warning("outbox poll failed, retrying in %.1f s: %s", self._interval_s, exc)
                stop.wait(self._interval_s)
                continue
            except sa.exc.OperationalError as exc:
                # Connection lost, database restarting, lock timeout: retriable. The
                # driver's message may quote SQL parameters, so log only its class.
                log.warning(
                    "outbox database error (%s), retrying in %.1f s",
                    type(exc.orig).__name__,
                    self._interval_s,
                )
                stop.wait(self._interval_s)
                continue
            if result.sent or result.failed:
                log.info("outbox: %d sent, %d refused", result.sent, result.failed)
            if result.sent + result.failed < self._batch_size:
                stop.wait(self._interval_s)
