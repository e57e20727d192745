"""The one small interface every sink implements.

A sink receives batches of decoded records from the runner that consumes Kafka.
The runner commits a batch's offsets only after ``write`` returned (and after any
rejected record is acknowledged on the sink's dead-letter topic), so a sink must be
idempotent: the same batch may arrive again after a crash or a rebalance.

Two kinds of failure, kept apart:

- the destination is unavailable (timeout, 5xx, connection dropped, a server
  restarting): ``write`` raises :class:`bus.errors.SinkError` with
  ``retriable=True``. The runner keeps the batch, pauses the partitions, backs off
  and tries the whole batch again; the backlog waits in Kafka.
- a record the destination will never take (a 4xx that will not change, a row the
  database rejects): ``write`` writes the rest of the batch and returns a
  :class:`Rejected` per refused record; the runner sends those to the sink's
  dead-letter topic with the same headers as the processor's DLQ.

``write`` raising ``SinkError(retriable=False)`` means the sink itself is broken
(misconfigured, closed): the runner stops rather than dead-letter a whole stream.
``write`` raising anything else (a record the sink's code cannot handle) makes the
runner halve the batch until it finds the records that raise, and dead-letter them
as ``sink_crashed``; when every record raises, the sink is broken and the runner stops.

A sink whose destination can lose data on its own (a cache-like store restarted
empty, restored from an old snapshot, replaced by a new replica) also implements
:class:`TracksOffsets`: it stores, with the data, the offsets it has applied; the
runner compares them with the group's committed offsets on every assignment and
every few seconds, and replays from Kafka what the destination lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Applied", "Rejected", "Sink", "SinkRecord", "TracksOffsets"]


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One consumed record: where it came from, its decoded Avro value, and the
    original bytes and headers (kept for the sink's dead-letter topic)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]
    raw: bytes = b""
    headers: tuple[tuple[str, bytes], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the destination refused for good.

    ``reason`` is a short code (``http_4xx``, ``db_rejected``, ``malformed``);
    ``message`` says why (an HTTP response body, a database error) and must not
    carry a citizen id or a name the sink put there itself.
    """

    record: SinkRecord
    reason: str
    message: str
    exception_class: str = ""


@runtime_checkable
class Sink(Protocol):
    def setup(self) -> None:
        """Prepare the destination (connect, load scripts, create tables)."""

    def write(self, batch: Sequence[SinkRecord]) -> Sequence[Rejected]:
        """Write a batch durably; return the records refused for good (empty when
        all were taken); raise a retriable ``SinkError`` when the destination is
        unavailable. Safe to call again with the same batch."""

    def flush(self) -> None:
        """Make anything buffered durable."""

    def close(self) -> None:
        """Release what the sink holds; it takes no batches afterwards."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What a destination says it holds: its identity (None when it holds nothing
    of ours) and, per (topic, partition), the next offset it has yet to apply."""

    store_id: str | None
    offsets: Mapping[tuple[str, int], int]


@runtime_checkable
class TracksOffsets(Protocol):
    def applied(self) -> Applied:
        """Read the destination's identity and applied offsets; raise a retriable
        ``SinkError`` when it is unavailable."""

    def expect_from(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Before a write: where each partition's batch continues from (when known).
        The destination records the batch's offsets only where it holds everything
        before; where it does not (wiped, restored, replaced meanwhile), ``behind``
        says so and the runner's check rewinds."""

    def behind(self) -> bool:
        """True when the last write found the destination lacking records before it."""

    def mark_applied(self, ends: Mapping[tuple[str, int], int]) -> None:
        """Record offsets the runner consumed without handing them to ``write``
        (records that did not decode and went to the dead-letter topic)."""
