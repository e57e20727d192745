"""Per-batch aggregates the processor's hot loop hands to the stateful stages.

The batched standardize loop (``stream_processors.batch_loop``) does not send one
message per event to Faust: per batch it sends, per (dataset, owner unit), one
``UnitStats`` (counts behind quality scores, freshness and the dead-letter share)
and, per alert subject, the list of small facts its rules need. Faust agents fold
these into tables. Everything here is JSON-able and free of personal data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Self

__all__ = ["STATS_GROUP", "UnitStats", "stats_key"]

# The rule group that receives UnitStats as deltas (silence, dead-letter share).
STATS_GROUP = "dataset_unit"


def stats_key(dataset: str, unit: str) -> str:
    return f"{dataset}|{unit}"


@dataclass(slots=True)
class UnitStats:
    """What one batch (or a merge of batches) saw of one dataset from one unit."""

    dataset: str
    unit: str  # the envelope's source.unit when known and listed, else "unknown"
    received: int = 0  # every record taken from the raw topic
    valid: int = 0  # standardized and written to the std topic
    dead_lettered: int = 0  # written to the DLQ (decode, standardize or encode stage)
    duplicates: int = 0  # event id seen before with the same content: dropped
    conflicts: int = 0  # event id seen before with different content: dead-lettered
    stale: int = 0  # an older source version than the entity's newest: dropped
    # Completeness over the valid events' records: fields present / fields checked.
    required_present: int = 0
    required_checked: int = 0
    expected_present: int = 0
    expected_checked: int = 0
    last_event_ms: int = 0  # newest source.ts_ms among valid events (0: none)
    last_seen_ms: int = 0  # wall-clock time the newest record was taken (0: none)

    def merge(self, other: UnitStats) -> None:
        """Add ``other`` (same dataset and unit) into this one."""
        for f in fields(self):
            name = f.name
            if name in ("dataset", "unit"):
                continue
            if name.startswith("last_"):
                setattr(self, name, max(getattr(self, name), getattr(other, name)))
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
