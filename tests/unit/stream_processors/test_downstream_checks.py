"""Nothing silently dropped downstream (issue 15, point 5), the pure parts:

- an event id reused by another entity: the processor's bounded window
  (``event_ids.RecentEventIds``) and ``BatchCore`` dead-lettering ``event_id_reused``;
- ``before`` and ``after`` of different entities: ``entity_mismatch``;
- plausible times: the catalog's ``earliest`` day (``timestamp_before_earliest``) and
  the envelope's ``ts_ms`` / ``source.ts_ms`` (``far_future_timestamp``);
- procedure codes against the sample code list: flagged ``procedure_not_in_list``.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from test_backfill_core import NOW_MS, TOPIC, StubPipeline, record

from bus.errors import ConfigError
from schemas.catalog import DATASETS, DEFAULT_EARLIEST, read_catalog
from schemas.domain.code_lists import default_code_lists, load_code_lists
from schemas.domain.reference import ReferenceData, load_reference
from stream_processors.alerts.facts import contributions
from stream_processors.batch_core import BatchCore
from stream_processors.event_ids import RecentEventIds
from stream_processors.pipeline import DatasetPipeline
from stream_processors.quality import field_presence
from stream_processors.standardizers import (
    QUALITY_FLAGS,
    REASONS,
    STANDARDIZERS,
    Rejected,
    Standardized,
    build_standardizer,
)
from stream_processors.standardizers import REASONS as ENGINE_REASONS

REF = load_reference()
EMITTED = datetime(2025, 8, 4, 2, 0, tzinfo=UTC)
ID_A = "5b0f4a52-8d2c-4c55-9a4e-3f1f3a1d2c01"


def standardize_dossier_event(
    raw: Any, ref: ReferenceData, *, now: datetime | None = None, earliest: date | None = None
) -> Standardized | Rejected:
    dataset = DATASETS["publicservice.dossiers"]
    if earliest is not None:
        dataset = replace(dataset, earliest=earliest)
    standardize = build_standardizer(dataset)
    assert standardize is not None
    return standardize(raw, ref, now)


# ---- the window of recent event ids -----------------------------------------------


def test_an_id_claimed_by_another_entity_of_the_dataset_is_reused() -> None:
    recent = RecentEventIds(10)
    assert not recent.claim(ID_A, "ds", b"HS-1")
    assert recent.claim(ID_A, "ds", b"HS-2"), "another entity, same dataset"
    assert not recent.claim(ID_A, "ds", b"HS-1"), "the same entity again: dedup decides"
    assert not recent.claim(ID_A, "other.ds", b"HS-2"), "another dataset keeps its own ids"


def test_the_window_forgets_the_oldest_id_beyond_its_capacity() -> None:
    recent = RecentEventIds(3)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for i, event_id in enumerate(ids):
        assert not recent.claim(event_id, "ds", f"K{i}".encode())
    assert len(recent) == 3
    assert not recent.claim(ids[0], "ds", b"other"), "forgotten: outside the window"
    assert recent.claim(ids[3], "ds", b"other"), "still inside the window"
    with pytest.raises(ValueError):
        RecentEventIds(0)


def _core(window: int = 1000) -> BatchCore:
    return BatchCore(
        {TOPIC: cast(DatasetPipeline, StubPipeline())},
        frozenset({"DNA.STP"}),
        contributions=contributions,
        presence=field_presence,
        event_id_window=window,
    )


def test_batch_core_dead_letters_an_event_id_reused_by_another_entity() -> None:
    core = _core()
    first = record(1, version=1, status="RECEIVED", dossier_id="HS-R-1", event_id=ID_A)
    other = record(2, version=1, status="RECEIVED", dossier_id="HS-R-2", event_id=ID_A)
    fine = record(3, version=1, status="RECEIVED", dossier_id="HS-R-3")
    out = core.process([first, other, fine], NOW_MS)
    assert [key for _t, key, _v, _h in out.std] == [b"HS-R-1", b"HS-R-3"]
    assert [(d.record.offset, d.letter.stage, d.letter.reason) for d in out.dead] == [
        (2, "dedup", "event_id_reused")
    ]
    assert out.dead[0].letter.field == "event_id"
    assert {k for _t, _p, k in out.entities} == {b"HS-R-1", b"HS-R-3"}, "no state for it"
    stats = next(iter(out.stats.values()))
    assert (stats.received, stats.valid, stats.conflicts, stats.dead_lettered) == (3, 2, 1, 1)
    # A later batch sees it too; the first entity's own records are unaffected.
    core.settle()
    again = record(4, version=2, status="IN_PROGRESS", dossier_id="HS-R-2", event_id=ID_A)
    newer = record(5, version=2, status="IN_PROGRESS", dossier_id="HS-R-1")
    out = core.process([again, newer], NOW_MS)
    assert [d.letter.reason for d in out.dead] == ["event_id_reused"]
    assert [key for _t, key, _v, _h in out.std] == [b"HS-R-1"]


def test_a_record_processed_again_after_a_rollback_is_no_reuse() -> None:
    core = _core()
    batch = [record(1, version=1, status="RECEIVED", dossier_id="HS-R-1", event_id=ID_A)]
    core.process(batch, NOW_MS)
    core.rollback()  # e.g. a failed write: the loop processes the batch again
    out = core.process(batch, NOW_MS)
    assert not out.dead and len(out.std) == 1


def test_outside_the_window_the_processor_lets_a_reuse_through() -> None:
    # Documented: the window is bounded; beyond it the SQL sink dead-letters the row.
    core = _core(window=2)
    first = record(1, version=1, status="RECEIVED", dossier_id="HS-R-1", event_id=ID_A)
    fillers = [record(2 + i, version=1, status="RECEIVED", dossier_id=f"HS-F{i}") for i in range(2)]
    late = record(9, version=1, status="RECEIVED", dossier_id="HS-R-2", event_id=ID_A)
    out = core.process([first, *fillers, late], NOW_MS)
    assert not out.dead and len(out.std) == 4


# ---- the dossier standardizer -----------------------------------------------------


def dossier(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dossier_id": "HS-0001",
        "dossier_code": "000.00.12.H19-250804-0001",
        "procedure_code": "1.000894",
        "procedure_name": "Đăng ký khai sinh",
        "receiving_unit_code": "DNA.STP",
        "admin_unit_code": "75001",
        "applicant_citizen_id": "075190004242",
        "applicant_name": "Nguyễn Thị Hòa",
        "applicant_birth_date": None,
        "applicant_sex": None,
        "status": "RECEIVED",
        "channel": "ONLINE",
        "received_at": "04/08/2025 08:30",
        "due_at": "2025-08-14",
        "completed_at": None,
    }
    base.update(changes)
    return base


def envelope(
    op: str = "c",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    ts: datetime = EMITTED,
    changed: datetime = EMITTED,
    dataset: str = "publicservice.dossiers",
) -> dict[str, Any]:
    return {
        "event_id": ID_A,
        "op": op,
        "ts_ms": ts,
        "source": {"system": "s", "unit": "u", "dataset": dataset, "ts_ms": changed, "version": 1},
        "before": before,
        "after": after if after is not None or op == "d" else dossier(),
    }


def _rejected(result: Standardized | Rejected) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason in REASONS
    return result


def test_an_1899_received_date_is_dead_lettered() -> None:
    # 1899-12-30: Excel's day 0, the classic zero date of a spreadsheet export.
    for value in ("30/12/1899", "1899-12-30T00:00:00+07:00", "1999-12-31 23:59"):
        result = standardize_dossier_event(envelope(after=dossier(received_at=value)), REF)
        rejected = _rejected(result)
        assert (rejected.reason, rejected.field) == (
            "timestamp_before_earliest",
            "after.received_at",
        )
        assert "2000-01-01" in rejected.message_en
    ok = standardize_dossier_event(envelope(after=dossier(received_at="2000-01-01")), REF)
    assert isinstance(ok, Standardized), "the earliest day itself is plausible"
    older = standardize_dossier_event(
        envelope(after=dossier(received_at="1990-05-01")), REF, earliest=date(1980, 1, 1)
    )
    assert isinstance(older, Standardized), "a dataset's own earliest day applies"


def test_deadlines_and_completions_have_the_lower_bound_too() -> None:
    late = standardize_dossier_event(envelope(after=dossier(due_at="1900-01-01")), REF)
    assert (_rejected(late).reason, _rejected(late).field) == (
        "timestamp_before_earliest",
        "after.due_at",
    )
    done = standardize_dossier_event(envelope(after=dossier(completed_at="61")), REF)
    assert _rejected(done).field == "after.completed_at"  # Excel serial 61 = 1900-03-01


def test_envelope_times_are_checked() -> None:
    now = EMITTED
    ahead = now + timedelta(days=400)
    cases = {
        "ts_ms": envelope(ts=ahead, changed=now),
        "source.ts_ms": envelope(ts=now, changed=ahead),
    }
    for field, raw in cases.items():
        rejected = _rejected(standardize_dossier_event(raw, REF, now=now))
        assert (rejected.reason, rejected.field) == ("far_future_timestamp", field)
    # Without a processor clock only the change time is judged, against the emit time.
    assert isinstance(standardize_dossier_event(cases["ts_ms"], REF), Standardized)
    rejected = _rejected(standardize_dossier_event(cases["source.ts_ms"], REF))
    assert rejected.field == "source.ts_ms"
    # Within the tolerance (clocks drift by minutes): accepted.
    near = envelope(ts=now + timedelta(hours=2), changed=now + timedelta(hours=3))
    assert isinstance(standardize_dossier_event(near, REF, now=now), Standardized)
    zero = datetime(1970, 1, 1, tzinfo=UTC)
    for field, raw in {
        "ts_ms": envelope(ts=zero, changed=zero),
        "source.ts_ms": envelope(changed=zero),
    }.items():
        rejected = _rejected(standardize_dossier_event(raw, REF, now=now))
        assert (rejected.reason, rejected.field) == ("timestamp_before_earliest", field)


def test_before_and_after_of_different_dossiers_are_dead_lettered() -> None:
    raw = envelope("u", before=dossier(dossier_id="HS-0001"), after=dossier(dossier_id="HS-0002"))
    rejected = _rejected(standardize_dossier_event(raw, REF))
    assert (rejected.reason, rejected.field) == ("entity_mismatch", "after.dossier_id")
    assert "HS-000" not in rejected.message_en + rejected.message_vi, "no values"
    # The same dossier spelt with other spacing is the same entity.
    same = envelope(
        "u", before=dossier(dossier_id=" HS-0001 "), after=dossier(status="IN_PROGRESS")
    )
    assert isinstance(standardize_dossier_event(same, REF), Standardized)


def test_a_procedure_code_not_in_the_list_is_flagged_not_refused() -> None:
    known = standardize_dossier_event(envelope(), REF)
    assert isinstance(known, Standardized)
    assert "procedure_not_in_list" not in known.flags
    raw = envelope("u", before=dossier(), after=dossier(procedure_code="9.999999"))
    unknown = standardize_dossier_event(raw, REF)
    assert isinstance(unknown, Standardized)
    assert "procedure_not_in_list" in unknown.flags
    assert set(unknown.flags) <= QUALITY_FLAGS
    assert unknown.event["after"]["procedure_code"] == "9.999999", "kept as sent"
    assert "procedure_not_in_list" in unknown.event["after"]["quality_flags"]
    assert "procedure_not_in_list" not in unknown.event["before"]["quality_flags"]


def test_the_procedure_list_is_a_sample_data_file() -> None:
    path = Path(__file__).resolve().parents[3] / "schemas" / "data" / "codes_procedures.csv"
    assert path.read_text(encoding="utf-8").startswith("# SAMPLE data")
    assert "1.000894" in default_code_lists()["procedures"].entries


def test_comment_lines_keep_error_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "codes_x.csv").write_text(
        "# SAMPLE\n# two lines\nsource_code,code,name,category\nA,A,Alpha,\nB,Z,,\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"codes_x\.csv:5: field 'code'"):
        load_code_lists(tmp_path)


# ---- the rule engine's datasets ---------------------------------------------------


def document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "document_id": "VB-1",
        "direction": "INCOMING",
        "number_symbol": "12/QĐ-UBND",
        "document_type": "QĐ",
        "issuing_unit_name": "Ủy ban nhân dân tỉnh Đồng Nai",
        "issuing_unit_code": "DNA.VPUB",
        "receiving_unit_code": "DNA.SNV",
        "subject": "V/v kiểm tra",
        "issued_date": date(2025, 8, 1),
        "received_at": EMITTED,
        "urgency": "NORMAL",
        "confidentiality": "NORMAL",
        "page_count": 2,
    }
    base.update(changes)
    return base


DOCS = "documents.official_documents"


def _docs(raw: dict[str, Any]) -> Standardized | Rejected:
    return STANDARDIZERS[DOCS](raw, REF, None)


def test_engine_bounds_come_from_the_catalog() -> None:
    assert DATASETS[DOCS].earliest == date(1945, 1, 1)
    assert DATASETS["feedback.reports"].earliest == DEFAULT_EARLIEST
    old = _docs(envelope(after=document(issued_date=date(1946, 3, 6)), dataset=DOCS))
    assert isinstance(old, Standardized), "archives go back to 1945"
    for changes, field in (
        ({"issued_date": date(1899, 12, 30)}, "after.issued_date"),
        ({"received_at": datetime(1900, 1, 1, tzinfo=UTC)}, "after.received_at"),
    ):
        result = _docs(envelope(after=document(**changes), dataset=DOCS))
        assert isinstance(result, Rejected), result
        assert (result.reason, result.field) == ("timestamp_before_earliest", field)
        assert result.reason in ENGINE_REASONS


def test_engine_checks_envelope_times_and_entities() -> None:
    ahead = EMITTED + timedelta(days=30)
    result = STANDARDIZERS[DOCS](envelope(after=document(), changed=ahead, dataset=DOCS), REF, None)
    assert isinstance(result, Rejected)
    assert (result.reason, result.field) == ("far_future_timestamp", "source.ts_ms")
    moved = envelope("u", before=document(document_id="VB-1"), after=document(document_id="VB-2"))
    moved["source"]["dataset"] = DOCS
    result = _docs(moved)
    assert isinstance(result, Rejected)
    assert (result.reason, result.field) == ("entity_mismatch", "after.document_id")
    same = envelope("u", before=document(), after=document(page_count=3), dataset=DOCS)
    assert isinstance(_docs(same), Standardized)


# ---- the catalog --------------------------------------------------------------------


def _catalog(tmp_path: Path, earliest: str) -> Path:
    text = Path(__file__).resolve().parents[3].joinpath("schemas", "catalog.toml").read_text()
    first = text.split("\n[[dataset]]\n")[1].split("\n\n")[0]
    path = tmp_path / "catalog.toml"
    path.write_text(f"[[dataset]]\n{first}\n{earliest}\n", encoding="utf-8")
    return path


def test_catalog_earliest_is_a_toml_date_with_a_default(tmp_path: Path) -> None:
    (dataset,) = read_catalog(_catalog(tmp_path, ""))
    assert dataset.earliest == DEFAULT_EARLIEST == date(2000, 1, 1)
    (dataset,) = read_catalog(_catalog(tmp_path, "earliest = 1990-01-01"))
    assert dataset.earliest == date(1990, 1, 1)
    for bad in ('earliest = "1990-01-01"', "earliest = 1990-01-01T00:00:00"):
        with pytest.raises(ConfigError, match="field 'earliest'"):
            read_catalog(_catalog(tmp_path, bad))
