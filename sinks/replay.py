"""Pure: does a destination lack what the group has committed, and from where to replay.

The runner knows, per owned partition, the next offset it will commit (the group's
committed offset, or past the last batch it wrote); a sink that tracks offsets says
what the destination holds. Where the destination is behind, the partition is
rewound to the destination's offset — to the start of the partition where it holds
nothing — and the records in between are written again, which the sink's
idempotent writes make safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sinks.base import Applied

__all__ = ["FROM_START", "Rewind", "RewindReason", "rewind_plan"]

# confluent_kafka.OFFSET_BEGINNING
FROM_START = -2

RewindReason = Literal["store_empty", "store_behind", "store_replaced", "requested"]


@dataclass(frozen=True, slots=True)
class Rewind:
    reason: RewindReason
    # where to seek, per partition (FROM_START: the partition's first record)
    seek: Mapping[tuple[str, int], int]
    # records to replay where known (partitions rewound to the start not counted)
    records: int


def rewind_plan(
    applied: Applied,
    expected: Mapping[tuple[str, int], int],
    known_store: str | None = None,
) -> Rewind | None:
    """None when the destination holds every partition up to ``expected`` (the next
    offset the runner will commit; negative: nothing committed yet)."""
    seek: dict[tuple[str, int], int] = {}
    records = 0
    for tp, position in expected.items():
        if position <= 0:
            continue  # nothing of this partition consumed yet
        have = applied.offsets.get(tp)
        if have is None or have <= 0:
            seek[tp] = FROM_START
        elif have < position:
            seek[tp] = have
            records += position - have
    if not seek:
        return None
    reason: RewindReason
    if not applied.offsets:
        reason = "store_empty"
    elif known_store is not None and applied.store_id != known_store:
        reason = "store_replaced"
    else:
        reason = "store_behind"
    return Rewind(reason, seek, records)
