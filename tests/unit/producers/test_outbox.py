"""The outbox's database logic and row checks, on a SQLite file (no broker)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from producers.outbox import (
    OutboxEvent,
    OutboxRow,
    RowError,
    create_outbox_table,
    decode_row,
    fetch_pending,
    mark_failed,
    mark_sent,
    parse_op,
)
from schemas.models.common import Op

DOSSIER: dict[str, Any] = {
    "dossier_id": "HS-OUTBOX-1",
    "dossier_code": "000.00.12.H19-250801-0012",
    "procedure_code": "1.001612",
    "procedure_name": "Đăng ký thành lập hộ kinh doanh",
    "receiving_unit_code": "DNA.SCT",
    "admin_unit_code": "20194",
    "applicant_citizen_id": "048190000042",
    "applicant_name": "Trần Văn Lộc",
    "applicant_birth_date": "1990-02-01",
    "applicant_sex": "MALE",
    "status": "IN_PROGRESS",
    "channel": "ONLINE",
    "received_at": "2025-08-01T08:30:00+07:00",
    "due_at": "2025-08-06T17:00:00+07:00",
    "completed_at": None,
}


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")


@pytest.fixture
def table(engine: sa.Engine) -> sa.Table:
    return create_outbox_table(engine)


def insert(engine: sa.Engine, table: sa.Table, n: int, **overrides: Any) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with engine.begin() as conn:
        for i, event_id in enumerate(ids):
            values = {
                "id": uuid.UUID(event_id),
                "aggregatetype": "publicservice.dossiers",
                "aggregateid": f"HS-{i % 3}",
                "type": "c",
                "payload": {**DOSSIER, "dossier_id": f"HS-{i % 3}"},
            }
            values.update(overrides)
            conn.execute(sa.insert(table).values(**values))
    return ids


def row(**changes: Any) -> OutboxRow:
    fields: dict[str, Any] = {
        "seq": 7,
        "id": str(uuid.uuid4()),
        "aggregatetype": "publicservice.dossiers",
        "aggregateid": DOSSIER["dossier_id"],
        "type": "u",
        "payload": dict(DOSSIER),
        "created_at": datetime(2025, 8, 1, 1, 30),
    }
    fields.update(changes)
    return OutboxRow(**fields)


def test_create_is_idempotent(engine: sa.Engine, table: sa.Table) -> None:
    create_outbox_table(engine)  # a second call finds the table and leaves it
    assert set(sa.inspect(engine).get_table_names()) == {"databus_outbox"}
    cols = {c["name"] for c in sa.inspect(engine).get_columns("databus_outbox")}
    assert cols == {
        "seq", "id", "aggregatetype", "aggregateid", "type", "payload",
        "created_at", "sent_at", "error",
    }  # fmt: skip


def test_fetch_returns_pending_rows_in_seq_order_up_to_limit(
    engine: sa.Engine, table: sa.Table
) -> None:
    ids = insert(engine, table, 10)
    with engine.connect() as conn:
        rows = fetch_pending(conn, table, 4)
    assert [r.id for r in rows] == ids[:4]
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    assert rows[0].payload["dossier_id"] == "HS-0"
    assert rows[0].created_at is not None


def test_marked_rows_are_not_fetched_again(engine: sa.Engine, table: sa.Table) -> None:
    ids = insert(engine, table, 6)
    at = datetime(2025, 8, 1, tzinfo=UTC)
    with engine.begin() as conn:
        rows = fetch_pending(conn, table, 3)
        assert mark_sent(conn, table, [r.seq for r in rows[:2]], at) == 2
        mark_failed(conn, table, [RowError(rows[2].seq, rows[2].id, "x", "bad", "m" * 5000)])
    with engine.connect() as conn:
        assert [r.id for r in fetch_pending(conn, table, 100)] == ids[3:]
        errors = conn.execute(sa.select(table.c.error).where(table.c.error.is_not(None)))
        assert [len(e) for (e,) in errors] == [1000]  # bounded
        assert mark_sent(conn, table, [], at) == 0


def test_rolled_back_marks_leave_rows_pending(engine: sa.Engine, table: sa.Table) -> None:
    ids = insert(engine, table, 3)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        rows = fetch_pending(conn, table, 10)
        mark_sent(conn, table, [r.seq for r in rows], datetime.now(UTC))
        raise RuntimeError("crash before commit")
    with engine.connect() as conn:
        assert [r.id for r in fetch_pending(conn, table, 10)] == ids


@pytest.mark.parametrize(
    ("value", "op"),
    [("c", Op.CREATE), ("Created", Op.CREATE), ("INSERT", Op.CREATE), ("u", Op.UPDATE),
     ("updated", Op.UPDATE), ("d", Op.DELETE), (" deleted ", Op.DELETE), ("r", Op.READ),
     ("snapshot", Op.READ), ("merge", None), ("", None)],
)  # fmt: skip
def test_parse_op(value: str, op: Op | None) -> None:
    assert parse_op(value) is op


def test_decode_valid_row() -> None:
    r = row()
    event = decode_row(r)
    assert isinstance(event, OutboxEvent)
    assert (event.seq, event.event_id, event.op) == (7, r.id, Op.UPDATE)
    assert event.dataset.id == "publicservice.dossiers"
    assert event.changed_at == datetime(2025, 8, 1, 1, 30, tzinfo=UTC)  # naive = UTC


def test_decode_accepts_a_text_payload() -> None:
    import json

    assert isinstance(decode_row(row(payload=json.dumps(DOSSIER))), OutboxEvent)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aggregatetype": "nope.nothing"}, "unknown_dataset"),
        ({"type": "merge"}, "unknown_op"),
        ({"payload": "{not json"}, "invalid_json"),
        ({"payload": [1, 2]}, "invalid_payload"),
        ({"payload": {**DOSSIER, "status": "LOST", "received_at": None}}, "invalid_payload"),
        ({"aggregateid": "HS-OTHER"}, "key_mismatch"),
    ],
)
def test_decode_refuses_with_a_reason(changes: dict[str, Any], reason: str) -> None:
    error = decode_row(row(**changes))
    assert isinstance(error, RowError)
    assert error.reason == reason


def test_refusal_message_names_fields_never_values() -> None:
    bad = {**DOSSIER, "applicant_citizen_id": 48190000042, "status": "LOST"}
    error = decode_row(row(payload=bad))
    assert isinstance(error, RowError)
    assert "status" in error.message
    for value in ("48190000042", "LOST", "Trần Văn Lộc", "1990-02-01"):
        assert value not in error.message
