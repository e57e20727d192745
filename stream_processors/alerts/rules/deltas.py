"""From an entity's previous and current contributions to the deltas the rule groups fold.

The batched loop keeps, per entity, the contributions of the image it last counted
(``alert_facts.contributions``). When a newer version arrives, ``contribution_deltas``
gives what to send: the old payloads taken out (sign -1), the new ones put in (sign +1),
nothing for a contribution that did not change — so a status change that keeps the
dossier in the same bucket costs no message. ``group_deltas`` batches them per
(group, key), in order, ready for ``RuleGroup.apply``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stream_processors.alerts.facts import Contribution

__all__ = ["Delta", "contribution_deltas", "group_deltas"]

Delta = tuple[str, str, dict[str, Any]]
"""(group, key, {"sign": -1 | 1, "payload": ..., "event_ms": ...})"""


def contribution_deltas(
    old: Sequence[Contribution], new: Sequence[Contribution], event_ms: int
) -> list[Delta]:
    """The deltas turning ``old`` into ``new``; a payload in both is left alone."""
    out: list[Delta] = []
    for group, key, payload in old:
        if (group, key, payload) not in new:
            out.append((group, key, {"sign": -1, "payload": payload, "event_ms": event_ms}))
    for group, key, payload in new:
        if (group, key, payload) not in old:
            out.append((group, key, {"sign": 1, "payload": payload, "event_ms": event_ms}))
    return out


def group_deltas(deltas: Iterable[Delta]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Deltas per (group, key), each list in arrival order."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for group, key, delta in deltas:
        grouped.setdefault((group, key), []).append(delta)
    return grouped
