"""Per-entity state of the processor: duplicates, conflicts and order, decided purely.

The processor keeps, per entity (the record key, one partition owns it), the newest
accepted change: source version, event id, a digest of its content, the raw offset it
came from, and what it contributes to alert-rule state — now, and before the batch that
made the change (an entity changed several times in one batch sends one net delta).

``classify`` decides what an incoming change is:

- ``new``: no entity yet, or a newer source version — standardize and emit it;
- ``duplicate``: the same content again (same event id, or same version with the same
  content, e.g. a resubmitted file) — dropped and counted;
- ``conflict``: the same event id, or the same version, with different content — the
  source contradicts itself: dead-lettered for a person to look at;
- ``stale``: an older version than the newest accepted — dropped and counted (the
  newer state already went out; an older one must never overwrite it downstream);
- ``redelivery``: the very record (same offset) that this state came from, read again
  after a crash between the state write and the offset commit — its outputs are
  already written; only its rule deltas are sent again (the rule stage drops deltas
  it has applied, by source offset), so nothing is lost or counted twice.

Dead-lettered changes never enter the state, so a fixed record replayed from the DLQ
is processed as new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import orjson

from stream_processors.alerts.facts import Contribution

__all__ = ["Entity", "EntityTable", "Verdict", "classify", "content_digest"]


class Verdict(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    STALE = "stale"
    REDELIVERY = "redelivery"


@dataclass(slots=True)
class Entity:
    version: int
    event_id: str
    digest: str
    offset: int
    # Tuples as ``alert_facts.contributions`` makes them, and as ``from_json`` restores
    # them, so that a restored state compares equal.
    contributions: list[Contribution] = field(default_factory=list)
    # The contributions before the batch that produced this state: one net delta per
    # entity per batch (previous → contributions) is what a redelivery re-sends.
    previous: list[Contribution] = field(default_factory=list)
    event_ms: int = field(default=0, compare=False)  # source time; not persisted
    # When the entity reached a final state (catalog ``state_retention``), processing
    # time in ms; 0: not final. The entity is forgotten ``state_retention.days`` after.
    final_ms: int = 0

    def to_json(self) -> bytes:
        """One changelog record (orjson: written for every changed entity)."""
        fields: list[object] = [
            self.version,
            self.event_id,
            self.digest,
            self.offset,
            self.contributions,
            self.previous,
        ]
        if self.final_ms:
            fields.append(self.final_ms)
        return orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Entity:
        version, event_id, digest, offset, contributions, previous, *rest = orjson.loads(data)
        return cls(
            int(version),
            str(event_id),
            str(digest),
            int(offset),
            [(str(g), str(k), p) for g, k, p in contributions],
            [(str(g), str(k), p) for g, k, p in previous],
            final_ms=int(rest[0]) if rest else 0,
        )

    def expired(self, now_ms: int, retention_ms: int) -> bool:
        """Final for longer than the retention: forgotten (treated as never seen)."""
        return bool(self.final_ms) and now_ms - self.final_ms > retention_ms


class EntityTable(Protocol):
    """One partition's entities as the batch core reads and changes them: a plain dict,
    or ``state_store.PartitionTable`` (changes in an overlay, the rest on disk)."""

    def get(self, key: bytes, /) -> Entity | None: ...

    def __setitem__(self, key: bytes, entity: Entity, /) -> None: ...

    def pop(self, key: bytes, default: None, /) -> Entity | None: ...


def _skip_varint(data: bytes, i: int) -> int:
    while data[i] & 0x80:
        i += 1
    return i + 1


def content_digest(value: bytes) -> str:
    """What a framed raw event says, without its transport fields: a digest of the Avro
    body after the envelope's ``event_id`` and ``ts_ms`` (every raw envelope starts
    ``event_id``, ``op``, ``ts_ms``; a test checks the schemas), so a re-send of the
    same change under a new event id or send time digests the same.

    Bytes, not decoded values: cheap on the hot path. The same content written with
    another schema revision digests differently; at the same source version that is
    reported as a conflict for a person to look at, which is what it would be if the
    new revision's fields carry values.
    """
    i = 5  # Confluent framing: magic byte + schema id
    length, shift = 0, 0
    while True:  # event_id: a string, zigzag varint length then bytes
        b = value[i]
        length |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            break
    i += (length >> 1) ^ -(length & 1)
    op_start = i
    i = _skip_varint(value, i)  # op
    op = value[op_start:i]
    i = _skip_varint(value, i)  # ts_ms
    return hashlib.blake2b(op + value[i:], digest_size=12).hexdigest()


def classify(
    previous: Entity | None, *, event_id: str, version: int, digest: str, offset: int
) -> Verdict:
    if previous is None:
        return Verdict.NEW
    if offset == previous.offset and event_id == previous.event_id:
        return Verdict.REDELIVERY
    if event_id == previous.event_id or version == previous.version:
        return Verdict.DUPLICATE if digest == previous.digest else Verdict.CONFLICT
    if version < previous.version:
        return Verdict.STALE
    return Verdict.NEW
