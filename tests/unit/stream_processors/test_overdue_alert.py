"""The overdue-rate alert rule, as pure functions (no Faust, no broker)."""

from __future__ import annotations

import copy
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from bus.settings import AlertSettings
from stream_processors.overdue_alert import (
    RULE,
    DossierFact,
    Evaluation,
    apply_fact,
    contribution,
    decide,
    evaluate,
    fact_from_std_event,
)

ROOT = Path(__file__).resolve().parents[3]
ALERTS_AVSC = ROOT / "schemas" / "avro" / "alerts" / "alerts.v1.avsc"

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = int(datetime(2025, 8, 4, tzinfo=UTC).timestamp() * 1000)  # a day boundary
DUE = T0 + 10 * HOUR + 30 * 60_000  # 10:30 UTC
CFG = AlertSettings(
    overdue_rate_threshold=0.30, overdue_rate_clear=0.25, window_days=30, min_dossiers=10
)


def fact(
    status: str = "IN_PROGRESS",
    *,
    completed_ms: int | None = None,
    due_ms: int = DUE,
    deleted: bool = False,
    version: int = 1,
) -> DossierFact:
    return DossierFact(
        dossier_id="HS-1",
        unit="DNA.SYT",
        version=version,
        status=status,
        due_ms=due_ms,
        completed_ms=completed_ms,
        event_ms=completed_ms or T0,
        deleted=deleted,
    )


# --- contributions -----------------------------------------------------------------


def test_completed_exactly_at_due_is_on_time() -> None:
    assert contribution(fact("COMPLETED", completed_ms=DUE)) == ("on_time", DUE // DAY)


def test_completed_one_ms_late_is_late() -> None:
    assert contribution(fact("COMPLETED", completed_ms=DUE + 1)) == ("late", (DUE + 1) // DAY)


def test_completion_is_bucketed_by_completion_day_not_due_day() -> None:
    done = DUE + 3 * DAY
    assert contribution(fact("COMPLETED", completed_ms=done)) == ("late", DUE // DAY + 3)


@pytest.mark.parametrize("status", ["RETURNED", "CANCELLED"])
def test_returned_and_cancelled_count_nowhere(status: str) -> None:
    assert contribution(fact(status)) is None
    assert contribution(fact(status, completed_ms=DUE + DAY)) is None


@pytest.mark.parametrize("status", ["COMPLETED", "RECEIVED", "IN_PROGRESS", "CANCELLED"])
def test_deleted_counts_nowhere(status: str) -> None:
    assert contribution(fact(status, completed_ms=DUE + 1, deleted=True)) is None


@pytest.mark.parametrize("status", ["RECEIVED", "IN_PROGRESS", "SUPPLEMENT_REQUESTED"])
def test_open_is_bucketed_by_due_hour(status: str) -> None:
    assert contribution(fact(status)) == ("open", DUE // HOUR)
    assert contribution(fact(status, due_ms=T0 + 10 * HOUR)) == ("open", DUE // HOUR)
    assert contribution(fact(status, due_ms=T0 + 11 * HOUR)) == ("open", DUE // HOUR + 1)


def test_completed_without_a_completion_time_counts_nowhere() -> None:
    assert contribution(fact("COMPLETED", completed_ms=None)) is None


def test_fact_from_std_event_uses_before_for_a_delete() -> None:
    record = {
        "dossier_id": "HS-9",
        "receiving_unit_code": "DNA.STP",
        "status": "COMPLETED",
        "due_at": datetime(2025, 8, 4, 10, tzinfo=UTC),
        "completed_at": datetime(2025, 8, 4, 10, 0, 0, 1000, tzinfo=UTC),
    }
    source = {"version": 4, "ts_ms": datetime(2025, 8, 5, tzinfo=UTC)}
    deleted = fact_from_std_event({"op": "d", "before": record, "after": None, "source": source})
    assert (deleted.dossier_id, deleted.unit, deleted.version) == ("HS-9", "DNA.STP", 4)
    assert deleted.deleted and contribution(deleted) is None
    live = fact_from_std_event({"op": "u", "before": None, "after": record, "source": source})
    assert live.completed_ms == live.due_ms + 1
    assert contribution(live) == ("late", live.due_ms // DAY)
    assert DossierFact.from_json(json.loads(json.dumps(live.to_json()))) == live


# --- apply_fact --------------------------------------------------------------------


def test_open_to_late_leaves_no_residue_and_is_reversible() -> None:
    open_c = contribution(fact("IN_PROGRESS"))
    late_c = contribution(fact("COMPLETED", completed_ms=DUE + 2 * DAY))
    s1 = apply_fact(None, None, open_c, T0, 30)
    assert s1["open"] == {str(DUE // HOUR): 1} and s1["done"] == {}
    frozen = copy.deepcopy(s1)
    s2 = apply_fact(s1, open_c, late_c, DUE + 2 * DAY, 30)
    assert s1 == frozen  # a new dict; the input is untouched
    assert s2["open"] == {}
    assert s2["done"] == {str((DUE + 2 * DAY) // DAY): [0, 1]}
    back = apply_fact(s2, late_c, open_c, DUE + 2 * DAY, 30)
    assert back["open"] == s1["open"] and back["done"] == {}
    # replaying the same transition twice is what the agent's version check prevents;
    # taking out what was never put in must not leave negative counts either
    assert apply_fact(back, open_c, None, DUE + 2 * DAY, 30)["open"] == {}


def test_moves_between_on_time_and_late_in_the_same_day_bucket() -> None:
    on_time = contribution(fact("COMPLETED", completed_ms=DUE))
    late = contribution(fact("COMPLETED", completed_ms=DUE + 1))
    s = apply_fact(None, None, on_time, DUE, 30)
    s = apply_fact(s, None, on_time, DUE, 30)
    s = apply_fact(s, on_time, late, DUE, 30)
    assert s["done"] == {str(DUE // DAY): [1, 1]}
    s = apply_fact(s, on_time, None, DUE, 30)
    s = apply_fact(s, late, None, DUE, 30)
    assert s["done"] == {}


def test_completion_buckets_older_than_the_window_are_pruned() -> None:
    window = 30
    state = None
    for days_ago in (0, 29, 30, 45):
        done_ms = T0 - days_ago * DAY + HOUR
        state = apply_fact(state, None, ("late", done_ms // DAY), done_ms, window)
    # open buckets are never pruned by age: an old open dossier is still a problem
    state = apply_fact(state, None, ("open", (T0 - 60 * DAY) // HOUR), T0, window)
    state = apply_fact(state, None, None, T0 + HOUR, window)
    today = T0 // DAY
    assert state["watermark_ms"] == T0 + HOUR
    assert sorted(int(d) for d in state["done"]) == [today - 29, today]
    assert state["open"] == {str((T0 - 60 * DAY) // HOUR): 1}
    assert evaluate(state, T0 + HOUR, window).late == 2


def test_watermark_never_goes_back() -> None:
    s = apply_fact(None, None, None, T0 + DAY, 30)
    s = apply_fact(s, None, ("on_time", T0 // DAY), T0, 30)
    assert s["watermark_ms"] == T0 + DAY
    assert s["done"] == {str(T0 // DAY): [1, 0]}


# --- evaluate ----------------------------------------------------------------------


def test_open_counts_overdue_only_after_its_deadline_hour() -> None:
    state = apply_fact(None, None, contribution(fact("RECEIVED")), T0, 30)  # due 10:30
    hour_end = (DUE // HOUR + 1) * HOUR  # 11:00
    for now, expected in [(DUE - 1, 0), (DUE + 1, 0), (hour_end - 1, 0), (hour_end, 1)]:
        ev = evaluate(state, now, 30)
        assert ev.open_overdue == expected, now - DUE
    assert evaluate(state, hour_end - 1, 30).rate is None  # no denominator, not 0
    assert evaluate(state, hour_end, 30).rate == 1.0


def test_evaluate_counts_completions_inside_the_window_only() -> None:
    state = None
    for days_ago, kind in [(0, "on_time"), (29, "late"), (30, "late"), (-1, "late")]:
        state = apply_fact(state, None, (kind, T0 // DAY - days_ago), 0, 30)
    ev = evaluate(state, T0 + HOUR, 30)
    assert (ev.on_time, ev.late, ev.open_overdue) == (1, 1, 0)
    assert ev.rate == 0.5 and ev.total == 2
    assert ev.window_start_ms == T0 - 29 * DAY and ev.window_end_ms == T0 + HOUR


# --- decide ------------------------------------------------------------------------


def ev(late: int, total: int, end_ms: int = T0) -> Evaluation:
    return Evaluation(
        on_time=total - late,
        late=late,
        open_overdue=0,
        rate=late / total if total else None,
        window_start_ms=end_ms - 30 * DAY,
        window_end_ms=end_ms,
    )


def test_raises_once_above_threshold_and_not_again_while_raised() -> None:
    state, record = decide(None, ev(3, 10), "DNA.SYT", CFG)  # exactly at the threshold
    assert state is None and record is None
    state, record = decide(None, ev(4, 10), "DNA.SYT", CFG)
    assert record is not None and record["state"] == "RAISED"
    assert record["severity"] == "WARNING" and record["rule"] == RULE
    assert record["unit_code"] == "DNA.SYT" and record["value"] == 0.4
    assert record["evidence"] == {"completed_on_time": 6, "completed_late": 4, "open_overdue": 0}
    assert state is not None and state["severity"] == "WARNING"
    for later in (ev(4, 10, T0 + HOUR), ev(5, 10, T0 + 2 * HOUR), ev(3, 10, T0 + 3 * HOUR)):
        state2, again = decide(state, later, "DNA.SYT", CFG)
        assert again is None and state2 == state


def test_never_raises_below_min_dossiers() -> None:
    for total in range(1, CFG.min_dossiers):
        assert decide(None, ev(total, total), "DNA.SYT", CFG) == (None, None)
    state, record = decide(None, ev(CFG.min_dossiers, CFG.min_dossiers), "DNA.SYT", CFG)
    assert state is not None
    assert record is not None and record["severity"] == "CRITICAL"


def test_updates_only_on_severity_change() -> None:
    state, raised = decide(None, ev(4, 10), "DNA.SYT", CFG)
    assert raised is not None
    state, up = decide(state, ev(7, 10, T0 + HOUR), "DNA.SYT", CFG)  # 0.7 ≥ 2 × 0.3
    assert up is not None and (up["state"], up["severity"]) == ("UPDATED", "CRITICAL")
    assert up["alert_id"] == raised["alert_id"]
    state, same = decide(state, ev(8, 10, T0 + 2 * HOUR), "DNA.SYT", CFG)
    assert same is None and state is not None and state["severity"] == "CRITICAL"
    state, down = decide(state, ev(5, 10, T0 + 3 * HOUR), "DNA.SYT", CFG)
    assert down is not None and (down["state"], down["severity"]) == ("UPDATED", "WARNING")


def test_resolves_only_below_the_clear_threshold() -> None:
    state, raised = decide(None, ev(40, 100), "DNA.SYT", CFG)
    assert raised is not None
    # between clear (0.25) and threshold (0.30): still raised, nothing emitted
    for late in (29, 27, 25):
        state, record = decide(state, ev(late, 100), "DNA.SYT", CFG)
        assert record is None and state is not None
    state, resolved = decide(state, ev(24, 100, T0 + DAY), "DNA.SYT", CFG)
    assert state is None and resolved is not None
    assert (resolved["state"], resolved["severity"]) == ("RESOLVED", "INFO")
    assert resolved["alert_id"] == raised["alert_id"]
    # and it can be raised again later, as a new alert
    _, again = decide(None, ev(40, 100, T0 + 2 * DAY), "DNA.SYT", CFG)
    assert again is not None and again["alert_id"] != raised["alert_id"]


def test_no_rate_changes_nothing() -> None:
    state, _ = decide(None, ev(4, 10), "DNA.SYT", CFG)
    assert decide(state, ev(0, 0), "DNA.SYT", CFG) == (state, None)
    assert decide(None, ev(0, 0), "DNA.SYT", CFG) == (None, None)


# --- the alert record fits alerts.v1 -----------------------------------------------


def _roundtrip(record: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(json.loads(ALERTS_AVSC.read_text(encoding="utf-8")))
    fastavro.validation.validate(record, schema, raise_errors=True)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, schema, None)  # type: ignore[return-value]


def test_alert_records_encode_with_the_alerts_schema() -> None:
    state, raised = decide(None, replace(ev(4, 10), open_overdue=2), "DNA.SYT", CFG)
    state, updated = decide(state, ev(9, 10, T0 + HOUR), "DNA.SYT", CFG)
    _, resolved = decide(state, ev(0, 10, T0 + 2 * HOUR), "DNA.SYT", CFG)
    for record in (raised, updated, resolved):
        assert record is not None
        decoded = _roundtrip(record)
        # fields added to alerts.v1 since this module was written take their defaults
        assert {k: decoded[k] for k in record} == record
        assert decoded["subject_kind"] == "unit" and decoded["raised_at"] is None
        assert decoded["window_end"] - decoded["window_start"] == (
            record["window_end"] - record["window_start"]
        )
        assert "Đơn vị DNA.SYT" in decoded["message"] and "Unit DNA.SYT" in decoded["message"]
    assert raised is not None and raised["evidence"]["open_overdue"] == 2
    assert raised["window_days"] == CFG.window_days
    assert raised["ts_ms"] == datetime.fromtimestamp(T0 / 1000, UTC)
