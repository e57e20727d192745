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
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Entity", "Verdict", "classify", "content_digest"]

Contribution = list[Any]  # [group, subject key, payload]


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
    contributions: list[Contribution] = field(default_factory=list)
    # The contributions before the batch that produced this state: one net delta per
    # entity per batch (previous → contributions) is what a redelivery re-sends.
    previous: list[Contribution] = field(default_factory=list)
    event_ms: int = field(default=0, compare=False)  # source time; not persisted

    def to_json(self) -> bytes:
        return json.dumps(
            [
                self.version,
                self.event_id,
                self.digest,
                self.offset,
                self.contributions,
                self.previous,
            ],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Entity:
        version, event_id, digest, offset, contributions, previous = json.loads(data)
        return cls(int(version), str(event_id), str(digest), int(offset), contributions, previous)


def _plain(value: Any) -> Any:
    # Datetimes and decimals in a stable text form; everything else as json knows it.
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def content_digest(raw: Mapping[str, Any]) -> str:
    """What the change says, without the envelope's transport fields (ids, send time)."""
    source = raw.get("source") or {}
    body = [raw.get("op"), source.get("version"), raw.get("before"), raw.get("after")]
    text = json.dumps(body, default=_plain, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


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
