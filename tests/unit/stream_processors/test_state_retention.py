"""Entity state retention (catalog ``state_retention``): a dossier that reached a final
state is kept for dedup and ordering for the dataset's days, then forgotten.

Within the retention a re-sent copy is a duplicate (dropped, counted). After it, the
copy is processed as a new entity — its std record written again (sinks are
idempotent on the entity version: nothing changes downstream) and counted — but as
history: it moves no alert rule, so the unit's counts are not incremented twice.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_backfill_core import DUE, NOW, NOW_MS, TOPIC, core, record

from schemas.catalog import DATASETS, DOSSIERS, StateRetention, read_catalog
from stream_processors.batch_core import RawRecord
from stream_processors.entity_state import Entity
from stream_processors.state_store import EntityStore

DAY_MS = 86_400_000
RETENTION = DOSSIERS.state_retention
DONE_ID = "6f1c1f3e-2f7b-4d6e-9a51-0d7a3c1e2b01"
OPEN_ID = "6f1c1f3e-2f7b-4d6e-9a51-0d7a3c1e2b02"


def test_the_catalog_declares_retention_for_dossiers_and_reports() -> None:
    assert StateRetention("status", frozenset({"COMPLETED", "CANCELLED"}), 400) == RETENTION
    reports = DATASETS["feedback.reports"].state_retention
    assert reports is not None and "CLOSED" in reports.final
    assert RETENTION is not None and RETENTION.is_final("d", None)
    assert not RETENTION.is_final("u", {"status": "IN_PROGRESS"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{ field = "status", final = [], days = 3 }', "final"),
        ('{ field = "status", final = ["X"], days = 0 }', "days"),
        ('{ field = "status", final = ["X"], days = 3, keep = 1 }', "unknown keys"),
        ('"forever"', "state_retention"),
    ],
)
def test_a_bad_retention_names_the_dataset_and_field(
    tmp_path: Path, value: str, message: str
) -> None:
    from bus.errors import ConfigError
    from schemas.catalog import CATALOG_FILE

    text = CATALOG_FILE.read_text(encoding="utf-8").replace(
        'state_retention = { field = "status", final = ["COMPLETED", "CANCELLED"], days = 400 }',
        f"state_retention = {value}",
    )
    bad = tmp_path / "catalog.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        read_catalog(bad)
    assert "publicservice.dossiers" in str(err.value)


def completed(offset: int, **kw: Any) -> RawRecord:
    return record(
        offset,
        version=2,
        status="COMPLETED",
        completed=DUE + timedelta(days=1),
        event_id=DONE_ID,
        **kw,
    )


def test_a_final_entity_records_when_it_became_final_and_survives_json() -> None:
    c = core()
    c.process([record(1, version=1, status="IN_PROGRESS")], NOW_MS)
    assert c._entities[(TOPIC, 0)].get(b"HS-BF-1").final_ms == 0  # type: ignore[union-attr]
    c.process([completed(2)], NOW_MS)
    entity = c._entities[(TOPIC, 0)].get(b"HS-BF-1")
    assert entity is not None and entity.final_ms == NOW_MS
    assert Entity.from_json(entity.to_json()) == entity
    # older changelog records (six fields) still read
    plain = Entity(1, "e", "d", 3)
    assert Entity.from_json(plain.to_json()) == plain and b"," in plain.to_json()


def test_within_the_retention_a_resent_final_entity_is_a_duplicate() -> None:
    c = core()
    c.process([record(1, version=1, status="IN_PROGRESS"), completed(2)], NOW_MS)
    later = NOW_MS + 399 * DAY_MS
    out = c.process([completed(3, at=NOW - timedelta(days=6))], later)
    assert out.std == [] and out.dropped == {(DOSSIERS.id, "duplicate"): 1}


def test_after_the_retention_it_is_new_history_and_moves_no_rule() -> None:
    assert RETENTION is not None
    c = core()
    first = c.process([record(1, version=1, status="IN_PROGRESS"), completed(2)], NOW_MS)
    assert first.deltas  # the live change moved the unit's rules
    later = NOW_MS + (RETENTION.days + 1) * DAY_MS
    out = c.process([completed(3)], later)
    assert len(out.std) == 1, "processed as a new entity"
    assert out.dropped == {}
    assert out.deltas == {}, "history: the unit's counts are not moved twice"
    entity = c._entities[(TOPIC, 0)].get(b"HS-BF-1")
    assert entity is not None and entity.offset == 3 and entity.final_ms == later


def test_a_non_final_entity_is_kept_whatever_its_age() -> None:
    c = core()
    c.process([record(1, version=1, status="IN_PROGRESS", event_id=OPEN_ID)], NOW_MS)
    out = c.process(
        [record(2, version=1, status="IN_PROGRESS", event_id=OPEN_ID)],
        NOW_MS + 5000 * DAY_MS,
    )
    assert out.dropped == {(DOSSIERS.id, "duplicate"): 1}


def test_retention_holds_on_the_disk_store_too(tmp_path: Path) -> None:
    c = core()
    with EntityStore(tmp_path / "e") as store:
        table = store.table(TOPIC, 0)
        c.load(TOPIC, 0, table)
        out = c.process([record(1, version=1, status="IN_PROGRESS"), completed(2)], NOW_MS)
        store.commit(out.entities, {(TOPIC, 0): 5})
        c.settle()
        store.release(TOPIC, 0)
        c.load(TOPIC, 0, store.table(TOPIC, 0))
        assert c.process([completed(3)], NOW_MS + DAY_MS).dropped
        c.settle()
        assert RETENTION is not None
        assert c.process([completed(4)], NOW_MS + (RETENTION.days + 2) * DAY_MS).std
