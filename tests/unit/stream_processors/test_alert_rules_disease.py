"""Group disease_commune: cases over 7 days above k × the commune's baseline."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from typing import Any

from producers.simulators import SimSpec, generate_dataset
from stream_processors.alerts.engine import RULE_GROUPS
from stream_processors.alerts.facts import contributions
from stream_processors.alerts.lifecycle import Condition, decide
from stream_processors.alerts.rules.config import RulesConfig
from stream_processors.alerts.rules.window import HOUR_MS, day_of, day_start_ms

RULES = RulesConfig()
GROUP = RULE_GROUPS["disease_commune"]
TODAY = day_of(date(2025, 8, 28))
NOW = day_start_ms(TODAY) + 12 * HOUR_MS


def case(day: int, code: str = "A90", sign: int = 1) -> dict[str, Any]:
    return {"sign": sign, "payload": {"day": day, "d": code}, "event_ms": day_start_ms(day)}


def cond(state: dict[str, Any], rules: RulesConfig = RULES) -> Condition:
    (c,) = GROUP.evaluate("75001", state, NOW, rules)
    return c


def baseline(per_week: int) -> list[dict[str, Any]]:
    # per_week cases in each of the 4 weeks before the current 7 days
    return [case(TODAY - 7 - 7 * w - 1 - i % 7) for w in range(4) for i in range(per_week)]


def test_tiny_baselines_do_not_fire_below_the_minimum_count() -> None:
    state = GROUP.apply(None, [case(TODAY - i) for i in range(4)], RULES)
    c = cond(state)
    assert c.evidence["cases"] == 4 and c.status == "holding"  # 4 > 2 × floor, < min 5


def test_raise_update_resolve_against_the_baseline() -> None:
    state = GROUP.apply(None, baseline(3), RULES)  # 3 a week
    state = GROUP.apply(state, [case(TODAY - i % 7) for i in range(6)], RULES)
    assert cond(state).status == "holding"  # 6 ≤ 2 × 3 but > 1.5 × 3
    state = GROUP.apply(state, [case(TODAY)], RULES)
    c = cond(state)
    assert (c.status, c.evidence["baseline_cases"], c.threshold) == ("firing", 12, 6.0)
    alert, record = decide(None, c, NOW)
    assert record is not None and record["state"] == "RAISED" and record["unit_code"] == "75001"
    state = GROUP.apply(state, [case(TODAY) for _ in range(6)], RULES)  # 13 > 4 × 3
    alert, record = decide(alert, cond(state), NOW + HOUR_MS)
    assert record is not None and record["severity"] == "CRITICAL"
    state = GROUP.apply(state, [case(TODAY, sign=-1) for _ in range(9)], RULES)  # 4 ≤ 4.5
    alert, record = decide(alert, cond(state), NOW + 2 * HOUR_MS)
    assert record is not None and record["state"] == "RESOLVED"


def test_diseases_filter_the_count() -> None:
    state = GROUP.apply(None, [case(TODAY, "A90") for _ in range(8)], RULES)
    measles = RulesConfig.model_validate({"disease_cases_above_baseline": {"diseases": ["B05"]}})
    assert cond(state).status == "firing" and cond(state, measles).status == "clear"


def test_state_is_bounded_and_order_free() -> None:
    rng = random.Random(3)
    deltas = [case(TODAY - rng.randrange(0, 120), rng.choice(["A90", "B05"])) for _ in range(400)]
    ref = GROUP.apply(None, deltas, RULES)
    assert len(ref["days"]) <= 7 + 28
    rng.shuffle(deltas)
    state = None
    for k in range(0, 400, 9):
        state = GROUP.apply(state, deltas[k : k + 9], RULES)
    assert state == ref


def test_simulated_surveillance_counts_match_the_records() -> None:
    end = datetime(2025, 8, 28, 12, tzinfo=UTC)
    records = generate_dataset(
        "health.disease_cases", SimSpec(days=35, per_day=30, seed=4, end=end)
    )
    prev: dict[str, Any] = {}
    states: dict[str, Any] = {}
    latest: dict[str, Any] = {}
    for rec in records:
        if rec.expect_reason is not None:
            continue
        image = rec.record.model_dump()
        at = int(rec.at.timestamp() * 1000)
        new = contributions("health.disease_cases", {"op": rec.op.value, "after": image})
        for _, key, payload in prev.get(image["case_id"], []):
            if (_, key, payload) not in new:
                states[key] = GROUP.apply(
                    states.get(key), [{"sign": -1, "payload": payload, "event_ms": at}], RULES
                )
        for _, key, payload in new:
            if (_, key, payload) not in prev.get(image["case_id"], []):
                states[key] = GROUP.apply(
                    states.get(key), [{"sign": 1, "payload": payload, "event_ms": at}], RULES
                )
        prev[image["case_id"]] = new
        latest[image["case_id"]] = image
    now = int(end.timestamp() * 1000)
    first = day_start_ms(day_of(end.date()) - 6)
    for commune, state in states.items():
        (c,) = GROUP.evaluate(commune, state, now, RULES)
        truth = sum(
            1
            for r in latest.values()
            if r["commune_code"] == commune and int(r["reported_at"].timestamp() * 1000) >= first
        )
        assert c.evidence["cases"] == truth
        assert c.status != "firing" or c.value >= RULES.disease_cases_above_baseline.min_cases
