"""Groups feedback_unit / feedback_commune: reports unanswered past their deadline."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from producers.simulators import SimSpec, generate_dataset
from stream_processors.alerts.engine import RULE_GROUPS
from stream_processors.alerts.facts import contributions
from stream_processors.alerts.lifecycle import decide
from stream_processors.alerts.rules.config import RulesConfig
from stream_processors.alerts.rules.deltas import contribution_deltas, group_deltas
from stream_processors.alerts.rules.window import HOUR_MS, local_day

RULES = RulesConfig()
UNIT = RULE_GROUPS["feedback_unit"]
COMMUNE = RULE_GROUPS["feedback_commune"]
T0 = int(datetime(2025, 8, 4, 2, tzinfo=UTC).timestamp() * 1000)


def open_(due: int, sign: int = 1) -> dict[str, Any]:
    return {"sign": sign, "payload": {"k": "open", "due_h": due // HOUR_MS}, "event_ms": T0}


def answered(kind: str, at: int) -> dict[str, Any]:
    return {"sign": 1, "payload": {"k": kind, "day": local_day(at)}, "event_ms": at}


def test_counts_unanswered_past_deadline_with_hysteresis() -> None:
    state = UNIT.apply(None, [open_(T0 - HOUR_MS) for _ in range(4)], RULES)
    state = UNIT.apply(state, [open_(T0 + 5 * HOUR_MS) for _ in range(10)], RULES)
    state = UNIT.apply(state, [answered("late", T0), answered("on_time", T0)], RULES)
    (c,) = UNIT.evaluate("DNA.SXD", state, T0, RULES)
    assert c.evidence == {
        "unanswered_overdue": 4,
        "unanswered_not_due": 10,
        "answered_on_time": 1,
        "answered_late": 1,
    }
    assert c.status == "holding"  # 4: between clear (3) and raise (5)
    alert, record = decide(None, c, T0)
    assert record is None
    # six hours on, the ten others are past their deadline: 14 → RAISED
    (c,) = UNIT.evaluate("DNA.SXD", state, T0 + 6 * HOUR_MS, RULES)
    alert, record = decide(alert, c, T0 + 6 * HOUR_MS)
    assert record is not None and record["state"] == "RAISED" and record["value"] == 14
    assert record["subject_kind"] == "unit"
    # answered: the open ones leave; 2 left → RESOLVED
    state = UNIT.apply(state, [open_(T0 + 5 * HOUR_MS, sign=-1) for _ in range(10)], RULES)
    state = UNIT.apply(state, [open_(T0 - HOUR_MS, sign=-1) for _ in range(2)], RULES)
    (c,) = UNIT.evaluate("DNA.SXD", state, T0 + 7 * HOUR_MS, RULES)
    alert, record = decide(alert, c, T0 + 7 * HOUR_MS)
    assert record is not None and record["state"] == "RESOLVED" and alert is None


def test_by_commune_only_when_configured() -> None:
    state = COMMUNE.apply(None, [open_(T0 - HOUR_MS) for _ in range(30)], RULES)
    (c,) = COMMUNE.evaluate("75001", state, T0, RULES)
    assert c.status == "clear"  # "commune" is not in the default `by`
    both = RulesConfig.model_validate({"feedback_unanswered": {"by": ["unit", "commune"]}})
    (c,) = COMMUNE.evaluate("75001", state, T0, both)
    assert (c.status, c.severity, c.subject_kind) == ("firing", "CRITICAL", "commune")


def test_replays_in_any_order_give_the_same_state() -> None:
    rng = random.Random(2)
    deltas = [open_(T0 + rng.randrange(-90, 90) * HOUR_MS) for _ in range(200)]
    deltas += [open_(d["payload"]["due_h"] * HOUR_MS, sign=-1) for d in deltas[:80]]
    ref = UNIT.apply(None, deltas, RULES)
    rng.shuffle(deltas)
    state = None
    for k in range(0, len(deltas), 7):
        state = UNIT.apply(state, deltas[k : k + 7], RULES)
    assert state == ref


def test_simulated_citizen_app_gives_per_unit_counts() -> None:
    end = datetime(2025, 8, 29, 10, tzinfo=UTC)
    records = generate_dataset("feedback.reports", SimSpec(days=20, per_day=60, seed=2, end=end))
    prev: dict[str, Any] = {}
    states: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        if rec.expect_reason is not None:
            continue
        at = int(rec.at.timestamp() * 1000)
        std = {"op": rec.op.value, "after": rec.record.model_dump()}
        new = contributions("feedback.reports", std)
        rid = rec.record.model_dump()["report_id"]
        for gk, deltas in group_deltas(contribution_deltas(prev.get(rid, []), new, at)).items():
            states[gk] = RULE_GROUPS[gk[0]].apply(states.get(gk), deltas, RULES)
        prev[rid] = new
    # The truth: reports whose last state is still open past the deadline, per unit.
    now = int(end.timestamp() * 1000)
    latest = {}
    for rec in records:
        if rec.expect_reason is None:
            latest[rec.record.model_dump()["report_id"]] = rec.record.model_dump()
    truth: dict[str, int] = {}
    for r in latest.values():
        deadline = r["response_deadline"]
        still_open = r["status"] in ("RECEIVED", "ASSIGNED", "IN_PROGRESS")
        if (
            still_open
            and deadline is not None
            and (int(deadline.timestamp() * 1000) // HOUR_MS + 1) * HOUR_MS <= now
        ):
            unit = r["handling_unit_code"] or "UNASSIGNED"
            truth[unit] = truth.get(unit, 0) + 1
    seen = {}
    for (group, key), state in states.items():
        if group == "feedback_unit":
            (c,) = UNIT.evaluate(key, state, now, RULES)
            if c.evidence["unanswered_overdue"]:
                seen[key] = c.evidence["unanswered_overdue"]
    assert seen == truth and sum(truth.values()) > 0
