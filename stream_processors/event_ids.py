"""Which entity recently used an event id: the processor's window for event-id reuse.

An event id names one change of one entity. The per-entity state (``entity_state``)
catches an id reused *by the same entity*; this window catches an id reused by
*another* entity of the same dataset, which the std topic would carry as two events
with one id (the shared repository's history keeps one row per event id).

It is a bounded memory, not a complete index: the last ``capacity`` accepted event ids
of this worker (all its raw partitions together; oldest forgotten first), kept in
process memory only. It starts empty when the worker starts, and holds only what this
worker accepted, so an id reused across partitions owned by different workers, or
after more than ``capacity`` accepted changes, is not seen here: the shared-repository
sink dead-letters it instead (``event_id_reused`` on ``sink.shared_repo.dlq.v1``).

Every remembered pair is a real accepted record's, so a record processed again after a
rollback or a crash finds its own entity and is no conflict; nothing needs undoing.
About 0.3 KB per remembered id (~14 MB at the default 50,000), under 1 µs a check.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["DEFAULT_WINDOW", "RecentEventIds"]

DEFAULT_WINDOW = 50_000


class RecentEventIds:
    """event id → (scope, entity key) of the last ``capacity`` accepted changes; the
    scope is the dataset (pass one string object per dataset: it is kept, not copied)."""

    def __init__(self, capacity: int = DEFAULT_WINDOW) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._owners: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def claim(self, event_id: str, scope: str, key: bytes) -> bool:
        """Record an accepted change of entity ``key`` under ``event_id`` and return
        False; or return True, recording nothing, when another entity of the same
        ``scope`` (the dataset) was accepted with ``event_id`` within the window.
        Forgets the oldest id beyond ``capacity``."""
        owners = self._owners
        owner = owners.get(event_id)
        if owner is not None:
            if owner[0] == scope and owner[1] != key:
                return True
            owners.move_to_end(event_id)
        owners[event_id] = (scope, key)
        if len(owners) > self.capacity:
            owners.popitem(last=False)
        return False
