"""Group dataset_unit: a dataset silent past its obligation, and the dead-letter share."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from stream_processors.alerts.engine import RULE_GROUPS, STATS_GROUP
from stream_processors.alerts.lifecycle import Condition, decide
from stream_processors.alerts.rules.config import RulesConfig
from stream_processors.alerts.rules.window import HOUR_MS
from stream_processors.batch_stats import UnitStats, stats_key

RULES = RulesConfig()
GROUP = RULE_GROUPS[STATS_GROUP]
MIN = 60_000
T0 = int(datetime(2025, 8, 4, 3, tzinfo=UTC).timestamp() * 1000)  # 10:00 local
KEY = stats_key("publicservice.dossiers", "DNA.VPUB")  # realtime, within 15 min


def batch(at: int, received: int, dead: int = 0, dataset: str = "publicservice.dossiers") -> Any:
    stats = UnitStats(
        dataset, "DNA.VPUB", received=received, valid=received - dead, dead_lettered=dead
    )
    stats.last_seen_ms = at
    stats.last_event_ms = at - 1000
    return {"sign": 1, "payload": stats.to_json(), "event_ms": at}


def conds(state: dict[str, Any], now: int, key: str = KEY) -> dict[str, Condition]:
    return {c.rule: c for c in GROUP.evaluate(key, state, now, RULES)}


def test_silence_past_the_obligation_raises_and_a_delivery_resolves() -> None:
    state = GROUP.apply(None, [batch(T0, 10)], RULES)
    assert conds(state, T0 + 15 * MIN)["dataset_silent"].status == "clear"
    c = conds(state, T0 + 16 * MIN)["dataset_silent"]
    assert (c.status, c.severity, c.value, c.threshold) == ("firing", "WARNING", 16.0, 15.0)
    alert, record = decide(None, c, T0 + 16 * MIN)
    assert record is not None and record["state"] == "RAISED"
    # ticks every 30 s for an hour: minutes grow, no update (update_step 0)
    for i in range(120):
        now = T0 + 16 * MIN + i * 30_000
        alert, record = decide(alert, conds(state, now)["dataset_silent"], now)
        assert record is None
    later = T0 + 25 * HOUR_MS
    alert, record = decide(alert, conds(state, later)["dataset_silent"], later)
    assert record is not None and (record["state"], record["severity"]) == ("UPDATED", "CRITICAL")
    state = GROUP.apply(state, [batch(later, 1)], RULES)
    alert, record = decide(alert, conds(state, later)["dataset_silent"], later)
    assert record is not None and record["state"] == "RESOLVED" and alert is None


def test_daily_datasets_use_their_deadline() -> None:
    key = stats_key("education.schools", "DNA.VPUB")  # daily by 17:00
    state = GROUP.apply(None, [batch(T0, 10, dataset="education.schools")], RULES)
    assert conds(state, T0 + 20 * HOUR_MS, key)["dataset_silent"].status == "clear"
    assert conds(state, T0 + 48 * HOUR_MS, key)["dataset_silent"].status == "firing"


def test_unknown_units_and_datasets_are_not_judged_silent() -> None:
    state = GROUP.apply(None, [batch(T0, 10)], RULES)
    later = T0 + 5 * HOUR_MS
    assert "dataset_silent" not in conds(state, later, "publicservice.dossiers|unknown")
    assert "dataset_silent" not in conds(state, later, "no.such|DNA.VPUB")


def test_dead_letter_share_needs_volume_and_has_hysteresis() -> None:
    state = GROUP.apply(None, [batch(T0, 50, 25)], RULES)
    c = conds(state, T0)["dead_letter_share"]
    assert (c.status, c.value) == ("holding", 0.5)  # 50% but only 50 events
    state = GROUP.apply(state, [batch(T0 + MIN, 60, 0)], RULES)  # 25 of 110: 22.7%
    c = conds(state, T0 + MIN)["dead_letter_share"]
    assert (c.status, c.severity) == ("firing", "CRITICAL")
    assert c.evidence == {"received": 110, "dead_lettered": 25, "min_received": 100}
    alert, record = decide(None, c, T0 + MIN)
    assert record is not None and record["dataset"] == "publicservice.dossiers"
    assert record["unit_code"] == "DNA.VPUB" and record["subject"] == KEY
    state = GROUP.apply(state, [batch(T0 + 2 * MIN, 500, 0)], RULES)  # 25/610 = 4.1%: band
    c = conds(state, T0 + 2 * MIN)["dead_letter_share"]
    assert c.status == "holding"
    # a day later the window is empty: resolved
    c = conds(state, T0 + 26 * HOUR_MS)["dead_letter_share"]
    assert c.status == "clear"
    assert decide(alert, c, T0 + 26 * HOUR_MS)[1] is not None


def test_stats_state_is_bounded_and_order_free() -> None:
    rng = random.Random(8)
    deltas = [
        batch(T0 + rng.randrange(0, 72 * 60) * MIN, 20, rng.randrange(0, 3)) for _ in range(300)
    ]
    ref = GROUP.apply(None, deltas, RULES)
    assert len(ref["hours"]) <= RULES.dead_letter_share.window_hours
    rng.shuffle(deltas)
    state = None
    for k in range(0, 300, 11):
        state = GROUP.apply(state, deltas[k : k + 11], RULES)
    assert state == ref
