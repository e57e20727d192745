"""Group dossier_unit: the overdue-rate and due-soon rules, through the one lifecycle."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from typing import Any

from producers.simulators import DossierSpec, generate_dossiers
from schemas.domain.reference import load_reference
from stream_processors.alerts.engine import RULE_GROUPS
from stream_processors.alerts.facts import contributions
from stream_processors.alerts.lifecycle import Condition, decide
from stream_processors.alerts.rules.config import RulesConfig
from stream_processors.alerts.rules.deltas import contribution_deltas, group_deltas
from stream_processors.alerts.rules.window import HOUR_MS, day_of, day_start_ms, local_day

GROUP = RULE_GROUPS["dossier_unit"]
RULES = RulesConfig()
DAY = 24 * HOUR_MS
T0 = day_start_ms(day_of(date(2025, 8, 4))) + 9 * HOUR_MS  # Mon 04/08/2025 09:00 local


def done(kind: str, at: int, sign: int = 1) -> dict[str, Any]:
    return {"sign": sign, "payload": {"k": kind, "day": local_day(at)}, "event_ms": at}


def open_(due: int, at: int, sign: int = 1) -> dict[str, Any]:
    return {"sign": sign, "payload": {"k": "open", "due_h": due // HOUR_MS}, "event_ms": at}


def conditions(state: dict[str, Any], now: int, rules: RulesConfig = RULES) -> dict[str, Condition]:
    return {c.rule: c for c in GROUP.evaluate("DNA.STP", state, now, rules)}


def overdue(state: dict[str, Any], now: int) -> Condition:
    return conditions(state, now)["dossier_overdue_rate"]


def test_rate_follows_the_one_definition() -> None:
    deltas = [done("on_time", T0 - i * HOUR_MS) for i in range(6)]
    deltas += [done("late", T0 - DAY), open_(T0 - 2 * HOUR_MS, T0 - 3 * DAY)]
    deltas += [open_(T0 + 3 * DAY, T0 - DAY)]  # open, not yet due: counts nowhere
    c = overdue(GROUP.apply(None, deltas, RULES), T0)
    assert c.evidence == {
        "completed_on_time": 6,
        "completed_late": 1,
        "open_overdue": 1,
        "total": 8,
    }
    assert c.value == 0.25


def test_raise_hold_update_resolve() -> None:
    state = GROUP.apply(None, [done("on_time", T0 - i * HOUR_MS) for i in range(7)], RULES)
    state = GROUP.apply(state, [done("late", T0) for _ in range(3)], RULES)  # 30%: not above
    alert, record = decide(None, overdue(state, T0), T0)
    assert (alert, record) == (None, None)
    state = GROUP.apply(state, [done("late", T0)], RULES)  # 4/11 = 36% > 30%
    alert, record = decide(alert, overdue(state, T0), T0)
    assert record is not None and record["state"] == "RAISED" and record["severity"] == "WARNING"
    # 4/15 = 27%: in the band, holds
    state = GROUP.apply(state, [done("on_time", T0) for _ in range(4)], RULES)
    assert overdue(state, T0).status == "holding"
    soon = T0 + 5 * 60_000
    alert, record = decide(alert, overdue(state, soon), soon)
    assert record is None and alert is not None  # a material move, but too soon
    alert, record = decide(alert, overdue(state, T0 + HOUR_MS), T0 + HOUR_MS)
    assert record is not None and (record["state"], record["value"]) == ("UPDATED", 0.2667)
    alert, record = decide(alert, overdue(state, T0 + 2 * HOUR_MS), T0 + 2 * HOUR_MS)
    assert record is None  # nothing moved since
    # 19 late of 30: 63% ≥ critical 60%: UPDATED to CRITICAL at once
    state = GROUP.apply(state, [done("late", T0) for _ in range(15)], RULES)
    alert, record = decide(alert, overdue(state, soon), T0 + 2 * HOUR_MS + 60_000)
    assert record is not None and (record["state"], record["severity"]) == ("UPDATED", "CRITICAL")
    # completions drop out of the 30-day window: the rate has no denominator → holds;
    # then a fresh on-time stream brings it under 25% → RESOLVED
    later = T0 + 31 * DAY
    assert overdue(state, later).status == "holding"
    state = GROUP.apply(state, [done("on_time", later) for _ in range(10)], RULES)
    alert, record = decide(alert, overdue(state, later), later)
    assert record is not None and record["state"] == "RESOLVED" and alert is None


def test_too_few_dossiers_raise_nothing() -> None:
    state = GROUP.apply(None, [done("late", T0) for _ in range(9)], RULES)
    assert overdue(state, T0).status == "holding"


def test_an_open_dossier_turns_overdue_when_its_deadline_hour_passes() -> None:
    due = T0 + 2 * HOUR_MS + 30 * 60_000
    state = GROUP.apply(None, [open_(due, T0)], RULES)
    assert overdue(state, T0 + 2 * HOUR_MS).evidence["open_overdue"] == 0
    assert overdue(state, T0 + 3 * HOUR_MS).evidence["open_overdue"] == 1


def test_state_stays_bounded_and_old_deadlines_still_count() -> None:
    state = None
    for day in range(200):
        at = T0 + day * DAY
        state = GROUP.apply(state, [done("on_time", at), open_(at - 40 * DAY, at)], RULES)
    assert state is not None
    assert len(state["done"]) <= RULES.dossier_overdue_rate.window_days
    assert len(state["open"]) <= (RULES.dossier_overdue_rate.window_days + 1) * 24
    assert overdue(state, T0 + 200 * DAY).evidence["open_overdue"] == 200


def test_any_order_and_batching_give_the_same_state() -> None:
    rng = random.Random(4)
    deltas = []
    for _ in range(300):
        at = T0 + rng.randrange(0, 40 * DAY)
        due = at + rng.randrange(-5 * DAY, 5 * DAY)
        deltas.append(open_(due, at))
        if rng.random() < 0.7:  # completed later: -open, +done
            fin = at + rng.randrange(HOUR_MS, 4 * DAY)
            deltas.append(open_(due, fin, sign=-1))
            deltas.append(done("on_time" if fin <= due else "late", fin))
    reference = GROUP.apply(None, deltas, RULES)
    for seed in range(5):
        shuffled = deltas[:]
        random.Random(seed).shuffle(shuffled)
        state = None
        k = 0
        while k < len(shuffled):
            n = random.Random(seed + k).randint(1, 40)
            state = GROUP.apply(state, shuffled[k : k + n], RULES)
            k += n
        assert state == reference


def test_due_soon_counts_working_days_across_tet() -> None:
    friday = day_start_ms(day_of(date(2025, 1, 24))) + 9 * HOUR_MS  # Fri before Tết 2025
    monday_after = day_start_ms(day_of(date(2025, 2, 3))) + 10 * HOUR_MS  # 1st working day
    tuesday_after = monday_after + DAY
    deltas = [open_(monday_after, friday) for _ in range(25)]
    deltas += [open_(tuesday_after, friday) for _ in range(25)]
    state = GROUP.apply(None, deltas, RULES)
    one_day = RulesConfig.model_validate({"dossier_due_soon": {"working_days": 1}})
    c = conditions(state, friday, one_day)["dossier_due_soon"]
    assert c.evidence["due_soon"] == 25 and c.status == "firing"
    two_days = conditions(state, friday)["dossier_due_soon"]
    assert two_days.evidence["due_soon"] == 50 and two_days.severity == "CRITICAL"
    # past the deadline they are overdue, not due soon
    c = conditions(state, tuesday_after + 2 * HOUR_MS)["dossier_due_soon"]
    assert c.evidence["due_soon"] == 0 and c.status == "clear"


def test_disabled_rules_resolve_what_they_left_open() -> None:
    state = GROUP.apply(None, [done("late", T0) for _ in range(12)], RULES)
    alert, _ = decide(None, overdue(state, T0), T0)
    off = RulesConfig.model_validate({"dossier_overdue_rate": {"enabled": False}})
    c = conditions(state, T0, off)["dossier_overdue_rate"]
    assert decide(alert, c, T0)[1] is not None and c.status == "clear"


def test_simulated_portal_raises_for_the_overdue_units_only() -> None:
    end = datetime(2025, 8, 29, 10, 0, tzinfo=UTC)
    events = generate_dossiers(
        DossierSpec(
            days=25, units=8, overdue_units=2, dossiers_per_unit_per_day=2, seed=5, end=end
        ),
        load_reference(),
    )
    prev: dict[str, Any] = {}
    states: dict[str, dict[str, Any]] = {}
    overdue_units = set()
    for ev in events:
        if ev.expect_reason is not None:
            continue  # dead-lettered by the standardizer
        if ev.truth["overdue_unit"]:
            overdue_units.add(ev.truth["receiving_unit_code"])
        at = int(ev.at.timestamp() * 1000)
        std = {"op": ev.op.value, "after": ev.dossier.model_dump()}
        new = contributions("publicservice.dossiers", std)
        old = prev.get(ev.dossier.dossier_id, [])
        for (group, key), deltas in group_deltas(contribution_deltas(old, new, at)).items():
            states[key] = RULE_GROUPS[group].apply(states.get(key), deltas, RULES)
        prev[ev.dossier.dossier_id] = new
    now = int(end.timestamp() * 1000)
    raised = set()
    for unit, state in states.items():
        for c in GROUP.evaluate(unit, state, now, RULES):
            _, record = decide(None, c, now)
            if record is not None and record["rule"] == "dossier_overdue_rate":
                raised.add(unit)
    assert overdue_units and raised == overdue_units
