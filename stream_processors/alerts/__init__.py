"""Real-time alerts: what each standardized event contributes, the rules, their lifecycle.

- ``facts``: the pure extraction of an event's contributions to the rule groups
  (``contributions``);
- ``engine``: the rule groups (``RULE_GROUPS``) that fold contributions into state, and
  the rules configuration (``RulesConfig``, ``load_rules``, ``rules_from_settings``);
- ``rules``: one module per rule family (dossiers, feedback, air quality, disease
  clusters, dataset silence, dead-letter share), configured from
  ``rules/alert_rules.toml`` (``DATABUS_ALERTS__RULES_FILE`` replaces it);
- ``lifecycle``: when a condition raises, keeps or resolves an alert (``decide``).
"""

from __future__ import annotations

from stream_processors.alerts.engine import (
    RULE_GROUPS,
    RuleGroup,
    RulesConfig,
    load_rules,
    rules_from_settings,
)
from stream_processors.alerts.facts import Contribution, contributions
from stream_processors.alerts.lifecycle import Condition, Severity, Status, decide

__all__ = [
    "RULE_GROUPS",
    "Condition",
    "Contribution",
    "RuleGroup",
    "RulesConfig",
    "Severity",
    "Status",
    "contributions",
    "decide",
    "load_rules",
    "rules_from_settings",
]
