"""Backfilled records in the processor's pure core: written like any event, no rule moved.

The rule under test (``stream_processors.batch_core``): an entity's ``contributions`` are
always what its last *live* change contributed. A backfilled change records its
version (so later changes are compared with it) and carries the contributions over;
an entity only backfilled in a batch sends no delta; a redelivered backfilled record
re-sends its batch's delta only if a live change in that batch moved the contributions.

Real pieces: the dossier raw schema (Avro bytes, Confluent framing), the dossier
standardizer, ``alert_facts.contributions`` and ``quality.field_presence``. Only the
registry is left out: the stub pipeline decodes with the schema file itself.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, cast

import fastavro
import pytest

from schemas.catalog import DOSSIERS, load_schema
from schemas.codec import frame
from schemas.dead_letters import DeadLetter
from schemas.domain.reference import load_reference
from schemas.headers import BACKFILL_HEADER
from stream_processors.alerts.facts import contributions
from stream_processors.batch_core import (
    BatchCore,
    BatchOutput,
    RawRecord,
    is_backfill,
)
from stream_processors.pipeline import DatasetPipeline, Output
from stream_processors.quality import field_presence
from stream_processors.standardizers import STANDARDIZERS, Standardized

TOPIC = DOSSIERS.raw_topic
NOW = datetime(2025, 10, 20, 10, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
UNIT = "DNA.STP"


@cache
def _schema() -> Any:
    return fastavro.parse_schema(json.loads(load_schema(DOSSIERS.raw_schema)))


class StubPipeline:
    """DatasetPipeline's members BatchCore uses, without a registry."""

    dataset = DOSSIERS
    std_topic = DOSSIERS.std_topic

    def __init__(self) -> None:
        self._ref = load_reference()

    def decode(self, value: bytes | None) -> dict[str, Any] | DeadLetter:
        assert value is not None
        decoded = cast(
            dict[str, Any], fastavro.schemaless_reader(io.BytesIO(value[5:]), _schema(), _schema())
        )
        return decoded

    def standardize(self, raw: dict[str, Any], headers: Any = ()) -> Output | DeadLetter:
        result = STANDARDIZERS[DOSSIERS.id](raw, self._ref, NOW)
        assert isinstance(result, Standardized), result
        out_headers = [(k, v or b"") for k, v in headers]
        return Output(event=result.event, value=b"std", headers=out_headers, flags=result.flags)


def core() -> BatchCore:
    pipeline = cast(DatasetPipeline, StubPipeline())
    return BatchCore(
        {TOPIC: pipeline},
        frozenset({UNIT, DOSSIERS.owner_unit}),
        contributions=contributions,
        presence=field_presence,
    )


def _local(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def record(
    offset: int,
    *,
    version: int,
    status: str,
    completed: datetime | None = None,
    due: datetime = NOW - timedelta(days=5),
    at: datetime = NOW - timedelta(days=6),
    backfill: bool = False,
    dossier_id: str = "HS-BF-1",
    event_id: str | None = None,
) -> RawRecord:
    after = {
        "dossier_id": dossier_id,
        "dossier_code": "000.00.12.H19-250801-0012",
        "procedure_code": "1.001612",
        "procedure_name": "Đăng ký khai sinh",
        "receiving_unit_code": UNIT,
        "admin_unit_code": "75001",
        "applicant_citizen_id": "075190000042",
        "applicant_name": "Nguyễn Thị Hòa",
        "applicant_birth_date": "15/03/1990",
        "applicant_sex": "FEMALE",
        "status": status,
        "channel": "ONLINE",
        "received_at": _local(due - timedelta(days=3)),
        "due_at": _local(due),
        "completed_at": _local(completed) if completed else None,
    }
    envelope: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "op": "r",
        "ts_ms": NOW,
        "source": {
            "system": "test",
            "unit": UNIT,
            "dataset": DOSSIERS.id,
            "ts_ms": at,
            "version": version,
        },
        "before": None,
        "after": after,
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, _schema(), envelope)
    headers: list[tuple[str, bytes | None]] = [("ce_id", envelope["event_id"].encode())]
    if backfill:
        headers.append((BACKFILL_HEADER, b"1"))
    return RawRecord(TOPIC, 0, offset, dossier_id.encode(), frame(1, body.getvalue()), headers)


def deltas(out: BatchOutput) -> list[tuple[int, dict[str, Any]]]:
    return [(d["sign"], d["payload"]) for ds in out.deltas.values() for d in ds]


def state(c: BatchCore, key: bytes = b"HS-BF-1") -> Any:
    return c._entities[(TOPIC, 0)].get(key)


def run(c: BatchCore, *records: RawRecord) -> BatchOutput:
    out = c.process(list(records), NOW_MS)
    c.settle()
    return out


def _payload(
    status: str, completed: datetime | None, due: datetime
) -> list[tuple[str, str, dict[str, Any]]]:
    rec = record(0, version=1, status=status, completed=completed, due=due)
    raw = StubPipeline().decode(rec.value)
    out = StubPipeline().standardize(cast(dict[str, Any], raw))
    assert isinstance(out, Output)
    return contributions(DOSSIERS.id, out.event)


DUE = NOW - timedelta(days=5)
OPEN = _payload("IN_PROGRESS", None, DUE)
DONE_LATE = _payload("COMPLETED", DUE + timedelta(days=2), DUE)
DONE_ON_TIME = _payload("COMPLETED", DUE - timedelta(days=1), DUE)


def test_the_contributions_used_here_are_real_ones() -> None:
    assert OPEN[0][0] == "dossier_unit" and OPEN[0][2]["k"] == "open"
    assert DONE_LATE[0][2]["k"] == "late"
    assert DONE_ON_TIME[0][2]["k"] == "on_time"


def test_the_header_must_say_1() -> None:
    assert is_backfill([(BACKFILL_HEADER, b"1")])
    assert not is_backfill([(BACKFILL_HEADER, b"0")])
    assert not is_backfill([("ce_id", b"x")])


def test_a_backfilled_entity_is_written_and_counted_but_moves_no_rule() -> None:
    c = core()
    at = NOW - timedelta(days=40)
    out = run(
        c,
        record(
            10, version=7, status="COMPLETED", completed=DUE + timedelta(1), backfill=True, at=at
        ),
    )
    assert len(out.std) == 1 and out.std[0][0] == DOSSIERS.std_topic
    assert (BACKFILL_HEADER, b"1") in out.std[0][3]  # sinks can tell history too
    assert out.deltas == {}
    stats = out.stats[(DOSSIERS.id, UNIT)]
    assert (stats.received, stats.valid) == (1, 1)
    assert stats.last_event_ms == int(at.timestamp() * 1000)  # old: the ledger sees it late
    entity = state(c)
    assert (entity.version, entity.offset) == (7, 10)
    assert entity.contributions == [] and entity.previous == []


def test_backfill_after_a_live_change_keeps_the_live_contribution() -> None:
    c = core()
    live = run(c, record(1, version=1, status="IN_PROGRESS"))
    assert deltas(live) == [(1, OPEN[0][2])]
    # History newer than the live state: written, versions recorded, rules untouched.
    out = run(
        c, record(2, version=5, status="COMPLETED", completed=DUE + timedelta(2), backfill=True)
    )
    assert len(out.std) == 1
    assert out.deltas == {}
    entity = state(c)
    assert entity.version == 5
    assert entity.contributions == OPEN and entity.previous == OPEN
    # The next live change is compared with the backfilled version and moves the rule
    # from what the rule state holds (the live "open"), not from the backfilled image.
    out = run(c, record(3, version=6, status="COMPLETED", completed=DUE - timedelta(1)))
    assert deltas(out) == [(-1, OPEN[0][2]), (1, DONE_ON_TIME[0][2])]
    # A live change older than the backfilled version is stale, as for any change.
    out = run(c, record(4, version=4, status="IN_PROGRESS"))
    assert out.std == [] and out.deltas == {}
    assert out.dropped == {(DOSSIERS.id, "stale"): 1}


def test_backfill_older_than_the_live_state_is_dropped_as_stale() -> None:
    c = core()
    run(c, record(1, version=9, status="IN_PROGRESS"))
    out = run(c, record(2, version=3, status="COMPLETED", completed=DUE, backfill=True))
    assert out.std == [] and out.deltas == {}
    assert state(c).version == 9 and state(c).contributions == OPEN


def test_live_then_backfill_in_one_batch_sends_the_live_net_delta() -> None:
    c = core()
    run(c, record(1, version=1, status="IN_PROGRESS"))
    out = run(
        c,
        record(2, version=2, status="COMPLETED", completed=DUE + timedelta(2)),
        record(3, version=3, status="COMPLETED", completed=DUE - timedelta(1), backfill=True),
    )
    assert len(out.std) == 2
    assert deltas(out) == [(-1, OPEN[0][2]), (1, DONE_LATE[0][2])]
    entity = state(c)
    assert (entity.version, entity.offset) == (3, 3)
    assert entity.contributions == DONE_LATE and entity.previous == OPEN


def test_backfill_then_live_in_one_batch_sends_the_live_net_delta() -> None:
    c = core()
    run(c, record(1, version=1, status="IN_PROGRESS"))
    out = run(
        c,
        record(2, version=2, status="COMPLETED", completed=DUE - timedelta(1), backfill=True),
        record(3, version=3, status="COMPLETED", completed=DUE + timedelta(2)),
    )
    assert deltas(out) == [(-1, OPEN[0][2]), (1, DONE_LATE[0][2])]
    assert state(c).contributions == DONE_LATE


def test_a_backfill_only_batch_redelivered_sends_nothing() -> None:
    c = core()
    run(c, record(1, version=1, status="IN_PROGRESS"))
    bf = record(2, version=2, status="COMPLETED", completed=DUE + timedelta(2), backfill=True)
    run(c, bf)
    # A crash after the state was written, before the offset commit: read again.
    out = run(c, bf)
    assert out.deltas == {} and out.std == []
    assert state(c).contributions == OPEN


def test_a_redelivered_backfill_re_sends_the_live_delta_of_its_batch() -> None:
    c = core()
    run(c, record(1, version=1, status="IN_PROGRESS"))
    live = record(2, version=2, status="COMPLETED", completed=DUE + timedelta(2))
    bf = record(3, version=3, status="COMPLETED", completed=DUE - timedelta(1), backfill=True)
    first = run(c, live, bf)
    again = run(c, bf)  # the state holds offset 3: that batch is read again from there
    assert deltas(again) == deltas(first) == [(-1, OPEN[0][2]), (1, DONE_LATE[0][2])]


def test_rollback_undoes_a_backfilled_change() -> None:
    c = core()
    run(c, record(1, version=1, status="IN_PROGRESS"))
    c.process([record(2, version=2, status="COMPLETED", completed=DUE, backfill=True)], NOW_MS)
    c.rollback()
    assert state(c).version == 1 and state(c).contributions == OPEN


@pytest.mark.parametrize("backfill", [True, False])
def test_the_same_content_sent_again_is_a_duplicate_either_way(backfill: bool) -> None:
    c = core()
    first = record(1, version=4, status="IN_PROGRESS", backfill=True)
    run(c, first)
    again = record(2, version=4, status="IN_PROGRESS", backfill=backfill)
    out = run(c, again)
    assert out.std == [] and out.deltas == {}
    assert out.dropped == {(DOSSIERS.id, "duplicate"): 1}
