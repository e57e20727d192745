"""The one small interface every sink implements.

A sink receives batches of decoded records from the runner that consumes Kafka.
The runner commits a batch's offsets only after ``write`` returned, so a sink
must be idempotent: the same batch may arrive again after a crash or a
rebalance. ``write`` raises :class:`bus.errors.SinkError`; its ``retriable``
flag tells the runner whether to retry the batch or stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["Sink", "SinkRecord"]


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One consumed record: where it came from and its decoded Avro value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]


@runtime_checkable
class Sink(Protocol):
    def setup(self) -> None:
        """Prepare the destination (connect, load scripts, create tables)."""

    def write(self, batch: Sequence[SinkRecord]) -> None:
        """Write a batch durably, or raise ``SinkError``; safe to call again with it."""

    def flush(self) -> None:
        """Make anything buffered durable."""

    def close(self) -> None:
        """Release what the sink holds; it takes no batches afterwards."""
