"""The alert rule groups: fold deltas into bounded state, evaluate it into conditions.

A *group* owns one kind of subject and the state behind every rule about it:

- ``dossier_unit`` — receiving unit code (publicservice.dossiers):
  dossier_overdue_rate, dossier_due_soon;
- ``feedback_unit`` — handling unit code or ``UNASSIGNED``, and ``feedback_commune`` —
  commune code (feedback.reports): feedback_unanswered;
- ``aqi_station`` — station id (environment.station_readings): air_quality_aqi;
- ``disease_commune`` — commune code (health.disease_cases): disease_cases_above_baseline;
- ``dataset_unit`` (``STATS_GROUP``) — ``stats_key(dataset, unit)`` (every dataset):
  dataset_silent, dead_letter_share.

``alert_facts.contributions`` says what an entity's current image contributes to which
group and key; the loop sends ``{"sign": -1 | 1, "payload": ..., "event_ms": ...}``
deltas (for ``dataset_unit``: ``UnitStats.to_json()`` payloads, sign +1). The wiring:

    state = group.apply(state, deltas, rules)            # store it under (group, key)
    for condition in group.evaluate(key, state, now_ms, rules):
        open_alert, record = decide(open_alerts.get((condition.rule, condition.subject)),
                                    condition, now_ms)   # store/delete, send the record

``now_ms`` is ``state["wm"]`` (the newest event time the state saw) after deltas, and
wall-clock time on periodic ticks (only once caught up, as in the current app). Every
state is a JSON-able dict with a ``wm`` watermark; none grows with the number of entities.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from stream_processors.alerts.lifecycle import Condition
from stream_processors.alerts.rules.air import AirStationGroup
from stream_processors.alerts.rules.config import RulesConfig, load_rules, rules_from_settings
from stream_processors.alerts.rules.disease import DiseaseCommuneGroup
from stream_processors.alerts.rules.dossier import DossierUnitGroup
from stream_processors.alerts.rules.feedback import FeedbackGroup
from stream_processors.alerts.rules.stats import StatsGroup

__all__ = [
    "RULE_GROUPS",
    "STATS_GROUP",
    "RuleGroup",
    "RulesConfig",
    "load_rules",
    "rules_from_settings",
]

STATS_GROUP = "dataset_unit"


class RuleGroup(Protocol):
    name: str

    def apply(
        self, state: dict[str, Any] | None, deltas: list[dict[str, Any]], rules: RulesConfig
    ) -> dict[str, Any]:
        """A new state: ``state`` (None: empty) with ``deltas`` folded in. Pure."""
        ...

    def evaluate(
        self, key: str, state: dict[str, Any], now_ms: int, rules: RulesConfig
    ) -> list[Condition]:
        """One condition per rule of the group about ``key`` at ``now_ms``. Pure."""
        ...


def _groups() -> Mapping[str, RuleGroup]:
    groups: list[RuleGroup] = [
        DossierUnitGroup(),
        FeedbackGroup("unit"),
        FeedbackGroup("commune"),
        AirStationGroup(),
        DiseaseCommuneGroup(),
        StatsGroup(),
    ]
    return MappingProxyType({g.name: g for g in groups})


RULE_GROUPS: Mapping[str, RuleGroup] = _groups()
assert STATS_GROUP in RULE_GROUPS
